"""Steered pipeline calls: what `steer`, `attach` and `generate` share, arming the one hook per call.

A pipeline carries named *layers* of steering (`attach` adds one called "attached", each `steer` block
one of its own name). At every `pipe(...)` call the layers' providers are asked for per-image deltas
(from each image's seed), the rows are laid out for the denoiser batch and handed to the site's hook
(`steering.hook`) with their step windows, and the pipeline's `callback_on_step_end` tells the hook each
next step. After the call (even on error) the hook is disarmed. `generate` runs its batches with only
its own layer, so an attached pipeline is not steered twice.

Why the pipeline's class is swapped while it has layers: the per-image draws need the call's
generators (one seed per image), and the step windows need `callback_on_step_end`. Both exist only at
the pipeline call; diffusers has no pipeline-level hook, and `pipe(...)` looks `__call__` up on the
class, not the instance. So the class becomes a subclass of the same name whose `__call__` goes through
`PipelineSteering.call`; the original class is restored when the last layer goes. The denoiser itself
is never wrapped: its only change is the registered hook.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from hsteer.checks import check_window_covers_steps
from hsteer.errors import HsteerError
from hsteer.steering.hook import WindowRows, release_hook, steering_hook
from hsteer.model.sites import MID_BLOCK, SiteSet, SteeringSite, base_module
from hsteer.model.sites import batches_guidance

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

_STATE_ATTR = "_hsteer_steering"


@dataclass(frozen=True)
class WindowDeltas:
    """Per-image deltas `(B, *site shape)` (float) added inside the step window [start, end)."""

    start: float
    end: float
    deltas: torch.Tensor


#: provider(image seeds, image prompts) -> (the deltas of each window, empty for an unsteered call;
#: per-image info). A prompt is None where the call passed `prompt_embeds` instead of text.
Provider = Callable[[list[int], list[str | None]], tuple[list[WindowDeltas], list[Any]]]


@dataclass
class Layer:
    """One source of steering on a pipeline: a provider, its scale, and how it treats guidance."""

    provider: Provider
    scale: float = 1.0
    steer_unconditional: bool = False
    guided: bool | None = None  # None: from the call (guidance_scale > 1 on a model without guidance input)
    label: str = "attached"
    # pipeline-call arguments this layer fills in where a call does not give them (attach: the model card's
    # num_inference_steps and guidance_scale, so a plain `pipe(prompt)` samples as `generate` does)
    call_defaults: dict[str, Any] = field(default_factory=dict)
    # around(run, pipe, kwargs) -> output: runs the steered call (run() makes it once, and may be called again,
    # e.g. by the image-aware guard, which decides per image after a first pass and redraws)
    around: Callable[[Callable[[], Any], Any, dict], Any] | None = None


@dataclass
class PipelineSteering:
    """A pipeline's steering layers, and what its last call drew."""

    site: SteeringSite | SiteSet = MID_BLOCK
    layers: dict[str, Layer] = field(default_factory=dict)
    next_seed: int = 0  # numbering of images of calls without generators
    last_seeds: list[int] = field(default_factory=list)
    last: list[Any] = field(default_factory=list)  # per image: the concepts every layer added

    def image_seeds(self, generator, n_images: int, per_prompt: int) -> list[int]:
        """Each image's seed, from which its concepts are drawn.

        A list of generators: image i's is `generator[i].initial_seed()`. One generator seeded s: image
        i of each prompt gets `s + i` (hsteer generate's numbering). No generator: images are numbered
        consecutively across calls from 0, so any K consecutive images are balanced.
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

    def windows(self, seeds: list[int], prompts: list[str | None], guided: bool, device, dtype) -> list[WindowRows]:
        """Every layer's window rows for this call, laid out for the denoiser batch."""
        out, info = [], [[] for _ in seeds]
        for layer in list(self.layers.values()):
            windows, drawn = layer.provider(seeds, prompts)
            for n, concepts in enumerate(drawn):
                info[n].extend(concepts or [])
            layer_guided = guided if layer.guided is None else layer.guided
            for window in windows:
                deltas = window.deltas.to(device=device, dtype=torch.float32) * layer.scale
                if layer_guided:
                    uncond = deltas if layer.steer_unconditional else torch.zeros_like(deltas)
                    deltas = torch.cat([uncond, deltas])
                out.append(WindowRows(window.start, window.end, deltas.to(dtype)))
        self.last_seeds, self.last = seeds, info
        return out

    def call(self, pipe: Pipeline, original, args: tuple, kwargs: dict):
        """Make one pipeline call under the steering: the layers' call defaults filled in where the call
        passes none, and the call wrapped by a layer's `around` (the guard's two passes) where one has it."""
        kwargs = _with_call_defaults(self.layers.values(), original, pipe, args, kwargs)
        around = next((layer.around for layer in self.layers.values() if layer.around is not None), None)
        if around is not None:
            return around(lambda: self._call(pipe, original, args, kwargs), pipe, kwargs)
        return self._call(pipe, original, args, kwargs)

    def _call(self, pipe, original, args: tuple, kwargs: dict):
        arguments = _call_arguments(original, pipe, args, kwargs)
        per_prompt = int(arguments.get("num_images_per_prompt") or 1)
        n_images = _prompt_count(arguments) * per_prompt
        seeds = self.image_seeds(arguments.get("generator"), n_images, per_prompt)
        denoiser = self.site.denoiser(pipe)
        base = base_module(denoiser)
        guided = (float(arguments.get("guidance_scale", 1.0)) > 1.0 and batches_guidance(base)
                  and getattr(base.config, "time_cond_proj_dim", None) is None)
        device = getattr(pipe, "_execution_device", None) or base.device
        windows = self.windows(seeds, _image_prompts(arguments, n_images, per_prompt), guided, device, base.dtype)
        if not windows:  # e.g. the plain policy: nothing to add
            return original(pipe, *args, **kwargs)
        steps = arguments.get("num_inference_steps")
        if isinstance(steps, int) and not isinstance(steps, bool):
            for window in windows:  # a window that covers none of the steps run would be a silent no-op
                check_window_covers_steps(window.start, window.end, steps, "window", arguments.get("strength"))
        hook = steering_hook(denoiser, self.site)
        hook.arm(windows)
        if any((w.start, w.end) != (0.0, 1.0) for w in windows):
            kwargs = _with_step_callback(kwargs, hook)
        try:
            return original(pipe, *args, **kwargs)
        finally:
            hook.disarm()


