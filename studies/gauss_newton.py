"""A Gauss-Newton step for CoDSMa's c in place of Adam on the fast mode's pool: a step without a learning rate.

    python studies/gauss_newton.py [--seeds 0,1,2] [--iterations 3,5,8,12] [--cg 2] [--damping 0]
                                   [--images 48] [--json] [--quick]

CoDSMa's loss at one batch, L(c) = mean || f(c) - eps_target ||^2 with f(c) = eps(z_t; h + c, y), is close
to quadratic in c near its optimum. A Gauss-Newton step solves the linearised least squares,
(J^T J + damping I) delta = -J^T r (r = f(c) - eps_target, J = df/dc), by conjugate gradients: each CG
iteration is one forward-mode product J v through the up blocks and one backward product J^T (J v). It has
no learning rate, so what it saves cannot be a learning-rate effect. Each iteration here is otherwise the
fast mode's: trajectories at staggered steps, the target from the frozen model, one DDIM step of every
trajectory with the updated concept. The concepts are scored by the training benchmark's `QualityProbe`
after each of `--iterations`, and the time to the quality is set against the fast mode's (Adam) measured in
the same run (`trainbench.ARMS["fast"]`).

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

import study_paths  # noqa: F401  (benchmarks/ on sys.path)
from common import setup_threads
from trainbench import ARMS, QualityProbe, seconds_to_reach


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


def gauss_newton_step(cg_iterations: int, damping: float):
    """A method step for `fast_iteration` (`StepContext.step`): c += the Gauss-Newton delta on CoDSMa's loss
    at this batch."""
    import torch

    def step(ctx, z_t, t, eps_target, losses):
        def f(c):  # the steered neutral prediction on the rows inside the window
            return ctx.rows(ctx.eps(z_t, t, c))

        c = ctx.params["c"]
        delta = gauss_newton_delta(f, c, ctx.rows(eps_target), cg_iterations, damping)
        with torch.no_grad():
            c += delta
        return None  # the sampling step needs the updated concept

    return step


def train_gauss_newton(pipe, name: str, iterations: int, seed: int, cg_iterations: int, damping: float):
    """The fast mode's loop for one world-recipe concept (`fast_iteration`), with a Gauss-Newton step
    instead of Adam's; seconds from the pool's start, as the fast mode counts them."""
    from hsteer.apps.recipes import world_train_config
    from hsteer.steering.bank import Concept
    from hsteer.seeding import iteration_generator
    from hsteer.training.state import concept_meta
    from hsteer.training.steered import TrajectoryPool, fast_iteration, step_context

    config = world_train_config(name, iterations, seed, **ARMS["fast"].settings)
    ctx, shape, latent_shape = step_context(pipe, config)
    ctx.step = gauss_newton_step(cg_iterations, damping)  # in place of CoDSMa's Adam step
    began = time.perf_counter()
    pool = TrajectoryPool(ctx.schedule, config.batch_size, latent_shape, pipe.unet.device, pipe.unet.dtype)
    pool.start(ctx)
    for it in range(iterations):
        fast_iteration(ctx, pool, iteration_generator(config.seed, it), it)
    seconds = time.perf_counter() - began
    return Concept(config.concept, config.group, "codsma", {"c": ctx.params["c"].detach().cpu().float().clone()},
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
    setup_threads(args.threads)
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
            adam = (ARMS["fast"].smoke() if args.quick else ARMS["fast"]).curve(pipe, probe, seed, Path(tmp))
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
