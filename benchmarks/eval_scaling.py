"""Evaluation harness scaling: one process vs two `accelerate launch` processes, same images.

    python benchmarks/eval_scaling.py [--quick] [--json] [--model DIR] [--bank BANK --fair GROUP]

Runs `hsteer eval winobias --classifier world` on the bundled model (generation only), once in one
process with 2 torch threads and once as 2 processes with 1 thread each (the same two cores), then
scores each run with `hsteer score`. Prints the wall times, their ratio (`two_process_speedup`), and
checks that both runs made the same images (same manifest; pixels within one uint8 level, since
batches are composed differently per shard) and the same summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _env(threads: int) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")


def _timed(cmd: list[str], threads: int) -> float:
    began = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return time.perf_counter() - began


def _manifest(run: Path) -> list[dict]:
    rows = []
    for shard in sorted((run / "manifests").iterdir()):
        rows += [json.loads(line) for line in shard.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["file"])


def _max_pixel_difference(a: Path, b: Path, rows: list[dict]) -> int:
    import numpy as np
    from PIL import Image

    worst = 0
    for row in rows:
        pa = np.asarray(Image.open(a / "images" / row["file"]), dtype=np.int16)
        pb = np.asarray(Image.open(b / "images" / row["file"]), dtype=np.int16)
        worst = max(worst, int(np.abs(pa - pb).max()))
    return worst


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Smoke sizes.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--model", default=None, help="Default: the bundled world model.")
    parser.add_argument("--bank", default=None)
    parser.add_argument("--fair", default=None)
    parser.add_argument("--images-per-prompt", type=int, default=None)
    args = parser.parse_args(argv)
    images = args.images_per_prompt or (2 if args.quick else 16)
    from hsteer.world.scene import PROFESSIONS

    professions = "doctor,nurse" if args.quick else ",".join(PROFESSIONS)
    hsteer = [sys.executable, "-m", "hsteer"]
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    common = ["eval", "winobias", "--classifier", "world", "--professions", professions, "--max-templates", "2",
              "--images-per-prompt", str(images), "--batch-size", "8", "--quiet", "--no-score"]
    if args.model:
        common += ["--model", args.model]
    if args.bank:
        common += ["--bank", args.bank] + (["--fair", args.fair] if args.fair else [])
    if args.quick:
        common += ["--steps", "4"]
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        t_one = _timed([*hsteer, *common, "--out", str(one)], threads=2)
        launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                  str(29500 + os.getpid() % 400), "-m", "hsteer"]
        t_two = _timed([*launch, *common, "--out", str(two)], threads=1)
        s_one = _timed([*hsteer, "score", str(one), "--quiet"], threads=2)
        s_two = _timed([*hsteer, "score", str(two), "--quiet"], threads=2)
        rows_one, rows_two = _manifest(one), _manifest(two)
        same_manifest = rows_one == rows_two
        summary_one = json.loads((one / "summary.json").read_text())
        summary_two = json.loads((two / "summary.json").read_text())
        results = {
            "images": len(rows_one), "one_process_threads": 2, "two_processes_threads_each": 1,
            "one_process_seconds": t_one, "two_process_seconds": t_two, "two_process_speedup": t_one / t_two,
            "score_seconds": [s_one, s_two],
            "same_manifest": same_manifest,
            "max_pixel_difference": _max_pixel_difference(one, two, rows_one) if same_manifest else None,
            "same_deviation_ratio": summary_one["mean_deviation_ratio"] == summary_two["mean_deviation_ratio"],
            "mean_deviation_ratio": summary_one["mean_deviation_ratio"],
        }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
    ok = same_manifest and results["max_pixel_difference"] is not None and results["max_pixel_difference"] <= 1
    return results if ok else {}


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
