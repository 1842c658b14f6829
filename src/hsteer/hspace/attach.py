"""Attach once, then ordinary pipeline calls: one persistent hook, armed per call, that survives torch.compile.

`with steer(...)` adds a hook for a block of code and removes it. Attaching instead keeps one hook on
the mid-block for the life of the attachment and changes only the *contents* of a tensor it adds:

- the hook's code is fixed (`h + buffer`, or `h` while disarmed), so a U-Net compiled after attaching
  traces it once; the buffer is updated in place (`copy_`), so swapping concepts or scales, or
  switching a step window on and off, recompiles nothing;
- the pipeline's class is swapped for a subclass of the same name whose `__call__` reads the call's
  prompts, `num_images_per_prompt` and generators, asks a *provider* for one delta per image (the
  policies live in `hsteer.generation`), lays the deltas out for the U-Net batch, arms the hook for the
  call and disarms it afterwards (even on error);
- detaching restores the original class and removes the hook (bit-identical output); on a compiled
  U-Net the hook stays registered but disarmed, since compiled code would not notice its removal.

This module knows nothing of banks or policies: `hsteer.attach` builds the provider.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from hsteer.errors import HsteerError, ShapeMismatchError
from hsteer.hspace.steering import check_window, in_window

_HOOK_ATTR = "_hsteer_persistent_hook"
_STATE_ATTR = "_hsteer_attachment"

#: provider(seeds) -> (deltas `(B, C, h, w)` float tensor or None for an unsteered call, per-image info)
Provider = Callable[[list[int]], tuple[torch.Tensor | None, list[Any]]]


def base_unet(unet):
    """The module under a `torch.compile` wrapper (`OptimizedModule._orig_mod`), or the U-Net itself."""
    return getattr(unet, "_orig_mod", unet)


def is_compiled(unet) -> bool:
    base = base_unet(unet)
    return (base is not unet or getattr(base, "_compiled_call_impl", None) is not None
            or getattr(base.mid_block, "_compiled_call_impl", None) is not None)


class PersistentHook:
    """The mid-block hook of attached pipelines: adds `buffer` (laid out for the U-Net batch) or nothing.

    Its code path depends only on whether it is armed and on shapes, never on values, so compiled
    code stays valid across swaps. One per U-Net, shared by every pipeline attached to that U-Net.
    """

    def __init__(self, unet) -> None:
        self.buffer: torch.Tensor | None = None  # what the hook adds this call; None: disarmed
        self._source: torch.Tensor | None = None  # the full delta rows, copied into buffer inside the window
        self._stores: dict[tuple, torch.Tensor] = {}  # one persistent buffer per (shape, dtype, device)
        self._handle = unet.mid_block.register_forward_hook(self._hook)

    def _hook(self, module, inputs, h: torch.Tensor) -> torch.Tensor:
        buf = self.buffer
        if buf is None:
            return h
        if buf.shape[-3:] != h.shape[-3:]:
            raise ShapeMismatchError(
                f"concept shape {tuple(buf.shape[-3:])} does not match this model's h-space {tuple(h.shape[-3:])} "
                "at this resolution; generate at the resolution the concept was learned at")
        rows = h.shape[0]
        if buf.shape[0] != rows:
            if buf.shape[0] != 2 * rows:
                raise HsteerError(f"the attached steering was laid out for {buf.shape[0]} U-Net rows but the U-Net "
                                  f"batch has {rows}; pass prompts, num_images_per_prompt and generators as usual")
            buf = buf[rows:]  # laid out for guidance, run without: the conditional rows
        if buf.device != h.device or buf.dtype != h.dtype:
            buf = buf.to(device=h.device, dtype=h.dtype)
        return h + buf

    def arm(self, rows: torch.Tensor, on: bool) -> None:
        """Copy `rows` into this shape's persistent buffer (in place) and arm the hook; `on=False`: zeros."""
        key = (tuple(rows.shape), rows.dtype, rows.device)
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = torch.zeros_like(rows)
        self._source = rows
        self.buffer = store
        self.gate(on)

    def gate(self, on: bool) -> None:
        """Inside the step window the buffer holds the deltas, outside it zeros (both in place)."""
        if self.buffer is None:
            return
        if on:
            self.buffer.copy_(self._source)
        else:
            self.buffer.zero_()

    def disarm(self) -> None:
        self.buffer = None
        self._source = None

    def remove(self) -> None:
        self.disarm()
        self._handle.remove()


