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

import inspect

import numpy as np
import torch

from hsteer.model.diffusion import DDIMSchedule, TextCondition, encode_unconditional
from hsteer.model.geometry import hspace_shape, resolve_resolution
from hsteer.model.sites import MID_BLOCK, SteeringSite, base_module, family_of


class FlowSchedule:
    """The Euler schedule of a rectified-flow model over `steps` steps (the pipeline's own sigmas).

    `timesteps[k]` is the model's timestep (sigma x 1000) of the latent after k steps from noise. The
    sigmas are those the family's pipeline uses for `steps` steps, so that training reaches the latents
    generation passes through (`linear_sigmas`: FLUX's).
    """

    prediction_type = "flow"
    init_noise_sigma = 1.0

    def __init__(self, scheduler, steps: int, image_tokens: int, device: torch.device | str = "cpu",
                 linear_sigmas: bool = False) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        config = dict(scheduler.config)
        if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
            flow = FlowMatchEulerDiscreteScheduler.from_config(config)
        else:  # SANA's DPM-Solver on flow sigmas: the same flow, stepped by Euler
            flow = FlowMatchEulerDiscreteScheduler(shift=float(config.get("flow_shift") or 1.0),
                                                   num_train_timesteps=int(config.get("num_train_timesteps", 1000)))
        mu = None
        if flow.config.use_dynamic_shifting:
            from diffusers.pipelines.flux.pipeline_flux import calculate_shift

            mu = calculate_shift(image_tokens, flow.config.base_image_seq_len, flow.config.max_image_seq_len,
                                 flow.config.base_shift, flow.config.max_shift)
        # FluxPipeline passes sigmas linspace(1, 1/N, N); SD3 and SANA let the scheduler space them
        sigmas = np.linspace(1.0, 1 / steps, steps) if linear_sigmas else None
        flow.set_timesteps(num_inference_steps=None if linear_sigmas else steps, sigmas=sigmas, mu=mu)
        self.steps = steps
        self.timesteps = flow.timesteps.to(device, torch.float32)
        self.sigmas = flow.sigmas.to(device, torch.float32)

    def prediction(self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the objectives compare: the velocity itself."""
        return output

    def step(self, v: torch.Tensor, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """One Euler step from the latent at step index k (per sample) to step index k + 1."""
        shape = (-1,) + (1,) * (x.dim() - 1)
        dt = (self.sigmas[k + 1] - self.sigmas[k]).view(shape).to(x.dtype)
        return x + dt * v


class Denoiser:
    """A pipeline's denoiser as training calls it, at one image size, with the site concepts are added at.

    `module` is the U-Net or transformer; `guidance` the distilled-guidance input of FLUX-dev (ignored by
    models without one).
    """

    def __init__(self, pipe, height: int | None = None, width: int | None = None,
                 site: SteeringSite | None = None, guidance: float = 3.5) -> None:
        self.family = family_of(pipe)
        self.module = pipe.unet if self.family == "unet" else pipe.transformer
        self.site = site or MID_BLOCK
        self.height, self.width = resolve_resolution(pipe, height, width)
        self.vae_scale_factor = int(pipe.vae_scale_factor)
        self.scheduler = pipe.scheduler
        self.guidance = float(guidance)
        self._flux_ids: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.module.device

    @property
    def dtype(self) -> torch.dtype:
        return self.module.dtype

    @property
    def config(self):
        return base_module(self.module).config

    def latent_grid(self) -> tuple[int, int]:
        """(h, w) of the latents (FLUX: before packing, a multiple of 2 as FluxPipeline makes them)."""
        vsf = self.vae_scale_factor
        if self.family == "flux":
            return 2 * (self.height // (vsf * 2)), 2 * (self.width // (vsf * 2))
        return self.height // vsf, self.width // vsf

    def latent_shape(self) -> tuple[int, ...]:
        """One sample's latent as training holds it (FLUX: packed tokens `(N, 4C)`)."""
        h, w = self.latent_grid()
        if self.family == "flux":
            return (h // 2) * (w // 2), int(self.config.in_channels)
        return int(self.config.in_channels), h, w

    def image_tokens(self) -> int:
        h, w = self.latent_grid()
        patch = 2 if self.family == "flux" else int(getattr(self.config, "patch_size", 1) or 1)
        return (h // patch) * (w // patch)

    def schedule(self, steps: int):
        """The reverse process training runs: DDIM for a U-Net, the Euler flow schedule otherwise."""
        if self.family == "unet":
            return DDIMSchedule(self.scheduler, steps, self.device)
        return FlowSchedule(self.scheduler, steps, self.image_tokens(), self.device,
                            linear_sigmas=self.family == "flux")

    def sampling_cfg(self, guidance: float) -> float:
        """The classifier-free guidance of the reverse process: `guidance`, except on FLUX (one pass, 1)."""
        return 1.0 if self.family == "flux" else float(guidance)

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: TextCondition) -> torch.Tensor:
        """The raw prediction for latents `x` at per-sample timesteps `t` (the model's own kind)."""
        if self.family == "unet":
            return self.module(x, t, encoder_hidden_states=cond.embeds, added_cond_kwargs=cond.added,
                               return_dict=False)[0]
        added = cond.added or {}
        if self.family == "sd3":
            return self.module(hidden_states=x, timestep=t.to(x.dtype), encoder_hidden_states=cond.embeds,
                               pooled_projections=added["pooled"], return_dict=False)[0]
        if self.family == "flux":
            return self._flux(x, t, cond)
        out = self.module(x, encoder_hidden_states=cond.embeds, encoder_attention_mask=added.get("mask"),
                          timestep=t.to(x.dtype) * float(self.config.timestep_scale), return_dict=False)[0]
        if out.shape[1] == 2 * x.shape[1]:  # a learned-sigma head: the first half is the prediction
            out = out.chunk(2, dim=1)[0]
        return out

    def _flux(self, x: torch.Tensor, t: torch.Tensor, cond: TextCondition) -> torch.Tensor:
        if self._flux_ids is None:
            from diffusers import FluxPipeline

            h, w = self.latent_grid()
            img = FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, x.device, x.dtype)
            txt = torch.zeros(cond.embeds.shape[1], 3, device=x.device, dtype=x.dtype)
            self._flux_ids = (txt, img)
        txt, img = self._flux_ids
        guidance = None
        if getattr(self.config, "guidance_embeds", False):
            guidance = torch.full((x.shape[0],), self.guidance, device=x.device, dtype=torch.float32)
        return self.module(hidden_states=x, timestep=t.to(x.dtype) / 1000, guidance=guidance,
                           pooled_projections=cond.added["pooled"], encoder_hidden_states=cond.embeds,
                           txt_ids=txt, img_ids=img, return_dict=False)[0]


def site_shape(pipe, site: SteeringSite, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
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


def call_defaults(pipe) -> dict[str, object]:
    """Pipeline-call arguments hsteer always passes: SANA makes images at exactly the size asked (no
    resolution binning), so the token count is the one its concepts were learned at."""
    if family_of(pipe) == "sana" and "use_resolution_binning" in inspect.signature(type(pipe).__call__).parameters:
        return {"use_resolution_binning": False}
    if family_of(pipe) == "sd3":
        from hsteer.model.card import max_sequence_length

        return max_sequence_length(pipe)
    return {}
