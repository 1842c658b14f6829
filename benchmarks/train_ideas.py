"""Ideas to make the fast mode reach the training benchmark's quality sooner, each measured the same way.

    python benchmarks/train_ideas.py [--seeds 0,1] [--images 48] [--ideas recipe,lr0.1,...] [--json] [--quick]

Every idea trains the world recipe's circle and square concepts (fast mode) with a few settings changed,
milestone by milestone, until the quality of `benchmarks/run.py`'s training benchmark is met (fair over
shape on the shape-biased professions: mean deviation ratio <= 0.05 and same-seed colour agreement with
plain >= 0.90, `QualityProbe`). It prints, per idea: training seconds to that quality per seed, their
median, the ratio of the recipe's median time to the idea's (measured in this run), and the final quality.
The `reference*` ideas run the reference procedure (batch 1) the same way, so that a change that also
speeds up the reference (a larger learning rate) is not credited to the fast mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import QualityProbe, _setup, seconds_to_reach, training_curve  # noqa: E402

#: name -> (what changes, settings over the recipe's, milestones); a "mode" setting picks the procedure
#: (default: the fast mode), so the reference procedure can be measured under the same change.
IDEAS: dict[str, tuple[str, dict, list[int]]] = {
    "recipe": ("the recipe: lr 0.05, batch 9 (3 pairs x 3), 20-step trajectories", {},
               [10, 15, 20, 30, 45, 60]),
    "lr0.1": ("learning rate 0.1", {"lr": 0.1}, [5, 8, 10, 15, 20, 30, 45]),
    "lr0.2": ("learning rate 0.2", {"lr": 0.2}, [3, 5, 8, 10, 15, 20, 30]),
    "batch3": ("batch 3 (one row per pair): cheaper iterations, noisier gradients", {"batch_size": 3},
               [10, 20, 30, 45, 60, 90]),
    "steps10": ("10-step training trajectories (sampling keeps 20)", {"steps": 10}, [10, 15, 20, 30, 45, 60]),
    "reference": ("the reference procedure (batch 1), recipe lr 0.05", {"mode": "reference", "batch_size": 1},
                  [25, 50, 100, 150, 200, 300]),
    "reference-lr0.1": ("the reference procedure at learning rate 0.1", {"mode": "reference", "batch_size": 1,
                                                                          "lr": 0.1}, [25, 50, 75, 100, 150, 200]),
    "reference-lr0.2": ("the reference procedure at learning rate 0.2", {"mode": "reference", "batch_size": 1,
                                                                          "lr": 0.2}, [15, 25, 50, 75, 100, 150]),
}
DEFAULT_IDEAS = ("recipe", "lr0.1", "lr0.2", "batch3", "steps10")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1", help="Training seeds, comma-separated.")
    parser.add_argument("--images", type=int, default=48, help="Images per profession in each evaluation.")
    parser.add_argument("--ideas", default=",".join(DEFAULT_IDEAS), help=f"Comma-separated, of: {', '.join(IDEAS)}.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="Smoke sizes (CI): 2 images, tiny milestones.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args(argv)
    _setup(args.threads)
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
            what, extra, milestones = IDEAS[name]
            settings = {k: v for k, v in extra.items() if k != "mode"}
            runs = []
            for seed in seeds:
                points = training_curve(pipe, probe, extra.get("mode", "fast"), [1, 2] if args.quick else milestones,
                                        seed, Path(tmp), **settings)
                runs.append({"seed": seed, "seconds_to_reach": seconds_to_reach(probe, points), "curve": points})
                print(json.dumps({"idea": name, **runs[-1]["curve"][-1], "seed": seed,
                                  "reached": runs[-1]["seconds_to_reach"]}), file=sys.stderr, flush=True)
            reached = [r["seconds_to_reach"] for r in runs if r["seconds_to_reach"] is not None]
            out["ideas"][name] = {"what": what, "settings": extra, "runs": runs, "seeds_reached": len(reached),
                                  "median_seconds_to_reach": statistics.median(reached) if reached else None,
                                  "final": {k: statistics.median(r["curve"][-1][k] for r in runs)
                                            for k in ("deviation_ratio", "colour_agreement", "fidelity")}}
    base = out["ideas"].get("recipe", {}).get("median_seconds_to_reach")
    for idea in out["ideas"].values():
        t = idea["median_seconds_to_reach"]
        idea["speedup_over_recipe"] = base / t if base and t and idea["seeds_reached"] == len(seeds) else None
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print("| idea | seconds to quality per seed | median | vs recipe | final DevRat / colour agreement |")
        print("|---|---|---|---|---|")
        for name, idea in out["ideas"].items():
            per = ", ".join("-" if r["seconds_to_reach"] is None else f"{r['seconds_to_reach']:.1f}"
                            for r in idea["runs"])
            ratio = idea["speedup_over_recipe"]
            f = idea["final"]
            print(f"| {name}: {idea['what']} | {per} | {idea['median_seconds_to_reach'] or '-'} | "
                  f"{'-' if ratio is None else f'{ratio:.2f}x'} | {f['deviation_ratio']:.3f} / "
                  f"{f['colour_agreement']:.3f} |")
    return out


if __name__ == "__main__":
    main()
