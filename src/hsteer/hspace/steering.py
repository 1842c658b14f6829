"""h-space steering: one forward hook on `unet.mid_block` that adds a constant to its output.

Attach, generate, detach: no forked pipeline or U-Net. Hooks are registered by name on the U-Net
and removing them restores the unmodified model bit for bit.

    config = SteeringConfig(delta=bank["square"].delta())
    with steer(pipe, config):
        images = pipe("a photo of a doctor").images
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from hsteer.errors import HsteerError, ShapeMismatchError

_REGISTRY_ATTR = "_hsteer_steering_hooks"


@dataclass
class SteeringConfig:
    """What to add to the mid-block output.

    delta: `(C, h, w)` added to every image, or `(B, C, h, w)`: one row per image of the batch
        (in the order diffusers lays out `prompt x num_images_per_prompt`).
    scale: multiplies delta.
    steer_unconditional: with classifier-free guidance, also steer the unconditional half
        (both reference codes steer only the conditional half, the default here).
    guided: whether U-Net batches are guidance batches `[uncond, cond]`; None asks the pipeline
        the hook is attached to (a bare U-Net: not guided, unless per-image deltas show the layout).
    start, end: the denoising-step window, as fractions of the steps the pipeline runs: step i of N
        (0-based) is steered when `start <= i / N < end`. The default (0, 1) steers every step. With
        classifier-free guidance a step is one U-Net call. For img2img, N is the number of steps
        actually run (`strength * num_inference_steps`), so the window is over those steps. A window
        other than (0, 1) needs a pipeline (it reads `pipe.num_timesteps`), not a bare U-Net.
    """

    delta: torch.Tensor
    scale: float = 1.0
    steer_unconditional: bool = False
    guided: bool | None = None
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if self.delta.dim() not in (3, 4):
            raise ShapeMismatchError(f"steering delta must be (C, h, w) or (B, C, h, w), got {tuple(self.delta.shape)}")
        if not torch.isfinite(self.delta).all():
            raise HsteerError("steering delta holds NaN or infinite values; retrain or reload the concept")
        check_window(self.start, self.end)

    @property
    def windowed(self) -> bool:
        return (self.start, self.end) != (0.0, 1.0)


def check_window(start: float, end: float) -> tuple[float, float]:
    """A valid step window `0 <= start < end <= 1`, or a clear error."""
    start, end = float(start), float(end)
    if not 0.0 <= start < end <= 1.0:
        raise HsteerError(f"bad steering window ({start}, {end}): need 0 <= start < end <= 1, e.g. 0.0,0.6")
    return start, end


def in_window(step: int, total: int, start: float, end: float) -> bool:
    """Whether 0-based step `step` of `total` lies in [start, end) as fractions of the schedule."""
    return start <= step / max(total, 1) < end


class SteeringHook:
    """The forward hook itself; `remove()` detaches it."""

    def __init__(self, unet, config: SteeringConfig, name: str, pipe=None) -> None:
        self.config = config
        self.name = name
        self._unet = unet
        self._pipe = weakref.ref(pipe) if pipe is not None else None
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple | None = None
        self._handle = unet.mid_block.register_forward_hook(self._hook)
        self.calls = 0
        self._timesteps = None  # the schedule of the generation in progress (a window counts its steps)
        self._step = 0
        if config.windowed and self._pipe is None:
            raise HsteerError("a steering window needs the pipeline (it reads the schedule), not a bare U-Net")

    def _step_in_window(self) -> bool:
        """Count this U-Net call as the next step of the current generation (a new schedule starts at 0)."""
        pipe = self._pipe()
        timesteps = pipe.scheduler.timesteps
        if timesteps is not self._timesteps:  # set_timesteps makes a new tensor at every pipeline call
            self._timesteps, self._step = timesteps, 0
        step, self._step = self._step, self._step + 1
        total = getattr(pipe, "_num_timesteps", None) or len(timesteps)
        return in_window(step, total, self.config.start, self.config.end)

    def _uses_cfg(self, rows: int) -> bool:
        if self.config.guided is not None:
            return self.config.guided
        pipe = self._pipe() if self._pipe is not None else None
        if pipe is None:
            return False
        return bool(getattr(pipe, "do_classifier_free_guidance", False)) and rows % 2 == 0

    def _rows_delta(self, h: torch.Tensor) -> torch.Tensor:
        """The delta laid out row by row for this U-Net batch: zeros on rows left unsteered."""
        delta = self.config.delta.to(device=h.device, dtype=h.dtype)
        if self.config.scale != 1.0:
            delta = delta * self.config.scale
        if delta.shape[-3:] != h.shape[-3:]:
            raise ShapeMismatchError(
                f"concept shape {tuple(delta.shape[-3:])} does not match this model's h-space "
                f"{tuple(h.shape[-3:])} at this resolution; generate at the resolution the concept was "
                "learned at, or learn it for this model and size")
        rows = h.shape[0]
        if delta.dim() == 3:
            if not (self._uses_cfg(rows) and not self.config.steer_unconditional):
                return delta  # broadcast over every row
            half = rows // 2
            return torch.cat([torch.zeros_like(delta).expand(half, *delta.shape),
                              delta.expand(rows - half, *delta.shape)])
        images = delta.shape[0]
        if rows == images:  # no guidance: every row is an image
            return delta
        if rows % images:
            raise HsteerError(f"the steering config holds {images} per-image deltas but the U-Net batch has "
                              f"{rows} rows; build the config for the batch you generate")
        # diffusers lays guidance batches out as [uncond, cond, (extra...)]
        first = 0 if self.config.steer_unconditional else 1
        chunks = [torch.zeros_like(delta) if i < first else delta for i in range(rows // images)]
        return torch.cat(chunks)

    def _hook(self, module, inputs, h: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.config.windowed and not self._step_in_window():
            return h
        delta = self.config.delta
        if delta.requires_grad:  # training: the delta is a live parameter, never cached
            return h + self._rows_delta(h)
        key = (h.shape[0], h.shape[-3:], h.dtype, h.device, delta._version, self.config.scale)
        if self._cache_key != key:
            self._cache = self._rows_delta(h)
            self._cache_key = key
        return h + self._cache

    def remove(self) -> None:
        self._handle.remove()
        registry = getattr(self._unet, _REGISTRY_ATTR, {})
        if registry.get(self.name) is self:
            del registry[self.name]


def _unet_of(pipe_or_unet):
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    if getattr(unet, "mid_block", None) is None:
        raise HsteerError(f"{type(pipe_or_unet).__name__} has no U-Net mid-block to steer")
    return unet


def _refuse_compiled(unet) -> None:
    """torch.compile'd code does not see hooks attached after compilation: steering would be silently
    ignored (measured: a compiled U-Net made the plain images with a concept attached)."""
    compiled = hasattr(unet, "_orig_mod") or getattr(unet, "_compiled_call_impl", None) is not None
    if compiled or getattr(unet.mid_block, "_compiled_call_impl", None) is not None:
        raise HsteerError("the U-Net is torch.compile'd, and compiled code ignores hooks attached after "
                          "compilation; steer the uncompiled U-Net (e.g. pipe.unet = pipe.unet._orig_mod), or "
                          "hsteer.attach the pipeline before compiling (its persistent hook survives torch.compile)")


def apply_steering(pipe_or_unet, config: SteeringConfig, name: str = "hsteer") -> SteeringHook:
    """Attach `config` to a pipeline's (or a bare U-Net's) mid-block under `name`, replacing any hook of that name.

    On a pipeline, guidance is read from the pipeline at each call so that only the conditional half
    is steered; on a bare U-Net every row is steered unless per-image deltas reveal the layout.
    """
    unet = _unet_of(pipe_or_unet)
    _refuse_compiled(unet)
    registry = unet.__dict__.setdefault(_REGISTRY_ATTR, {})
    if name in registry:
        registry[name].remove()
    pipe = pipe_or_unet if pipe_or_unet is not unet else None
    hook = SteeringHook(unet, config, name, pipe)
    registry[name] = hook
    return hook


def remove_steering(pipe_or_unet, name: str | None = None) -> None:
    """Remove the hook called `name`, or every hsteer hook when `name` is None."""
    unet = _unet_of(pipe_or_unet)
    registry = getattr(unet, _REGISTRY_ATTR, {})
    for key in list(registry) if name is None else [name]:
        if key in registry:
            registry[key].remove()


def active_hooks(pipe_or_unet) -> dict[str, SteeringHook]:
    return dict(getattr(_unet_of(pipe_or_unet), _REGISTRY_ATTR, {}))


@contextlib.contextmanager
def steer(pipe_or_unet, config: SteeringConfig | None, name: str = "hsteer") -> Iterator[SteeringHook | None]:
    """Steer inside a `with` block; the hook is removed on exit, even on error. `None` steers nothing."""
    if config is None:
        yield None
        return
    hook = apply_steering(pipe_or_unet, config, name)
    try:
        yield hook
    finally:
        hook.remove()
