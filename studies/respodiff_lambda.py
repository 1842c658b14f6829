"""RespoDiff's lambda for the hardened safety concept: a fresh white-box attack and the harmless agreement.

    python studies/respodiff_lambda.py [--lam 0.25 --lam 0.5 ...] [--quick] [--json] [--work DIR] [--threads 1]

The safety recipe (`hsteer.apps.recipes`) learns the hardened concept with RespoDiff at lambda 0.5 (L_sem's
weight: how hard SAM keeps the neutral prompt's prediction faithful). Does another lambda keep more of the
harmless images without letting the attack back in? For each lambda: the recipe's concept trained with it
(everything else the recipe's), applied at full strength (the default gate's images); the white-box attack
of `benchmarks/attacks.py` run afresh against it (its budget: 5 suffix tokens x 40 steps, 8 harm prompts x 16
images, seeds 1000-1015) and its harmless figures (8 professions x 8 images, same-seed agreement with plain on
shape, colour and profession, and fidelity), each with its 95% bootstrap interval. Every run is a resumable
folder under `--work`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import study_paths  # noqa: F401  (benchmarks/ on sys.path)
from common import setup_threads

LAMBDAS = (0.25, 0.5, 1.0, 2.0)


def measure(args) -> dict:
    import attacks
    from hsteer.apps.recipes import world_train_config
    from hsteer.attacks import Defence
    from hsteer.evaluation.tasks.world import HARM_PROMPTS
    from hsteer.steering.bank import ConceptBank
    from hsteer.model import load_quietly, sampling_defaults
    from hsteer.policies import SafePolicy
    from hsteer.training import train_into_bank

    budget = attacks.QUICK if args.quick else attacks.Budget()
    work = Path(args.work) / ("quick" if args.quick else "full")
    pipe = load_quietly(None)
    defaults = sampling_defaults(None)
    sampling = {"steps": 4 if args.quick else int(defaults["steps"]), "guidance": float(defaults["guidance"])}
    plain = attacks.harmless(pipe, Defence(), budget, sampling)["labels"]
    prompts = list(HARM_PROMPTS[: budget.prompts])
    rows = []
    for lam in args.lam or LAMBDAS:
        began = time.perf_counter()
        folder = work / f"lam-{lam:g}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "bank.safetensors"
        if not path.exists():
            config = world_train_config("anti_harm", budget.iterations, 0, objective="respodiff", lam=lam,
                                        steps=sampling["steps"])
            train_into_bank(pipe, config, path, resume=True, checkpoint_every=50, progress=False)
        defence = Defence(SafePolicy(), ConceptBank.load(path), respect_prompt=False)
        wb = attacks.run_attack(pipe, prompts, defence, "whitebox", attacks.attack_configs(budget)["whitebox"],
                                folder / "whitebox", budget, sampling)
        h = attacks.harmless(pipe, defence, budget, sampling, plain)
        rows.append({"lam": lam, **{k: wb[k] for k in ("asr_before", "asr_before_ci", "asr_after", "asr_after_ci")},
                     "prompts": wb["prompts"], "harmless_agreement": h["agreement"], "harmless_fidelity": h["fidelity"],
                     "seconds": time.perf_counter() - began})
        print(f"lambda {lam:g}: white-box {wb['asr_before']:.3f} -> {wb['asr_after']:.3f}, harmless agreement "
              f"{h['agreement']['value']:.3f}", file=sys.stderr, flush=True)
    return {"quick": args.quick, "budget": budget.__dict__, "sampling": sampling, "rows": rows}


def table(result: dict) -> str:
    def cell(value, ci) -> str:
        return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"

    lines = ["| lambda | ASR before | after white-box | harmless agreement | harmless fidelity |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['lam']:g} | {cell(r['asr_before'], r['asr_before_ci'])} | "
                     f"{cell(r['asr_after'], r['asr_after_ci'])} | "
                     f"{cell(r['harmless_agreement']['value'], r['harmless_agreement']['ci'])} | "
                     f"{cell(r['harmless_fidelity']['value'], r['harmless_fidelity']['ci'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lam", type=float, action="append", help=f"A lambda to measure (default: {LAMBDAS}).")
    parser.add_argument("--quick", action="store_true", help="attacks.py's smoke budget and 4 steps.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--work", default="/tmp/hsteer-respodiff-lambda", help="Banks and attack runs (resumable).")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    result = measure(args)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
