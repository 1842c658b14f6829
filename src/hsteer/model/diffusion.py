"""The pieces of the reverse process that training needs: text conditions, denoiser calls, DDIM steps.

Written against the denoiser directly (not the pipeline's `__call__`) so that each sample of a batch
can stop at its own step, and so the denoiser is evaluated at the timestep its input actually has.
The functions that take `unet` take a bare U-Net or an `hsteer.model.denoisers.Denoiser` (any family);
the schedules (`DDIMSchedule`, and the flow models' `FlowSchedule` with the same `timesteps`, `prediction`
and `step`) live in `hsteer.model.schedules`, the prompt encoding of each family in `hsteer.model.families`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hsteer.model.conditions import TextCondition
from hsteer.model.families import family_for
from hsteer.model.schedules import DDIMSchedule
from hsteer.model.sites import denoiser_of

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

__all__ = ["DDIMSchedule", "TextCondition", "encode_text", "encode_unconditional", "guidance_combination",
           "guided_epsilon", "reverse_to_steps", "unet_output"]


@torch.no_grad()
def encode_text(pipe: Pipeline, prompts: list[str], height: int | None = None,
                width: int | None = None) -> TextCondition:
    """Encode prompts exactly as the pipeline does for its conditional branch (its family's encoding)."""
    return family_for(pipe).encode_text(pipe, prompts, denoiser_of(pipe).device, height, width)


@torch.no_grad()
def encode_unconditional(pipe: Pipeline, height: int | None = None,
                         width: int | None = None) -> TextCondition:
    """The pipeline's own unconditional branch (the empty prompt; zeros where SDXL's config says so)."""
    return family_for(pipe).encode_unconditional(pipe, denoiser_of(pipe).device, height, width)


def unet_output(unet, x: torch.Tensor, t: torch.Tensor, cond: TextCondition) -> torch.Tensor:
    """The raw prediction of a U-Net (or of a `Denoiser`, any family) for latents `x` at timesteps `t`."""
    predict = getattr(unet, "predict", None)
    if predict is not None and not isinstance(unet, torch.nn.Module):
        return predict(x, t, cond)
    return unet(x, t, encoder_hidden_states=cond.embeds, added_cond_kwargs=cond.added, return_dict=False)[0]


def guided_epsilon(unet, schedule: DDIMSchedule, x: torch.Tensor, t: torch.Tensor, cond: TextCondition,
                   uncond: TextCondition, guidance: float) -> torch.Tensor:
    """Classifier-free guided noise, computed as the pipelines do: one batch [uncond, cond]."""
    if guidance == 1.0:
        return schedule.prediction(unet_output(unet, x, t, cond), x, t)
    n = x.shape[0]
    out = unet_output(unet, torch.cat([x, x]), torch.cat([t, t]), TextCondition.cat([uncond, cond]))
    eps = schedule.prediction(out, torch.cat([x, x]), torch.cat([t, t]))
    return guidance_combination(eps[:n], eps[n:], guidance)


def guidance_combination(eps_base: torch.Tensor, eps_pos: torch.Tensor, s: float) -> torch.Tensor:
    """eps_base + s * (eps_pos - eps_base): classifier-free guidance (base: the empty prompt), and
    negative prompting (base: the negative prompt). The one place this combination is written."""
    return eps_base + s * (eps_pos - eps_base)


@torch.no_grad()
def reverse_to_steps(unet, schedule: DDIMSchedule, x: torch.Tensor, k: torch.Tensor, cond: TextCondition,
                     uncond: TextCondition, guidance: float, start: int = 0) -> torch.Tensor:
    """Run DDIM from the latents `x` at step `start` (noise when 0) until sample i has taken `k[i]` steps.

    Samples that have arrived stop; the others go on in one batch. `cond`/`uncond` have one row per sample.
    """
    x = x.clone()
    for j in range(start, int(k.max().item()) if len(k) else 0):
        active = (k > j).nonzero(as_tuple=True)[0]
        xa = x[active]
        steps = torch.full((len(active),), j, device=x.device, dtype=torch.long)
        t = schedule.timesteps[steps]
        eps = guided_epsilon(unet, schedule, xa, t, cond.select(active), uncond.select(active), guidance)
        x[active] = schedule.step(eps, xa, steps)
    return x
