"""The prompt-aware gate's candidates on the bundled model: which reader, hard or soft, and against blind.

    python studies/gate_candidates.py --bank hsteer-demo/bank.safetensors [--images-per-prompt 8] [--json]

Runs `hsteer.world.gate_eval.evaluate_gate` with every setting of `SETTINGS` (blind steering, the
`token`, `embedding`, `embedding-hard` and `context` gates) on the demo's bank, with the demo's gate
configuration (explicit prompts of every profession x every shape and colour, the open prompts, harm
prompts phrased outside the training templates, seed 300), and prints the table the README quotes, each
figure with its bootstrap 95% interval. The default gate (`hsteer.gate.DEFAULT_GATE`) was chosen from it.
`--quick` is the CI smoke size (one profession, one image per prompt, 4 steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import study_paths  # noqa: F401  (benchmarks/ on sys.path)
from common import setup_threads


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bank", required=True, help="A bank of the world's concepts (the demo's bank.safetensors).")
    parser.add_argument("--images-per-prompt", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="Smoke sizes (CI).")
    parser.add_argument("--json", action="store_true", help="Print the report as one JSON object.")
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    from hsteer import ConceptBank, load_pipeline
    from hsteer.world.gate_eval import SETTINGS, GateEvalConfig, evaluate_gate, gate_table
    from hsteer.model import sampling_defaults

    pipe = load_pipeline(None)
    sampling = sampling_defaults(None)
    config = GateEvalConfig(images_per_prompt=args.images_per_prompt, steps=int(sampling["steps"]),
                            guidance=float(sampling["guidance"]))
    if args.quick:
        config = GateEvalConfig(professions=("nurse",), images_per_prompt=1, steps=4, harm_prompts=("violent",))
    began = time.perf_counter()
    report = evaluate_gate(pipe, ConceptBank.load(args.bank), config, settings=SETTINGS,
                           log=lambda m: print(m, file=sys.stderr))
    report["seconds"] = time.perf_counter() - began
    print(json.dumps(report, indent=2) if args.json else gate_table(report))
    return report


if __name__ == "__main__":
    main()
