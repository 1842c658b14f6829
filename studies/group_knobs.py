"""The two group-training settings `train_ideas.py` measured and the library does not keep: a linear
learning-rate warm-up over `lr_warmup` iterations, and the pool's unsteered start walked in `jumps` large
DDIM jumps instead of every step (the latents entering the window are then approximate)."""

from __future__ import annotations

import torch
from hsteer.model.diffusion import guided_epsilon
from hsteer.training.group import GroupRun


class KnobbedGroupRun(GroupRun):
    """`GroupRun` with a warm-up and jumps (both 0: exactly `GroupRun`)."""

    def __init__(self, pipe, configs, *, lr_warmup: int = 0, jumps: int = 0) -> None:
        super().__init__(pipe, configs)
        if lr_warmup < 0 or jumps < 0:
            raise ValueError(f"lr_warmup and jumps must be >= 0, got {lr_warmup} and {jumps}")
        self.lr_warmup, self.jumps = lr_warmup, jumps

    def _iteration(self, it: int) -> dict[str, float]:
        if self.lr_warmup:
            for ctx, config in zip(self.ctxs, self.configs):
                for group in ctx.optimizers["c"].param_groups:
                    group["lr"] = config.lr * min(1.0, (it + 1) / self.lr_warmup)
        return super()._iteration(it)

    @torch.no_grad()
    def _walk(self, x, k_from, k_to, delta=None):
        """The unsteered walks (no `delta`) in `jumps` DDIM jumps; the steered ones every step."""
        if delta is not None or not self.jumps:
            return super()._walk(x, k_from, k_to, delta)
        cond, uncond = self.ctxs[0].conds.neutral, self.ctxs[0].conds.empty
        span = k_to - k_from
        ladder = [k_from + span * m // self.jumps for m in range(self.jumps + 1)]
        guidance, x = self.configs[0].sampling_guidance, x.clone()
        for here, there in zip(ladder, ladder[1:]):
            active = (there > here).nonzero(as_tuple=True)[0]
            if not len(active):
                continue
            xa, t = x[active], self.schedule.timesteps[here[active]]
            eps = guided_epsilon(self.model, self.schedule, xa, t, cond.select(active), uncond.select(active),
                                 guidance)
            a_t = self.schedule.alpha(t).to(x.dtype)
            a_next = self.schedule.alpha(self.schedule.timesteps[there[active]]).to(x.dtype)
            x0 = (xa - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            x[active] = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x


def group_trainer(pipe, seed: int, iterations: int, lr_warmup: int = 0, jumps: int = 0, **extra):
    """`trainbench._group_trainer` with the two settings: advance(n) -> (seconds so far, [circle, square])."""
    from hsteer.apps.recipes import world_train_config

    configs = [world_train_config(name, iterations, seed, mode="fast", **extra) for name in ("circle", "square")]
    run = KnobbedGroupRun(pipe, configs, lr_warmup=lr_warmup, jumps=jumps)

    def advance(target: int):
        run.run(target)
        return run.seconds, run.concepts()

    return advance
