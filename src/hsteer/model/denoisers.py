"""What a denoiser predicts and how it is called, per family: the one place training asks.

Training (`hsteer.training`) and the objectives call a `Denoiser` the same way for every family: with
latents, per-sample timesteps and a `TextCondition`, getting the model's own prediction back, and they
step latents with the `schedule(steps)` it gives. What differs by family lives here:

- U-Net (SD 1.x/2.x, SDXL): epsilon or v prediction on a DDIM schedule; training compares epsilon
  (`DDIMSchedule.prediction` converts v to epsilon), so SD 1.x and 2.x concepts learn the same objective.
- SD3, FLUX, SANA: rectified flow. The model predicts the velocity `v = noise - x0` of
  `x_t = (1 - sigma) x0 + sigma noise`; training compares velocities (`FlowSchedule.prediction` is the
  identity) and steps latents by Euler, `x <- x + (sigma_next - sigma) v`, on the sigmas the pipeline's
  own scheduler gives for that many steps (with FLUX's resolution-dependent shift).
- FLUX's latents are packed 2 x 2 into tokens `(N, 4C)`, as FluxPipeline keeps them; its distilled
  guidance (FLUX-dev) is an input of every call, `guidance`; it has no `[uncond, cond]` batch, so its
  reverse process runs one conditional pass per step (`sampling_cfg` is 1).

Why one wrapper and not per-family branches in training: the objectives are the same equations on
whatever the model predicts, so only the calls differ (docs/methods.md §1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hsteer.model.diffusion import TextCondition, encode_unconditional
from hsteer.model.families import family_for
from hsteer.model.geometry import hspace_shape, resolve_resolution
from hsteer.model.schedules import FlowSchedule
from hsteer.model.sites import MID_BLOCK, SteeringSite, base_module

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

__all__ = ["Denoiser", "FlowSchedule", "call_defaults", "site_shape"]


class Denoiser:
    """A pipeline's denoiser as training calls it, at one image size, with the site concepts are added at.

    `module` is the U-Net or transformer; `guidance` the distilled-guidance input of FLUX-dev (ignored by
    models without one).
    """

    def __init__(self, pipe: Pipeline, height: int | None = None, width: int | None = None,
                 site: SteeringSite | None = None, guidance: float = 3.5) -> None:
        self.family = family_for(pipe)
        self.module = getattr(pipe, self.family.denoiser_attr)
        self.site = site or MID_BLOCK
        self.height, self.width = resolve_resolution(pipe, height, width)
        self.vae_scale_factor = int(pipe.vae_scale_factor)
        self.scheduler = pipe.scheduler
        self.guidance = float(guidance)
        self.inputs: dict[str, object] = {}  # inputs the family builds once per size (FLUX's position ids)

    @property
    def device(self) -> torch.device:
        """The device the denoiser's weights are on."""
        return self.module.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the denoiser's weights."""
        return self.module.dtype

    @property
    def config(self):
        """The denoiser module's diffusers config (through a compiled wrapper too)."""
        return base_module(self.module).config

    def latent_grid(self) -> tuple[int, int]:
        """(h, w) of the latents (FLUX: before packing, a multiple of 2 as FluxPipeline makes them)."""
        return self.family.latent_grid(self.height, self.width, self.vae_scale_factor)

    def latent_shape(self) -> tuple[int, ...]:
        """One sample's latent as training holds it (FLUX: packed tokens `(N, 4C)`)."""
        return self.family.latent_shape(int(self.config.in_channels), self.latent_grid())

    def image_tokens(self) -> int:
        """How many image tokens a transformer sees at the current latent size (latent grid over the patch
        size, squared)."""
        h, w = self.latent_grid()
        patch = self.family.token_patch(self.config)
        return (h // patch) * (w // patch)

    def schedule(self, steps: int):
        """The reverse process training runs: DDIM for a U-Net, the Euler flow schedule otherwise."""
        return self.family.schedule(self, steps)

    def sampling_cfg(self, guidance: float) -> float:
        """The classifier-free guidance of the reverse process: `guidance`, except on FLUX (one pass, 1)."""
        return self.family.sampling_cfg(guidance)

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: TextCondition) -> torch.Tensor:
        """The raw prediction for latents `x` at per-sample timesteps `t` (the model's own kind)."""
        return self.family.predict(self, x, t, cond)


def site_shape(pipe: Pipeline, site: SteeringSite, height: int | None = None,
               width: int | None = None) -> tuple[int, ...]:
    """The shape of one image's concept at `site` for images of `height` x `width` (the model's native size
    where not given): `(C, h, w)` at the mid-block, `(image tokens, width)` at a block, `(text tokens,
    width)` at the text site (read from the pipeline's own encoding of the empty prompt)."""
    height, width = resolve_resolution(pipe, height, width)
    if site.kind == "output":
        return hspace_shape(pipe.unet, height, width, pipe.vae_scale_factor)
    if site.kind == "text":
        return tuple(int(n) for n in encode_unconditional(pipe, height, width).embeds.shape[1:])
    den = Denoiser(pipe, height, width, site)
    config = den.config
    return den.image_tokens(), int(config.num_attention_heads) * int(config.attention_head_dim)


def call_defaults(pipe: Pipeline) -> dict[str, object]:
    """Pipeline-call arguments hsteer always passes (its family's: SANA makes images at exactly the size
    asked, so the token count is the one its concepts were learned at; SD3 takes its card's T5 length)."""
    return family_for(pipe).call_defaults(pipe)
