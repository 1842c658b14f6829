"""Ideas to make the fast mode reach the training benchmark's quality sooner, each measured the same way.

    python studies/train_ideas.py [--seeds 0,1] [--images 48] [--ideas fast,lr0.1,...] [--json] [--quick]

Every idea trains the world recipe's circle and square concepts with a few settings changed over the
training benchmark's fast arm (`trainbench.ARMS`), evaluated at coarse milestones and then bisected down to a few
iterations, until the quality of `benchmarks/run.py`'s training benchmark is met (fair over shape on the
shape-biased professions: mean deviation ratio <= 0.05 and same-seed colour agreement with plain >= 0.90,
`QualityProbe`). It prints, per idea: training seconds to that quality per seed, their median, the ratio of
the fast arm's median time to the idea's (measured in this run), and the quality where it was met (with
the untargeted columns). The `reference*` ideas run the reference procedure (batch 1) the same way, so that
a change that also speeds up the reference (a larger learning rate) is not credited to the fast mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import study_paths  # noqa: F401  (benchmarks/ on sys.path)
import trainbench
from common import setup_threads
from group_knobs import group_trainer
from trainbench import ARMS, RECIPE_LR, Arm, QualityProbe, _quality_at_reach, _rate_arm, seconds_to_reach

#: the group ideas' `lr_warmup` and `jumps` are this study's (`group_knobs`), not the library's
trainbench._group_trainer = group_trainer

FAST, REFERENCE = ARMS["fast"], ARMS["reference"]


def _fast(**change) -> Arm:
    """The benchmark's fast arm with `change` over its settings (same milestones and bisection step)."""
    return Arm("fast", {**FAST.settings, **change}, FAST.milestones, FAST.step)


def _group(lr: float, **change) -> Arm:
    """The group trainer (circle and square together, `hsteer.training.group`) at `lr`, with `change`."""
    arm = _rate_arm("group", lr)
    return Arm("group", {**arm.settings, **change}, arm.milestones, arm.step)


