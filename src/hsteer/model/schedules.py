"""The reverse processes training runs: a deterministic DDIM schedule (U-Nets) and the Euler schedule of a
rectified-flow model (SD3, FLUX, SANA).

Both offer the same three things the objectives use: `timesteps[k]` (the model's timestep of the latent
after k reverse steps from noise), `prediction(output, x, t)` (what the objectives compare: the noise on
a U-Net, the velocity on a flow model) and `step(pred, x, k)` (one reverse step, per sample). Which one a
model gets is its family's choice (`hsteer.model.families`). The attacks, which start from clean target
latents rather than from noise, also ask each for `noised(x0, noise, k)` (the latent at step index k),
`target(x0, noise)` (what the model should predict there) and `x0_hat(pred, x, k)` (the clean latent a
prediction implies), so that one attack serves both kinds of model.
"""

from __future__ import annotations

import numpy as np
import torch


class DDIMSchedule:
    """A deterministic DDIM (eta = 0) schedule of `steps` steps over the model's training noise table.

    `timesteps[k]` is the timestep of the latent reached after k reverse steps from pure noise.
    """

    def __init__(self, scheduler, steps: int, device: torch.device | str = "cpu") -> None:
        from diffusers import DDIMScheduler

        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        ddim = DDIMScheduler.from_config(scheduler.config)
        ddim.set_timesteps(steps)
        self.steps = steps
        self.prediction_type = ddim.config.prediction_type
        self.timesteps = ddim.timesteps.to(device)
        self.alphas_cumprod = ddim.alphas_cumprod.to(device, torch.float32)
        self.final_alpha = float(ddim.final_alpha_cumprod)
        self.init_noise_sigma = float(ddim.init_noise_sigma)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """The cumulative alpha at timesteps `t`, shaped to broadcast over latents (B, 1, 1, 1)."""
        return self.alphas_cumprod[t.long()].view(-1, 1, 1, 1)

    def alpha_after(self, k: torch.Tensor) -> torch.Tensor:
        """Cumulative alpha of the latent after step index k (the final alpha after the last step)."""
        nxt = k + 1
        inside = nxt < self.steps
        t_next = self.timesteps[nxt.clamp(max=self.steps - 1)]
        alpha = torch.where(inside, self.alphas_cumprod[t_next.long()], torch.full_like(t_next, self.final_alpha,
                                                                                           dtype=torch.float32))
        return alpha.view(-1, 1, 1, 1)

    def to_epsilon(self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Convert a prediction of any type (epsilon, v, sample) to the noise it implies."""
        if self.prediction_type == "epsilon":
            return output
        a = self.alpha(t).to(output.dtype)
        if self.prediction_type == "v_prediction":
            return a.sqrt() * output + (1 - a).sqrt() * x
        if self.prediction_type == "sample":
            return (x - a.sqrt() * output) / (1 - a).sqrt()
        raise ValueError(f"unsupported prediction type {self.prediction_type!r}")

    def prediction(self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the objectives compare on a U-Net: the noise (`to_epsilon`)."""
        return self.to_epsilon(output, x, t)

    def step(self, eps: torch.Tensor, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """One DDIM step from the latent at step index k (per sample) to step index k + 1."""
        a_t = self.alpha(self.timesteps[k]).to(x.dtype)
        a_next = self.alpha_after(k).to(x.dtype)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise at step index k (per sample)."""
        a = self.alpha(self.timesteps[k]).to(noise.dtype)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the model's prediction (as `prediction` gives it) should be at `noised(x0, noise, k)`: the noise."""
        return noise

    def x0_hat(self, eps: torch.Tensor, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The clean latent the noise prediction `eps` at latents `x` of step index k implies."""
        a = self.alpha(self.timesteps[k]).to(eps.dtype)
        return (x - (1 - a).sqrt() * eps) / a.sqrt()


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

    def _sigma(self, k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.sigmas[k].view((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - sigma) x0 + sigma noise at step index k (per sample): the straight path."""
        sigma = self._sigma(k, noise)
        return (1 - sigma) * x0 + sigma * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the model should predict on the straight path from `x0` to `noise`: the velocity noise - x0."""
        return noise - x0

    def x0_hat(self, v: torch.Tensor, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The clean latent the velocity `v` at latents `x` of step index k implies: x - sigma v."""
        return x - self._sigma(k, v) * v
