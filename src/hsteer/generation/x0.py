"""The predicted clean image x0-hat of a running pipeline, read at the scheduler's step.

Why the scheduler: it receives exactly the guided prediction the sampler uses (classifier-free guidance
already combined, any family's layout), so x0-hat read there is what the model is about to draw. DDIM,
Euler and most samplers return it (`pred_original_sample`); for flow matching (SD3, FLUX, SANA's
flow schedulers) it is `x_t - sigma_t * v`. `decode_latents` turns it into pixels in [0, 1] with the
pipeline's own VAE (FLUX's packed tokens unpacked first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from hsteer.errors import HsteerError

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


def _is_flow(scheduler) -> bool:
    """A flow-matching scheduler: x0-hat is `x_t - sigma_t * v`, whatever its step returns."""
    return "FlowMatch" in type(scheduler).__name__ or getattr(scheduler.config, "prediction_type", "") == "flow_prediction"


def x0_of_step(scheduler, output: Any, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """x0-hat of the step the scheduler has just taken (`output` is what its `step` returned)."""
    predicted = getattr(output, "pred_original_sample", None)
    if isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], torch.Tensor):
        predicted = output[1]  # `return_dict=False`: (prev_sample, pred_original_sample)
    if predicted is not None:
        return predicted
    sigmas, index = getattr(scheduler, "sigmas", None), getattr(scheduler, "step_index", None)
    if _is_flow(scheduler) and sigmas is not None and index is not None:
        sigma = sigmas[index - 1].to(sample.device, sample.dtype)
        return sample - sigma * model_output
    raise HsteerError(f"the guard cannot read x0-hat from a {type(scheduler).__name__}: its step returns no "
                      "predicted clean image; use a DDIM, Euler or flow-matching scheduler")


def check_x0_readable(scheduler) -> None:
    """Refuse, before any image is made, a scheduler whose step gives no x0-hat: its module's step outputs
    have no `pred_original_sample` and it is not a flow-matching scheduler (e.g. DPM-Solver, PNDM). A
    scheduler whose outputs cannot be told from its module is checked at the decision step instead."""
    import dataclasses
    import sys

    from diffusers.utils import BaseOutput

    if _is_flow(scheduler):
        return
    module = sys.modules.get(type(scheduler).__module__)
    outputs = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, BaseOutput)
               and dataclasses.is_dataclass(v)] if module is not None else []
    if outputs and not any("pred_original_sample" in {f.name for f in dataclasses.fields(v)} for v in outputs):
        raise HsteerError(f"the guard cannot read x0-hat from a {type(scheduler).__name__}: its step returns no "
                          "predicted clean image; use a DDIM, Euler or flow-matching scheduler "
                          "(pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config))")


class X0Capture:
    """While active, calls `on_step(x0, decode)` at 0-based step `step` of each pipeline call; a True answer
    interrupts the call (the rest of its steps are skipped: nothing they would draw is used)."""

    def __init__(self, pipe: Pipeline, step: int, on_step: Callable[[torch.Tensor, Callable[[],
                 torch.Tensor]], bool],
                 height: int | None = None, width: int | None = None) -> None:
        self.pipe, self.step, self.on_step = pipe, step, on_step
        self.height, self.width = height, width
        self.count = 0
        self.x0: torch.Tensor | None = None

    def __enter__(self) -> X0Capture:
        scheduler = self.pipe.scheduler
        original = scheduler.step
        self._had_own = "step" in vars(scheduler)
        self._original = original

        def step(model_output, timestep, sample, *args, **kwargs):
            output = original(model_output, timestep, sample, *args, **kwargs)
            if self.count == self.step:
                x0 = x0_of_step(scheduler, output, model_output, sample).detach()
                self.x0 = x0
                if self.on_step(x0, lambda: decode_latents(self.pipe, x0, self.height, self.width)):
                    self.pipe._interrupt = True
            self.count += 1
            return output

        scheduler.step = step
        return self

    def __exit__(self, *exc: object) -> None:
        scheduler = self.pipe.scheduler
        if self._had_own:
            scheduler.step = self._original
        else:
            del scheduler.step


def decode_latents(pipe: Pipeline, latents: torch.Tensor, height: int | None = None,
                   width: int | None = None) -> torch.Tensor:
    """Pixels `(B, 3, H, W)` in [0, 1] of latents as the sampler holds them (differentiable where grad is on:
    the adaptive attack reads a pixel detector through it)."""
    vae = pipe.vae
    if latents.ndim == 3 and hasattr(pipe, "_unpack_latents"):  # FLUX: packed 2x2 patches as tokens
        if not (height and width):
            raise HsteerError("decoding FLUX latents needs the image size")
        latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    scaling = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
    shift = float(getattr(vae.config, "shift_factor", 0.0) or 0.0)
    latents = latents.to(vae.device, vae.dtype) / scaling + shift
    decoded = vae.decode(latents, return_dict=False)[0]
    return ((decoded.float() + 1) / 2).clamp(0, 1)
