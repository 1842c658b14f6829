"""CoDSMa's optimiser step on latents the steered trainer reached (docs/methods.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hsteer import objectives
from hsteer.training.state import IterationLosses, optimise

if TYPE_CHECKING:
    from hsteer.training.steered import StepContext


def codsma_step(ctx: StepContext, z_t, t, eps_target, losses: IterationLosses) -> torch.Tensor:
    """One step of c on L = || eps(z_t; h + c, y) - eps_target ||^2; returns eps(z_t; h + c, y), which
    the fast mode's sampling step reuses."""
    eps_c = ctx.eps(z_t, t, ctx.params["c"])
    loss = objectives.codsma_loss(ctx.rows(eps_c), ctx.rows(eps_target))
    losses.add("loss", loss, "loss", ctx.config.lr)
    optimise(ctx.optimizers["c"], loss)
    return eps_c.detach()
