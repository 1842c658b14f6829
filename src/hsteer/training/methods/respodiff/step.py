"""RespoDiff's optimiser step on latents the steered trainer reached (docs/methods.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hsteer import objectives
from hsteer.training.state import IterationLosses, optimise

if TYPE_CHECKING:
    from hsteer.training.steered import StepContext


def respodiff_step(ctx: StepContext, z_t, t, eps_target, losses: IterationLosses) -> None:
    """Step RAM on L_resp, then recompute and step SAM on L_sem (RAM held fixed). It makes no steered
    prediction before changing the concept, so the fast mode makes its own."""
    ram, sam = ctx.params["ram"], ctx.params["sam"]
    loss_resp = objectives.respodiff_resp_loss(ctx.rows(ctx.eps(z_t, t, ram)), ctx.rows(eps_target))
    losses.add("loss", loss_resp, "L_resp", ctx.config.lr)
    optimise(ctx.optimizers["ram"], loss_resp)
    with torch.no_grad():
        eps_frozen = ctx.eps(z_t, t)
    loss_sem = objectives.respodiff_sem_loss(ctx.rows(ctx.eps(z_t, t, ram.detach() + sam)), ctx.rows(eps_frozen),
                                             ctx.config.lam)
    losses.add("loss_sem", loss_sem, "L_sem", ctx.config.lr_sam, "lr_sam")
    optimise(ctx.optimizers["sam"], loss_sem)
    return None