def persistent_hook(unet, create: bool = True) -> PersistentHook | None:
    """The U-Net's persistent hook, created on first use; refused on a U-Net compiled without one."""
    base = base_unet(unet)
    hook = base.__dict__.get(_HOOK_ATTR)
    if hook is None and create:
        if is_compiled(unet):
            raise HsteerError(
                "the U-Net is torch.compile'd and was compiled before hsteer.attach: compiled code ignores hooks "
                "added after compilation. Attach first, then compile (pipe.unet = torch.compile(pipe.unet)); "
                "later attach calls then swap concepts with no recompilation")
        hook = base.__dict__[_HOOK_ATTR] = PersistentHook(base)
    return hook


@dataclass
class Attachment:
    """A pipeline's steering between `attach` and `detach`; `attach` again updates it in place."""

    provider: Provider
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    steer_unconditional: bool = False
    policy_name: str = "attached"
    next_seed: int = 0  # numbering of images of calls without generators
    last_seeds: list[int] = field(default_factory=list)
    last: list[Any] = field(default_factory=list)  # the provider's per-image info for the last call

    def __post_init__(self) -> None:
        self.start, self.end = check_window(self.start, self.end)

    # --- one call -------------------------------------------------------------------------------
    def image_seeds(self, generator, n_images: int, per_prompt: int) -> list[int]:
        """Each image's seed, from which its concepts are drawn.

        A list of generators: image i's is `generator[i].initial_seed()`. One generator seeded s: image
        i of each prompt gets `s + i` (hsteer generate's numbering). No generator: the attachment numbers
        images consecutively across calls from 0, so any K consecutive images are balanced.
        """
        if isinstance(generator, (list, tuple)):
            if len(generator) != n_images:
                raise HsteerError(f"{len(generator)} generators for {n_images} images; pass one per image")
            return [int(g.initial_seed()) for g in generator]
        if generator is not None:
            base = int(generator.initial_seed())
            return [base + i for _ in range(n_images // per_prompt) for i in range(per_prompt)]
        seeds = list(range(self.next_seed, self.next_seed + n_images))
        self.next_seed += n_images
        return seeds

    def rows(self, deltas: torch.Tensor, guided: bool, device, dtype) -> torch.Tensor:
        """Per-image deltas times scale, laid out for the U-Net batch ([uncond, cond] with guidance)."""
        deltas = deltas.to(device=device, dtype=torch.float32) * self.scale
        if guided:
            uncond = deltas if self.steer_unconditional else torch.zeros_like(deltas)
            deltas = torch.cat([uncond, deltas])
        return deltas.to(dtype)

    def call(self, pipe, original, args: tuple, kwargs: dict):
        arguments = _call_arguments(original, pipe, args, kwargs)
        per_prompt = int(arguments.get("num_images_per_prompt") or 1)
        n_images = _prompt_count(arguments) * per_prompt
        seeds = self.image_seeds(arguments.get("generator"), n_images, per_prompt)
        deltas, info = self.provider(seeds)
        self.last_seeds, self.last = seeds, info
        if deltas is None:  # e.g. the plain policy: nothing to add
            return original(pipe, *args, **kwargs)
        unet = pipe.unet
        guidance = float(arguments.get("guidance_scale", 1.0))
        guided = guidance > 1.0 and getattr(base_unet(unet).config, "time_cond_proj_dim", None) is None
        device = getattr(pipe, "_execution_device", None) or base_unet(unet).device
        hook = persistent_hook(unet)
        hook.arm(self.rows(deltas, guided, device, base_unet(unet).dtype), on=self.start <= 0.0)
        if (self.start, self.end) != (0.0, 1.0):
            kwargs = self._with_step_callback(kwargs, hook)
        try:
            return original(pipe, *args, **kwargs)
        finally:
            hook.disarm()

    def _with_step_callback(self, kwargs: dict, hook: PersistentHook) -> dict:
        """Chain a `callback_on_step_end` that sets the buffer for the next step (outside the U-Net)."""
        user = kwargs.get("callback_on_step_end")
        kwargs = dict(kwargs)
        if user is not None and hasattr(user, "tensor_inputs") and "callback_on_step_end_tensor_inputs" not in kwargs:
            kwargs["callback_on_step_end_tensor_inputs"] = user.tensor_inputs
        start, end = self.start, self.end

        def step_end(pipe, i, t, callback_kwargs):
            total = getattr(pipe, "_num_timesteps", None) or len(pipe.scheduler.timesteps)
            hook.gate(in_window(i + 1, total, start, end))
            return user(pipe, i, t, callback_kwargs) if user is not None else {}

        kwargs["callback_on_step_end"] = step_end
        return kwargs


def _call_arguments(original, pipe, args: tuple, kwargs: dict) -> dict:
    signature = inspect.signature(original)
    try:
        bound = signature.bind(pipe, *args, **kwargs)
    except TypeError as exc:
        raise HsteerError(f"bad arguments for {type(pipe).__name__}: {exc}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def _prompt_count(arguments: dict) -> int:
    prompt = arguments.get("prompt")
    if isinstance(prompt, str):
        return 1
    if isinstance(prompt, (list, tuple)):
        return len(prompt)
    embeds = arguments.get("prompt_embeds")
    if embeds is not None:
        return int(embeds.shape[0])
    raise HsteerError("an attached pipeline needs `prompt` or `prompt_embeds` to count its images")


_STEERED_CLASSES: dict[type, type] = {}


def _steered_class(cls: type) -> type:
    """A subclass of `cls` with the same name whose `__call__` goes through the attachment."""
    if getattr(cls, "_hsteer_base", None) is not None:
        return cls
    if cls not in _STEERED_CLASSES:
        original = cls.__call__

        def __call__(self, *args, **kwargs):
            attachment = self.__dict__.get(_STATE_ATTR)
            if attachment is None:
                return original(self, *args, **kwargs)
            return attachment.call(self, original, args, kwargs)

        __call__.__doc__ = original.__doc__
        __call__.__signature__ = inspect.signature(original)
        _STEERED_CLASSES[cls] = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__,
                                                           "__qualname__": cls.__qualname__, "_hsteer_base": cls})
    return _STEERED_CLASSES[cls]


def attach_pipeline(pipe, provider: Provider, *, scale: float = 1.0, start: float = 0.0, end: float = 1.0,
                    steer_unconditional: bool = False, policy_name: str = "attached") -> Attachment:
    """Steer every later `pipe(...)` call with `provider`'s deltas; a second call updates the attachment in place."""
    if getattr(getattr(pipe, "unet", None), "mid_block", None) is None:
        raise HsteerError(f"{type(pipe).__name__} has no U-Net mid-block to steer (attach needs a diffusers "
                          "pipeline with `unet`)")
    persistent_hook(pipe.unet)  # registered now, so that a later torch.compile traces it
    attachment = pipe.__dict__.get(_STATE_ATTR)
    if attachment is None:
        attachment = Attachment(provider, scale, start, end, steer_unconditional, policy_name)
        pipe.__dict__[_STATE_ATTR] = attachment
        pipe.__class__ = _steered_class(type(pipe))
    else:
        start, end = check_window(start, end)
        attachment.provider, attachment.scale, attachment.start, attachment.end = provider, scale, start, end
        attachment.steer_unconditional, attachment.policy_name = steer_unconditional, policy_name
    return attachment


def detach_pipeline(pipe) -> None:
    """Undo `attach_pipeline`: the original class; the hook removed (kept disarmed on a compiled U-Net)."""
    if pipe.__dict__.pop(_STATE_ATTR, None) is None:
        return
    base = getattr(type(pipe), "_hsteer_base", None)
    if base is not None:
        pipe.__class__ = base
    unet = getattr(pipe, "unet", None)
    hook = persistent_hook(unet, create=False) if unet is not None else None
    if hook is None:
        return
    hook.disarm()
    if not is_compiled(unet):
        hook.remove()
        del base_unet(unet).__dict__[_HOOK_ATTR]


@contextlib.contextmanager
def suspended(pipe) -> Iterator[None]:
    """Calls inside the block are not steered by the pipeline's attachment (hsteer.generate steers itself)."""
    attachment = pipe.__dict__.pop(_STATE_ATTR, None)
    try:
        yield
    finally:
        if attachment is not None:
            pipe.__dict__[_STATE_ATTR] = attachment


def attachment_of(pipe) -> Attachment | None:
    """The pipeline's attachment (scale, window, the last call's seeds and draws), or None."""
    return pipe.__dict__.get(_STATE_ATTR)

