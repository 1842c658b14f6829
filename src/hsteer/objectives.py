"""The training objectives, each one short function that reads beside its equation in METHODS.md.

Notation: z_t latents at timestep t (reached by the reverse process, no gradient), h the mid-block
output, eps(z_t; h + c, y, t) the U-Net's noise prediction with c added to h under prompt y.
All predictions are converted to epsilon, whatever the model predicts (SD 2.x predicts v).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hsteer.sampling import DDIMSchedule, TextCondition, unet_output
from hsteer.steering import SteeringConfig, steer


def eps(unet, schedule: DDIMSchedule, z_t: torch.Tensor, t: torch.Tensor, y: TextCondition,
        c: torch.Tensor | None = None) -> torch.Tensor:
    """eps(z_t; h + c, y, t); `c=None` is the frozen, unmodified model."""
    with steer(unet, SteeringConfig(c, guided=False) if c is not None else None, name="hsteer-train"):
        return schedule.to_epsilon(unet_output(unet, z_t, t, y), z_t, t)


@torch.no_grad()
def guided_target(unet, schedule: DDIMSchedule, z_t: torch.Tensor, t: torch.Tensor, y_pos: TextCondition,
                  y_base: TextCondition, s: float) -> torch.Tensor:
    """eps_target = eps(z_t; y_base) + s * (eps(z_t; y_pos) - eps(z_t; y_base)), frozen model.

    Fairness: y_pos the target prompt, y_base the empty prompt. Safety (negative prompting):
    y_pos the neutral prompt, y_base the negative prompt ("violence").
    """
    n = z_t.shape[0]
    both = eps(unet, schedule, torch.cat([z_t, z_t]), torch.cat([t, t]), TextCondition.cat([y_base, y_pos]))
    return guidance_combination(both[:n], both[n:], s)


def guidance_combination(eps_base: torch.Tensor, eps_pos: torch.Tensor, s: float) -> torch.Tensor:
    """eps_base + s * (eps_pos - eps_base): classifier-free guidance, and negative prompting."""
    return eps_base + s * (eps_pos - eps_base)


def codsma_loss(unet, schedule: DDIMSchedule, z_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor,
                y: TextCondition, eps_target: torch.Tensor) -> torch.Tensor:
    """CoDSMa: L = || eps(z_t; h + c, y, t) - eps_target ||^2.

    The U-Net is frozen and z_t carries no gradient, so autograd records nothing before h + c:
    the gradient reaches c through the up blocks only.
    """
    return F.mse_loss(eps(unet, schedule, z_t, t, y, c).float(), eps_target.float())


def respodiff_resp_loss(unet, schedule: DDIMSchedule, z_t: torch.Tensor, t: torch.Tensor, ram: torch.Tensor,
                        y_neu: TextCondition, eps_target: torch.Tensor) -> torch.Tensor:
    """RespoDiff L_resp = || eps(z_t; h + RAM, y_neu, t) - eps_target ||^2  (updates RAM only)."""
    return F.mse_loss(eps(unet, schedule, z_t, t, y_neu, ram).float(), eps_target.float())


def respodiff_sem_loss(unet, schedule: DDIMSchedule, z_t: torch.Tensor, t: torch.Tensor, ram: torch.Tensor,
                       sam: torch.Tensor, y_neu: TextCondition, eps_frozen: torch.Tensor,
                       lam: float) -> torch.Tensor:
    """RespoDiff L_sem = lambda * || eps(z_t; h + RAM + SAM, y_neu, t) - eps(z_t; h, y_neu, t) ||^2  (updates SAM only).

    `eps_frozen` is the unmodified model's prediction; RAM is held fixed (detached) here.
    """
    return lam * F.mse_loss(eps(unet, schedule, z_t, t, y_neu, ram.detach() + sam).float(), eps_frozen.float())


def sdisc_loss(unet, schedule: DDIMSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
               c: torch.Tensor, y: TextCondition) -> torch.Tensor:
    """SDisc: L = || eps(x_t; h + c, y, t) - eps ||^2 with x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, t ~ U(0, T)."""
    a = schedule.alpha(t).to(x0.dtype)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return F.mse_loss(eps(unet, schedule, x_t, t, y, c).float(), noise.float())