def _with_call_defaults(layers, original, pipe, args: tuple, kwargs: dict) -> dict:
    """`kwargs` with each layer's `call_defaults` that the call itself does not give (by name or position)."""
    defaults = {key: value for layer in layers for key, value in layer.call_defaults.items()}
    if not defaults:
        return kwargs
    signature = inspect.signature(original)
    try:
        given = signature.bind_partial(pipe, *args, **kwargs).arguments
    except TypeError:  # reported with the pipeline's name by _call_arguments
        return kwargs
    missing = {k: v for k, v in defaults.items() if k not in given and k in signature.parameters}
    return {**kwargs, **missing} if missing else kwargs


def _with_step_callback(kwargs: dict, hook) -> dict:
    """Chain a `callback_on_step_end` that tells the hook the next step (outside the denoiser)."""
    user = kwargs.get("callback_on_step_end")
    kwargs = dict(kwargs)
    if user is not None and hasattr(user, "tensor_inputs") and "callback_on_step_end_tensor_inputs" not in kwargs:
        kwargs["callback_on_step_end_tensor_inputs"] = user.tensor_inputs

    def step_end(pipe: Pipeline, i, t, callback_kwargs):
        total = getattr(pipe, "_num_timesteps", None) or len(pipe.scheduler.timesteps)
        hook.set_step(i + 1, total)
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
    raise HsteerError("a steered pipeline needs `prompt` or `prompt_embeds` to count its images")


