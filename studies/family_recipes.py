"""Step windows and scales of the fair recipe, per model family, measured on the held-out templates.

    OMP_NUM_THREADS=1 python studies/family_recipes.py --model unet|dit [--group colour] \
        [--window colour=0,0.25 ...] [--scale 1.0 --scale 1.5] [--iterations 150] [--lr 0.1] [--site S] [--images 8]
        [--json OUT]

For each group and step window: the group's concepts learned with the recipe (`world_train_config`) in that
window; for each scale, fair over that group alone on the held-out templates (`world.held_out`:
targeted DevRat, same-seed agreement on every untargeted attribute, explicit prompts' named value kept,
fidelity, each with its 95% interval) and, for reference, on the demo's leakage template. The plain model's
figures come from the same run (each report's `plain`). Banks are kept under `--work` and reused. Targets:
DevRat <= 0.05, the other attribute kept on >= 0.90, explicit named value kept >= 0.98, fidelity 1.00.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import study_paths  # noqa: F401  (benchmarks/ on sys.path)
from common import setup_threads

MODELS = {"unet": None, "dit": "world-dit"}
#: Windows measured when none is named: the recipe's and shorter/earlier ones around the settle steps.
DEFAULT_WINDOWS = {"shape": ((0.4, 1.0), (0.3, 1.0), (0.5, 1.0)),
                   "colour": ((0.0, 0.45), (0.0, 0.25), (0.0, 0.35))}


def _window(text: str) -> tuple[str, tuple[float, float]]:
    group, _, span = text.partition("=")
    start, end = (float(v) for v in span.split(","))
    return group, (start, end)


def train_bank(pipe, group: str, window: tuple[float, float], iterations: int, work: Path,
               lr: float | None = None, site: str | None = None) -> Path:
    """The group's concepts learned with the recipe in `window` (learning rate `lr` and steering site `site`;
    None: the recipe's), reused if the bank exists."""
    from hsteer.apps.recipes import WORLD_CONCEPTS, world_train_config
    from hsteer.training import train_into_bank

    rate = f"_lr{lr:g}" if lr is not None else ""
    where = f"_{site.replace(',', '+')}" if site is not None else ""
    path = work / f"{group}_{window[0]:g}_{window[1]:g}_{iterations}{rate}{where}.safetensors"
    if path.exists():
        return path
    partial = path.with_suffix(".partial.safetensors")
    for name, concept_group, *_ in WORLD_CONCEPTS:
        if concept_group == group:
            extra = {k: v for k, v in (("lr", lr), ("site", site)) if v is not None}
            train_into_bank(pipe, world_train_config(name, iterations, 0, window=window, **extra), partial,
                            resume=True, checkpoint_every=50, progress=False)
    partial.rename(path)
    return path


def measure(pipe, bank, group: str, scale: float, images: int) -> dict:
    """Held-out and demo-template figures of fair over `group` at `scale`."""
    from hsteer.world.evaluate import WorldEvalConfig
    from hsteer.world.held_out import HeldOutConfig, evaluate_held_out

    eval_config = WorldEvalConfig(steps=20, guidance=4.0)
    runs, scales = ((group,),), {group: scale}
    held = evaluate_held_out(pipe, bank, eval_config, HeldOutConfig(images_per_prompt=images), runs=runs,
                             scales=scales)
    demo = evaluate_held_out(pipe, bank, eval_config, HeldOutConfig(
        templates=("a photo of a {}",), images_per_prompt=2 * images, explicit_images_per_prompt=0, seed=0),
        runs=runs, scales=scales)
    return {"held_out": held, "demo_template": demo}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(MODELS), default="unet")
    parser.add_argument("--group", action="append", choices=("shape", "colour"), help="default: both")
    parser.add_argument("--window", action="append", type=_window, metavar="GROUP=START,END")
    parser.add_argument("--scale", action="append", type=float)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--site", default=None, help="a site or set of sites (default: the model's)")
    parser.add_argument("--images", type=int, default=12, help="held-out images per prompt (a multiple of 6)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("family_recipes_work"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    setup_threads(args.threads)
    from hsteer.world.held_out import held_out_rows
    from hsteer.steering.bank import ConceptBank
    from hsteer.model import load_quietly

    pipe = load_quietly(MODELS[args.model])
    work = args.work / args.model
    work.mkdir(parents=True, exist_ok=True)
    groups = args.group or ["shape", "colour"]
    windows = {g: [w for gg, w in args.window or () if gg == g] or list(DEFAULT_WINDOWS[g]) for g in groups}
    results = []
    for group in groups:
        for window in windows[group]:
            began = time.perf_counter()
            bank = ConceptBank.load(train_bank(pipe, group, window, args.iterations, work, args.lr,
                                                     args.site))
            trained = time.perf_counter() - began
            for scale in args.scale or [1.0]:
                figures = measure(pipe, bank, group, scale, args.images)
                label = f"{args.model} {group} {window[0]:g}-{window[1]:g} x{scale:g}"
                results.append({"model": args.model, "group": group, "window": list(window), "scale": scale,
                                "train_seconds": round(trained, 1), **figures})
                print(*held_out_rows(figures["held_out"], label + " held-out"), sep="\n", flush=True)
                print(*held_out_rows(figures["demo_template"], label + " demo"), sep="\n", flush=True)
                print(f"  plain held-out {json.dumps(figures['held_out']['plain'])}", flush=True)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
