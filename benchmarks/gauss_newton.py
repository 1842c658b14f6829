"""Idea measured for issue 15: a Gauss-Newton step for CoDSMa's c in place of Adam, on the fast mode's pool.

    python benchmarks/gauss_newton.py [--seeds 0,1,2] [--iterations 3,5,8,12] [--cg 2] [--damping 0]
                                      [--images 48] [--json] [--quick]

CoDSMa's loss at one batch, L(c) = mean || f(c) - eps_target ||^2 with f(c) = eps(z_t; h + c, y), is close
to quadratic in c near its optimum. A Gauss-Newton step solves the linearised least squares,
(J^T J + damping I) delta = -J^T r (r = f(c) - eps_target, J = df/dc), by conjugate gradients: each CG
iteration is one forward-mode product J v through the up blocks and one backward product J^T (J v). It has
no learning rate, so what it saves cannot be a learning-rate effect. Each iteration here is otherwise the
fast mode's: trajectories at staggered steps, the target from the frozen model, one DDIM step of every
trajectory with the updated concept. The concepts are scored by the training benchmark's `QualityProbe`
after each of `--iterations`, and the time to the quality is set against the fast mode's (Adam) measured in
the same run (`run.ARMS["fast"]`).

A prototype for measurement: the product's trainers are `hsteer.training`. Forward-mode products need
attention written with plain ops, so the U-Net's attention processors are swapped for diffusers'
`AttnProcessor` here (the same function as its scaled-dot-product kernel).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import ARMS, QualityProbe, _setup, seconds_to_reach, training_curve  # noqa: E402


def gauss_newton_delta(f, c, eps_target, cg_iterations: int, damping: float):
    """delta = -(J^T J + damping I)^-1 J^T r by conjugate gradients, J = df/dc at c, r = f(c) - eps_target."""
    import torch
    import torch.autograd.forward_ad as fwAD

    c = c.detach().requires_grad_(True)
    out = f(c)
    r = (out - eps_target).detach()
    n = r.numel()

    def jt(u):  # J^T u (the graph of `out` is kept for the next product)
        return torch.autograd.grad(out, c, grad_outputs=u, retain_graph=True)[0]

    def jv(v):  # J v, forward mode
        with fwAD.dual_level():
            tangent = fwAD.unpack_dual(f(fwAD.make_dual(c.detach(), v))).tangent
        return tangent

    def normal(v):  # (J^T J + damping n I) v, scaled like the mean-squared loss
        return jt(jv(v)) + damping * n * v

    b = -jt(r)
    x = torch.zeros_like(b)
    residual, direction = b.clone(), b.clone()
    rr = (residual * residual).sum()
    for _ in range(cg_iterations):
        q = normal(direction)
        alpha = rr / (direction * q).sum()
        x = x + alpha * direction
        residual = residual - alpha * q
        new = (residual * residual).sum()
        if new.sqrt() < 1e-6 * b.norm():
            break
        direction = residual + (new / rr) * direction
        rr = new
    return x.detach()


def train_gauss_newton(pipe, name: str, iterations: int, seed: int, cg_iterations: int, damping: float):
    """The fast mode's loop for one world-recipe concept, with a Gauss-Newton step instead of Adam's."""
    import torch

    from hsteer import objectives
    from hsteer.apps.recipes import world_train_config
    from hsteer.hspace.bank import Concept
    from hsteer.model.diffusion import DDIMSchedule, guidance_combination
    from hsteer.model.geometry import pipeline_hspace_shape, resolve_resolution
    from hsteer.training.state import concept_meta, init_params, iteration_generator
    from hsteer.training.steered import Conditions, StepContext, TrajectoryPool

    config = world_train_config(name, iterations, seed, **ARMS["fast"].settings)
    unet = pipe.unet
    unet.requires_grad_(False)
    height, width = resolve_resolution(pipe, config.height, config.width)
    shape = pipeline_hspace_shape(pipe, height, width)
    latent_shape = (unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    params = init_params(config, shape, unet.device)
    ctx = StepContext(unet, DDIMSchedule(pipe.scheduler, config.steps, unet.device), config, params, {},
                      Conditions.encode(pipe, config, height, width))
    began = time.perf_counter()
    pool = TrajectoryPool(ctx.schedule, config.batch_size, latent_shape, unet.device, unet.dtype)
    pool.start(ctx)
    conds = ctx.conds
    for it in range(iterations):
        g = iteration_generator(config.seed, it)
        z_t, k = pool.current()
        ctx.mark_inside(k)
        t = ctx.schedule.timesteps[k]
        eps_uncond, eps_pos = objectives.frozen_eps(unet, ctx.schedule, z_t, t, [conds.empty, conds.positive])
        eps_target = objectives.guided_target(eps_pos, eps_uncond, config.target_guidance)
        if ctx.inside is None or ctx.inside.any():
            def f(c, z_t=z_t, t=t):  # the steered neutral prediction on the rows inside the window
                return ctx.rows(ctx.eps(z_t, t, c))

            delta = gauss_newton_delta(f, params["c"], ctx.rows(eps_target), cg_iterations, damping)
            with torch.no_grad():
                params["c"] += delta
        with torch.no_grad():
            eps_cond = ctx.eps(z_t, t, ctx.current())
        pool.advance(guidance_combination(eps_uncond, eps_cond, config.sampling_guidance), g)
    seconds = time.perf_counter() - began
    return Concept(config.concept, config.group, "codsma", {"c": params["c"].detach().cpu().float().clone()},
                   meta=concept_meta(pipe, config, shape)), seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", default="3,5,8,12", help="Iteration counts to score (each a fresh run).")
    parser.add_argument("--cg", type=int, default=2, help="Conjugate-gradient iterations per step.")
    parser.add_argument("--damping", type=float, default=0.0,
                        help="Levenberg-Marquardt damping, relative to the mean-squared loss (1e-3 stalled).")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="Smoke sizes (CI).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    _setup(args.threads)
    from diffusers.models.attention_processor import AttnProcessor

    from hsteer.model import load_pipeline

    pipe = load_pipeline(None)
    pipe.unet.set_attn_processor(AttnProcessor())
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    counts = [1] if args.quick else [int(n) for n in args.iterations.split(",")]
    probe = QualityProbe(pipe, 2 if args.quick else args.images)
    out: dict = {"cg_iterations": args.cg, "damping": args.damping, "seeds": seeds, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            curve = []
            for n in counts:
                trained = [train_gauss_newton(pipe, name, n, seed, 2 if args.quick else args.cg, args.damping)
                           for name in ("circle", "square")]
                curve.append({"iterations": n, "seconds": sum(s for _, s in trained),
                              **probe([concept for concept, _ in trained])})
                print(json.dumps({"seed": seed, **curve[-1]}), file=sys.stderr, flush=True)
                if probe.meets(curve[-1]):
                    break
            fast = ARMS["fast"]
            adam = training_curve(pipe, probe, fast.mode, [1, 2] if args.quick else list(fast.milestones), seed,
                                  Path(tmp), 1 if args.quick else fast.step, **fast.settings)
            out["runs"].append({"seed": seed, "gauss_newton_curve": curve, "adam_curve": adam,
                                "gauss_newton_seconds_to_reach": seconds_to_reach(probe, curve),
                                "adam_seconds_to_reach": seconds_to_reach(probe, adam)})
    both = [r for r in out["runs"] if r["gauss_newton_seconds_to_reach"] and r["adam_seconds_to_reach"]]
    out["adam_over_gauss_newton"] = statistics.median(r["adam_seconds_to_reach"] / r["gauss_newton_seconds_to_reach"]
                                                      for r in both) if both else None
    print(json.dumps(out, indent=2) if args.json else
          "\n".join(f"seed {r['seed']}: Gauss-Newton {r['gauss_newton_seconds_to_reach']} s, Adam (lr 0.15) "
                    f"{r['adam_seconds_to_reach']} s" for r in out["runs"]))
    return out


if __name__ == "__main__":
    main()
