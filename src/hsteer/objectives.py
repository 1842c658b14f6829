"""The training objectives, each one short function beside its equation (docs/methods.md).

Notation: z_t latents at timestep t (reached by the reverse process, no gradient), h the steering site's
tensor (the U-Net mid-block output by default), eps(z_t; h + c, y, t) the denoiser's prediction with c
added to h under prompt y. On a U-Net every prediction is converted to epsilon (SD 2.x predicts v); on the
flow models (SD3, FLUX, SANA) it is the velocity they predict (`schedule.prediction`,
`hsteer.model.denoisers`): the same equations on what the model actually predicts.

The losses take predictions, not models: both training modes (fast and reference) compute the
predictions their own way (`eps`, `frozen_eps`) and then call exactly these functions.

A training run holds the steering hook for its whole length (`HeldHook`): each steered prediction then
arms it with one dictionary entry, where a scoped `steer` would register and remove a diffusers hook (and
check the delta's values on the host) for every prediction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from hsteer.steering.hook import DirectDelta, SteeringHook, release_hook, steering_hook
from hsteer.steering.scoped import SteeringConfig, steer
from hsteer.model.diffusion import DDIMSchedule, TextCondition, guidance_combination, unet_output
from hsteer.model.sites import MID_BLOCK, SteeringSite


def _module_site(unet) -> tuple[torch.nn.Module, SteeringSite]:
    """The denoiser module and its steering site: a `Denoiser` carries both, a bare U-Net is steered at its
    mid-block."""
    return getattr(unet, "module", unet), getattr(unet, "site", MID_BLOCK)


class HeldHook:
    """The steering hook at a training run's site, registered once for the run (`with HeldHook(denoiser)`)
    and released on leaving; `adding` arms it for one prediction with a dictionary entry.

    The run counts as one of the hook's users, so a scoped `steer` ending inside the run does not remove
    the hook the run still arms."""

    def __init__(self, unet) -> None:
        self.module, self.site = _module_site(unet)
        self.hook: SteeringHook | None = None

    def __enter__(self) -> HeldHook:
        self.hook = steering_hook(self.module, self.site)
        self.hook.users += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.hook.users = max(0, self.hook.users - 1)
        self.hook = None
        release_hook(self.module, self.site)

    @contextlib.contextmanager
    def adding(self, delta: torch.Tensor, name: str, guided: bool = False) -> Iterator[None]:
        """`delta` added at the site while inside (laid out for guidance batches when `guided`)."""
        self.hook.direct[name] = DirectDelta(delta, guided)
        try:
            yield
        finally:
            self.hook.direct.pop(name, None)


@contextlib.contextmanager
def steering(unet, delta: torch.Tensor | None, *, held: HeldHook | None = None, name: str = "hsteer-train",
             guided: bool = False) -> Iterator[None]:
    """`delta` added at the denoiser's site while inside (None: nothing): through the run's held hook, or,
    for a caller outside a run, a scoped `steer`."""
    if delta is None:
        yield
    elif held is not None:
        with held.adding(delta, name, guided):
            yield
    else:
        module, site = _module_site(unet)
        with steer(module, SteeringConfig(delta, guided=guided), name=name, site=site):
            yield


def eps(unet, schedule: DDIMSchedule, z_t: torch.Tensor, t: torch.Tensor, y: TextCondition,
        c: torch.Tensor | None = None, held: HeldHook | None = None) -> torch.Tensor:
    """eps(z_t; h + c, y, t); `c=None` is the frozen, unmodified model. With a trainable c the gradient
    reaches c through the up blocks only: the U-Net is frozen and nothing before h + c needs a gradient.
    `held`: the training run's hold on the hook (`HeldHook`), if it has one."""
    with steering(unet, c, held=held):
        return schedule.prediction(unet_output(unet, z_t, t, y), z_t, t)


@torch.no_grad()
def frozen_eps(unet, schedule: DDIMSchedule, z_t: torch.Tensor, t: torch.Tensor,
               prompts: Sequence[TextCondition]) -> list[torch.Tensor]:
    """[eps(z_t; h, y, t) for y in prompts]: the frozen model's predictions, in one U-Net batch."""
    n = len(prompts)
    both = eps(unet, schedule, z_t.repeat(n, *(1,) * (z_t.dim() - 1)), t.repeat(n), TextCondition.cat(list(prompts)))
    return list(both.chunk(n))


def guided_target(eps_pos: torch.Tensor, eps_base: torch.Tensor, s: float) -> torch.Tensor:
    """eps_target = eps(z_t; y_base) + s * (eps(z_t; y_pos) - eps(z_t; y_base)), frozen model.

    Fairness: y_pos the target prompt, y_base the empty prompt (CFG s = 4). Safety (negative prompting):
    y_pos the neutral prompt, y_base the negative prompt ("violence"; RespoDiff: s = 12).
    """
    return guidance_combination(eps_base, eps_pos, s)


def codsma_loss(eps_c: torch.Tensor, eps_target: torch.Tensor) -> torch.Tensor:
    """CoDSMa: L = || eps(z_t; h + c, y, t) - eps_target ||^2, with eps_c = eps(z_t; h + c, y, t)."""
    return F.mse_loss(eps_c.float(), eps_target.float())


def respodiff_resp_loss(eps_ram: torch.Tensor, eps_target: torch.Tensor) -> torch.Tensor:
    """RespoDiff L_resp = || eps(z_t; h + RAM, y_neu, t) - eps_target ||^2  (updates RAM only)."""
    return F.mse_loss(eps_ram.float(), eps_target.float())


def respodiff_sem_loss(eps_ram_sam: torch.Tensor, eps_frozen: torch.Tensor, lam: float) -> torch.Tensor:
    """RespoDiff L_sem = lambda * || eps(z_t; h + RAM + SAM, y_neu, t) - eps(z_t; h, y_neu, t) ||^2.

    It updates SAM only: `eps_ram_sam` is computed with RAM detached; `eps_frozen` is the unmodified model.
    """
    return lam * F.mse_loss(eps_ram_sam.float(), eps_frozen.float())


def sdisc_noised(schedule: DDIMSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps: an image of the target prompt, noised to timestep t."""
    a = schedule.alpha(t).to(x0.dtype)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def sdisc_loss(eps_c: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """SDisc: L = || eps(x_t; h + c, y_neu, t) - eps ||^2, t ~ U(0, T): the plain denoising loss."""
    return F.mse_loss(eps_c.float(), noise.float())