def _image_prompts(arguments: dict, n_images: int, per_prompt: int) -> list[str | None]:
    """Each image's prompt, in diffusers' prompt-major order (None for `prompt_embeds` calls)."""
    prompt = arguments.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if prompts is None:
        return [None] * n_images
    return [str(p) for p in prompts for _ in range(per_prompt)]


def _steered_class(cls: type) -> type:
    """A subclass of `cls` with the same name whose `__call__` goes through the pipeline's steering (see the
    module docstring for why). Made per call of `add_layer`, never cached in module state."""
    if getattr(cls, "_hsteer_base", None) is not None:
        return cls
    original = cls.__call__

    def __call__(self, *args, **kwargs):
        steering = self.__dict__.get(_STATE_ATTR)
        if steering is None or not steering.layers:
            return original(self, *args, **kwargs)
        return steering.call(self, original, args, kwargs)

    __call__.__doc__ = original.__doc__
    __call__.__signature__ = inspect.signature(original)
    return type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__, "_hsteer_base": cls})


def steering_of(pipe: Pipeline) -> PipelineSteering | None:
    """The pipeline's steering layers and last draws, or None when nothing steers it."""
    return pipe.__dict__.get(_STATE_ATTR)


def add_layer(pipe: Pipeline, name: str, layer: Layer,
              site: SteeringSite | SiteSet = MID_BLOCK) -> PipelineSteering:
    """Steer every later `pipe(...)` call with `layer` (replacing a layer of the same name)."""
    if not site.is_pipeline(pipe):
        raise HsteerError(f"{type(pipe).__name__} is not a diffusers pipeline with `{site.denoiser_attr}`; "
                          "pass a StableDiffusion(XL)Pipeline (or steer a bare U-Net with hsteer.steer)")
    denoiser = site.denoiser(pipe)
    steering = pipe.__dict__.get(_STATE_ATTR)
    if steering is not None and steering.site != site:
        raise HsteerError(f"the pipeline is already steered at {steering.site.label}; one pipeline is steered at one "
                          f"site at a time: detach or leave that steering before steering {site.label}")
    hook = steering_hook(denoiser, site)  # registered now, so that a later torch.compile traces it
    if steering is None:
        steering = pipe.__dict__[_STATE_ATTR] = PipelineSteering(site)
        pipe.__class__ = _steered_class(type(pipe))
        hook.users += 1
    steering.layers[name] = layer
    return steering


def remove_layer(pipe: Pipeline, name: str | None = None) -> None:
    """Remove the layer `name` (every layer when None); the last one restores the class and the hook."""
    steering = pipe.__dict__.get(_STATE_ATTR)
    if steering is None:
        return
    for key in list(steering.layers) if name is None else [name]:
        steering.layers.pop(key, None)
    if steering.layers:
        return
    del pipe.__dict__[_STATE_ATTR]
    base = getattr(type(pipe), "_hsteer_base", None)
    if base is not None:
        pipe.__class__ = base
    denoiser = steering.site.denoiser(pipe)
    hook = steering_hook(denoiser, steering.site, create=False)
    if hook is not None:
        hook.users = max(0, hook.users - 1)
        hook.disarm()
        release_hook(denoiser, steering.site)


@contextlib.contextmanager
def only_layer(pipe: Pipeline, layer: Layer,
               site: SteeringSite | SiteSet = MID_BLOCK) -> Iterator[PipelineSteering]:
    """Calls inside the block are steered by `layer` alone: the pipeline's own layers (an attachment, a
    `steer` block) and their last draws are set aside and restored on exit. `hsteer.generate` uses it."""
    saved = pipe.__dict__.pop(_STATE_ATTR, None)
    try:
        yield add_layer(pipe, "generate", layer, site)
    finally:
        remove_layer(pipe)
        if saved is not None:
            pipe.__dict__[_STATE_ATTR] = saved
            pipe.__class__ = _steered_class(type(pipe))  # the hook stayed: `saved` still counts as its user
