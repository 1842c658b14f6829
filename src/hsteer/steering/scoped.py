"""`steer`: add a constant at the steering site for a block of code, then remove it.

    config = SteeringConfig(delta=bank["square"].delta())
    with steer(pipe, config):
        images = pipe("a photo of a doctor").images

On a pipeline, the config becomes one named layer of the pipeline's steering (`steering.attach`): the same
per-call arming `attach` and `generate` use, so the three give the same images for the same deltas. On
a bare denoiser (a training step calling the U-Net itself) the delta is armed on the hook directly and
may be a live parameter. Leaving the block removes the layer; the last one removes the hook, and the
model is bit-identical to the unmodified one again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from hsteer.errors import HsteerError, ShapeMismatchError
from hsteer.steering.attach import Layer, WindowDeltas, add_layer, remove_layer, steering_of
from hsteer.steering.hook import DirectDelta, check_window, in_window, is_compiled, release_hook, steering_hook
from hsteer.model.sites import MID_BLOCK, SiteSet, SteeringSite

__all__ = ["SteeringConfig", "SteeringHandle", "active_hooks", "apply_steering", "check_window", "in_window",
           "remove_steering", "steer"]


@dataclass
class SteeringConfig:
    """What to add at the steering site.

    delta: one image's shape at the site, added to every image (`(C, h, w)` at the U-Net mid-block,
        `(N, D)` image tokens at a transformer block, `(L, D)` at the text site, `(size,)` at a set of
        sites: the sites' tensors flattened and concatenated, `Concept.delta()`), or one more leading
        dimension: one row per image of the batch (in the order diffusers lays out
        `prompt x num_images_per_prompt`).
    scale: multiplies delta.
    steer_unconditional: with classifier-free guidance, also steer the unconditional half
        (both reference codes steer only the conditional half, the default here).
    guided: whether denoiser batches are guidance batches `[uncond, cond]`; None reads it from the
        pipeline call (guidance_scale > 1); a bare U-Net is not guided unless told.
    start, end: the denoising-step window, as fractions of the steps the pipeline runs: step i of N
        (0-based) is steered when `start <= i / N < end`. The default (0, 1) steers every step. For
        img2img, N is the number of steps actually run. A window needs a pipeline (its step callback
        drives the hook), not a bare U-Net.
    """

    delta: torch.Tensor
    scale: float = 1.0
    steer_unconditional: bool = False
    guided: bool | None = None
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.delta, torch.Tensor) or self.delta.dim() not in (1, 2, 3, 4):
            shape = tuple(self.delta.shape) if isinstance(self.delta, torch.Tensor) else type(self.delta).__name__
            raise ShapeMismatchError(f"steering delta must be a (C, h, w) or (B, C, h, w) tensor (at a token site "
                                     f"(N, D) or (B, N, D); at a set of sites one flat vector, or one per image), "
                                     f"got {shape}")
        if not torch.isfinite(self.delta).all():
            raise HsteerError("steering delta holds NaN or infinite values; retrain or reload the concept")
        if not torch.isfinite(torch.tensor(float(self.scale))):
            raise HsteerError(f"steering scale must be a finite number, got {self.scale}")
        self.start, self.end = check_window(self.start, self.end)

    @property
    def windowed(self) -> bool:
        """Whether steering is limited to part of the denoising run (a window other than (0, 1))."""
        return (self.start, self.end) != (0.0, 1.0)

    def check_site(self, site: SteeringSite | SiteSet) -> None:
        """The delta has the site's dimensions (one image's), or one more (one row per image)."""
        if self.delta.dim() not in (site.ndim, site.ndim + 1):
            raise ShapeMismatchError(f"steering delta of shape {tuple(self.delta.shape)} does not fit the site "
                                     f"{site.label}, whose deltas have {site.ndim} dimensions per image")

    def provider(self, ndim: int = 3):
        """The layer provider of this config: its delta for every image of a call (`ndim`: the site's)."""
        def provide(seeds: list[int], prompts: list[str | None]):
            delta = self.delta.detach().float()
            if delta.dim() == ndim:
                delta = delta.expand(len(seeds), *delta.shape)
            elif delta.shape[0] != len(seeds):
                raise HsteerError(f"the steering config holds {delta.shape[0]} per-image deltas but the call makes "
                                  f"{len(seeds)} images; build the config for the batch you generate")
            return [WindowDeltas(self.start, self.end, delta)], [[] for _ in seeds]

        return provide


class SteeringHandle:
    """A named steering added by `apply_steering`; `remove()` takes it off again."""

    def __init__(self, target, name: str, site: SteeringSite | SiteSet, config: SteeringConfig) -> None:
        self.target, self.name, self.site, self.config = target, name, site, config

    def remove(self) -> None:
        """Stop this steering: its pipeline layer, or its direct delta on the hook (the hook itself goes
        with its last user)."""
        if self.site.is_pipeline(self.target):
            remove_layer(self.target, self.name)
            return
        hook = steering_hook(self.target, self.site, create=False)
        if hook is not None and hook.direct.pop(self.name, None) is not None:
            release_hook(self.target, self.site)


def apply_steering(pipe_or_unet, config: SteeringConfig, name: str = "hsteer",
                   site: SteeringSite | SiteSet = MID_BLOCK) -> SteeringHandle:
    """Add `config` at the site of a pipeline (or a bare U-Net) under `name`, replacing one of that name.

    On a pipeline, guidance is read from each call so that only the conditional half is steered; on a
    bare U-Net every row is steered unless `config.guided` says the batches are guidance batches.
    """
    denoiser = site.denoiser(pipe_or_unet)
    config.check_site(site)
    if is_compiled(denoiser, site) and steering_hook(denoiser, site, create=False) is None:
        steering_hook(denoiser, site)  # raises: compiled code would ignore a hook added now
    if site.is_pipeline(pipe_or_unet):
        add_layer(pipe_or_unet, name, Layer(config.provider(site.ndim), config.scale, config.steer_unconditional,
                                            config.guided, label=name), site)
        return SteeringHandle(pipe_or_unet, name, site, config)
    if config.windowed:
        raise HsteerError("a steering window needs the pipeline (its step callback drives the window), not a "
                          "bare U-Net")
    delta = config.delta if config.scale == 1.0 else config.delta * config.scale
    steering_hook(denoiser, site).direct[name] = DirectDelta(delta, bool(config.guided), config.steer_unconditional)
    return SteeringHandle(pipe_or_unet, name, site, config)


def remove_steering(pipe_or_unet, name: str | None = None, site: SteeringSite | SiteSet = MID_BLOCK) -> None:
    """Remove the steering called `name`, or all of it when `name` is None."""
    for key, handle in active_hooks(pipe_or_unet, site).items():
        if name is None or key == name:
            handle.remove()


def active_hooks(pipe_or_unet, site: SteeringSite | SiteSet = MID_BLOCK) -> dict[str, SteeringHandle]:
    """What steers this pipeline (its layers, `attach` included as "attached") or bare U-Net, by name."""
    if site.is_pipeline(pipe_or_unet):
        steering = steering_of(pipe_or_unet)
        layers = steering.layers if steering is not None else {}
        return {name: SteeringHandle(pipe_or_unet, name, site, None) for name in layers}
    hook = steering_hook(site.denoiser(pipe_or_unet), site, create=False)
    return {name: SteeringHandle(pipe_or_unet, name, site, None) for name in (hook.direct if hook else {})}


@contextlib.contextmanager
def steer(pipe_or_unet, config: SteeringConfig | None, name: str = "hsteer",
          site: SteeringSite | SiteSet = MID_BLOCK) -> Iterator[SteeringHandle | None]:
    """Steer inside a `with` block; the steering is removed on exit, even on error. `None` steers nothing."""
    if config is None:
        yield None
        return
    handle = apply_steering(pipe_or_unet, config, name, site)
    try:
        yield handle
    finally:
        handle.remove()