#: name -> (what changes, the arm: mode, settings over the recipe's, milestones, bisection step). Ideas are
#: changes over the benchmark's fast arm (lr 0.15); `reference*` ideas run the reference procedure, so that
#: a change that also speeds up the reference (a larger learning rate) is not credited to the fast mode.
IDEAS: dict[str, tuple[str, Arm]] = {
    "fast": ("the benchmark's fast arm: lr 0.15, batch 9 (3 pairs x 3), 20-step trajectories", FAST),
    "lr0.05": (f"the demo recipe's learning rate {RECIPE_LR}", Arm("fast", {}, (10, 20, 30, 45, 60, 90), 5)),
    "lr0.1": ("learning rate 0.1", Arm("fast", {"lr": 0.1}, (6, 12, 18, 30, 45), 3)),
    "lr0.2": ("learning rate 0.2", _fast(lr=0.2)),
    "lr0.3": ("learning rate 0.3", _fast(lr=0.3)),
    "batch3": ("batch 3 (one row per pair): cheaper iterations, noisier gradients", _fast(batch_size=3)),
    "batch18": ("batch 18 (6 rows per pair)", _fast(batch_size=18)),
    "steps10": ("10-step training trajectories (sampling keeps 20)", _fast(steps=10)),
    "reference": (f"the reference procedure (batch 1), recipe lr {RECIPE_LR}", REFERENCE),
    "reference-lr0.1": ("the reference procedure at learning rate 0.1",
                        Arm("reference", {"batch_size": 1, "lr": 0.1}, (25, 50, 100, 150), 5)),
    "reference-lr0.15": ("the reference procedure at the fast arm's learning rate 0.15", ARMS["reference_fast_lr"]),
    "reference-lr0.2": ("the reference procedure at learning rate 0.2",
                        Arm("reference", {"batch_size": 1, "lr": 0.2}, (10, 20, 30, 45, 60, 90), 5)),
    "reference-lr0.3": ("the reference procedure at learning rate 0.3", _rate_arm("reference", 0.3)),
    "group": ("circle and square trained together (one pool in the window, one U-Net pass), lr 0.15", _group(0.15)),
    "group-lr0.3": ("the group trained together at lr 0.3", _group(0.3)),
    "group-lr0.45-warmup2": ("the group at lr 0.45 with a 2-iteration linear warm-up", _group(0.45, lr_warmup=2)),
    "group-jumps2": ("the group at lr 0.3, the pool's unsteered start in 2 DDIM jumps", _group(0.3, jumps=2)),
    "group-batch6": ("the group at lr 0.3, batch 6 per concept (2 rows per pair)", _group(0.3, batch_size=6)),
}
DEFAULT_IDEAS = ("fast", "lr0.05", "lr0.1", "lr0.2", "batch3", "steps10")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1", help="Training seeds, comma-separated.")
    parser.add_argument("--images", type=int, default=48, help="Images per profession in each evaluation.")
    parser.add_argument("--ideas", default=",".join(DEFAULT_IDEAS), help=f"Comma-separated, of: {', '.join(IDEAS)}.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="Smoke sizes (CI): 2 images, tiny milestones.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    from hsteer.model import load_pipeline

    names = [n for n in args.ideas.split(",") if n]
    unknown = [n for n in names if n not in IDEAS]
    if unknown:
        parser.error(f"unknown idea(s) {', '.join(unknown)}; choose from {', '.join(IDEAS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    pipe = load_pipeline(None)
    probe = QualityProbe(pipe, 2 if args.quick else args.images)
    out: dict = {"images_per_profession": 2 if args.quick else args.images, "seeds": seeds, "ideas": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            what, arm = IDEAS[name]
            runs = []
            for seed in seeds:
                points = (arm.smoke() if args.quick else arm).curve(pipe, probe, seed, Path(tmp))
                runs.append({"seed": seed, "seconds_to_reach": seconds_to_reach(probe, points), "curve": points})
                print(json.dumps({"idea": name, **runs[-1]["curve"][-1], "seed": seed,
                                  "reached": runs[-1]["seconds_to_reach"]}), file=sys.stderr, flush=True)
            reached = [r["seconds_to_reach"] for r in runs if r["seconds_to_reach"] is not None]
            out["ideas"][name] = {"what": what, "mode": arm.mode, "settings": arm.settings, "runs": runs,
                                  "seeds_reached": len(reached),
                                  "median_seconds_to_reach": statistics.median(reached) if reached else None,
                                  "final": _quality_at_reach(probe, [r["curve"] for r in runs])}
    base = out["ideas"].get("fast", {}).get("median_seconds_to_reach")
    for idea in out["ideas"].values():
        t = idea["median_seconds_to_reach"]
        idea["speedup_over_fast"] = base / t if base and t and idea["seeds_reached"] == len(seeds) else None
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print("| idea | seconds to quality per seed | median | vs the fast arm | iterations | DevRat | colour "
              "agreement (lowest CI end) | colour DevRat change (highest CI end) | fidelity |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, idea in out["ideas"].items():
            per = ", ".join("-" if r["seconds_to_reach"] is None else f"{r['seconds_to_reach']:.1f}"
                            for r in idea["runs"])
            ratio, f, median = idea["speedup_over_fast"], idea["final"], idea["median_seconds_to_reach"]
            print(f"| {name}: {idea['what']} | {per} | {'-' if median is None else f'{median:.1f}'} | "
                  f"{'-' if ratio is None else f'{ratio:.2f}x'} | {f.get('iterations', '-')} | "
                  f"{f['deviation_ratio']:.3f} | {_num(f.get('colour_agreement'))} "
                  f"({_num(f.get('colour_agreement_ci_low_min'))}) | {_num(f.get('colour_deviation_change'))} "
                  f"({_num(f.get('colour_deviation_change_ci_high_max'))}) | {f['fidelity_min']:.3f} |")
    return out


if __name__ == "__main__":
    main()
