"""Put `benchmarks/` on `sys.path`, after this folder: the studies reuse its modules (`common.setup_threads`,
the training benchmark `trainbench`, the attack harness `attacks`) as `python studies/NAME.py` runs them.
Each study imports this module first."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))
