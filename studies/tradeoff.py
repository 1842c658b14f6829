"""Leakage trade-off on the bundled model: targeted deviation ratio against untargeted agreement, over scale.

    python studies/tradeoff.py [--iterations 150] [--images 24] [--scales 0.25,0.5,0.75,1,1.25]
                                  [--recipe conditioned|plain] [--out tradeoff] [--json]

For SDisc, CoDSMa and RespoDiff (the world recipe of `hsteer.apps.recipes`), it learns the shape group
{circle, square}, then generates fair-over-shape images at each group scale and measures, against the
plain images of the same seeds: the targeted (shape) mean deviation ratio over the shape-biased
professions and the untargeted (colour) same-seed agreement, each with its bootstrap 95% interval.
Writes `OUT/tradeoff.json`, the plot `OUT/tradeoff.png` (not committed: a generated image) and the same
plot as text, `OUT/tradeoff.txt` (the README's copy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import study_paths  # noqa: F401  (benchmarks/ on sys.path)
from common import setup_threads

METHODS = ("sdisc", "codsma", "respodiff")


def measure(args) -> dict:
    from hsteer.apps.recipes import world_train_config
    from hsteer.world.evaluate import WorldEvalConfig, evaluate_world
    from hsteer.policies import FairPolicy, PlainPolicy
    from hsteer.steering.bank import ConceptBank
    from hsteer.model import load_quietly, sampling_defaults
    from hsteer.training import train_concept
    from hsteer.world import scene

    pipe = load_quietly(None)
    sampling = sampling_defaults(None)
    professions = tuple(p for p, group in scene.BIASED_PAIRS if group == "shape")
    config = WorldEvalConfig(professions=professions, templates=("a photo of a {}",), images_per_prompt=args.images,
                             harm_prompts=(), steps=int(sampling["steps"]), guidance=float(sampling["guidance"]),
                             groups=("shape", "colour"))
    plain = evaluate_world(pipe, config, policy=PlainPolicy(), progress=False)
    rows = []
    for method in METHODS:
        began = time.perf_counter()
        concepts = [train_concept(pipe, world_train_config(name, args.iterations, 0, objective=method,
                                                           recipe=args.recipe),
                                  progress=False).concept for name in ("circle", "square")]
        seconds = time.perf_counter() - began
        bank = ConceptBank(concepts=concepts)
        for scale in args.scales:
            result = evaluate_world(pipe, config, bank=bank, policy=FairPolicy(("shape",), {"shape": scale}),
                                    baseline=plain, progress=False)
            s = result.summary
            colour = s["untargeted"]["colour"]
            rows.append({"method": method, "scale": scale, "training_seconds": seconds,
                         "deviation_ratio": s["deviation_ratio"]["mean_all"]["shape"],
                         "deviation_ratio_ci": s["deviation_ratio_ci"]["mean_all"]["shape"],
                         "colour_agreement": colour["agreement"], "colour_agreement_ci": colour["agreement_ci"],
                         "fidelity": s["fidelity"]["mean"]})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"recipe": args.recipe, "iterations": args.iterations, "images_per_profession": args.images,
            "professions": list(professions), "plain_deviation_ratio": plain.summary["deviation_ratio"]["mean_all"]["shape"],
            "rows": rows}


MARKS = {"sdisc": "S", "codsma": "C", "respodiff": "R"}


def text_plot(result: dict, width: int = 56, height: int = 14) -> str:
    """The same trade-off as characters, for a README (a generated image is not committed): one letter per
    (method, scale); where points share a cell the later method's letter shows. Dashed lines: the targets."""
    rows = result["rows"]
    x_low = min(0.5, min(r["colour_agreement"] for r in rows))
    y_high = max(0.2, max(r["deviation_ratio"] for r in rows))
    grid = [[" "] * width for _ in range(height)]

    def col(x: float) -> int:
        return min(width - 1, round((x - x_low) / (1.0 - x_low) * (width - 1)))

    def line(y: float) -> int:
        return min(height - 1, round((1 - y / y_high) * (height - 1)))

    for c in range(width):
        grid[line(0.05)][c] = "-"
    for r in range(height):
        grid[r][col(0.90)] = ":" if grid[r][col(0.90)] == " " else grid[r][col(0.90)]
    for r in rows:
        grid[line(r["deviation_ratio"])][col(r["colour_agreement"])] = MARKS[r["method"]]
    out = [f"{y_high * (1 - i / (height - 1)):5.2f} |" + "".join(cells) for i, cells in enumerate(grid)]
    out.append("      +" + "-" * width)
    out.append(f"       {x_low:<.2f}{'colour same-seed agreement':^{width - 8}}1.00")
    out.append("y: shape deviation ratio (fair over shape); S SDisc, C CoDSMa, R RespoDiff; "
               "- - DevRat 0.05, : agreement 0.90")
    return "\n".join(out)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hsteer.fileio import atomic_png

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        rows = [r for r in result["rows"] if r["method"] == method]
        x = [r["colour_agreement"] for r in rows]
        y = [r["deviation_ratio"] for r in rows]
        xerr = [[r["colour_agreement"] - r["colour_agreement_ci"][0] for r in rows],
                [r["colour_agreement_ci"][1] - r["colour_agreement"] for r in rows]]
        yerr = [[max(0.0, r["deviation_ratio"] - r["deviation_ratio_ci"][0]) for r in rows],
                [max(0.0, r["deviation_ratio_ci"][1] - r["deviation_ratio"]) for r in rows]]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", capsize=2, label=method)
        for r in rows:
            ax.annotate(f"{r['scale']:g}", (r["colour_agreement"], r["deviation_ratio"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.05, color="k", lw=0.6, ls="--")
    ax.axvline(0.90, color="k", lw=0.6, ls="--")
    ax.set_xlabel("untargeted (colour) same-seed agreement")
    ax.set_ylabel("targeted (shape) deviation ratio")
    ax.set_title(f"fair over shape, {result['recipe']} recipe; labels: scale")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_png(path, fig, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--images", type=int, default=24, help="Images per profession.")
    parser.add_argument("--scales", type=lambda t: [float(x) for x in t.split(",")], default=[0.25, 0.5, 0.75, 1.0, 1.25])
    parser.add_argument("--recipe", choices=("conditioned", "plain"), default="conditioned")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("tradeoff"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    result = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    from hsteer.fileio import atomic_write_text

    atomic_write_text(args.out / "tradeoff.json", json.dumps(result, indent=2))
    plot(result, args.out / "tradeoff.png")
    result["text_plot"] = text_plot(result)
    atomic_write_text(args.out / "tradeoff.txt", result["text_plot"] + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(result["text_plot"])
    return result


if __name__ == "__main__":
    main()
