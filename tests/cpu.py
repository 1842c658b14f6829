"""How many torch threads a test may use: the CPU's share of this pytest process.

`make test` runs the suite on every core through pytest-xdist (`-n auto`), one worker per core; a test that
asked for more threads than its share would oversubscribe the cores and run many times slower. Tests and the
hsteer processes they start read the share from here (and from OMP_NUM_THREADS / HSTEER_THREADS, which
conftest.py sets), never a literal count.
"""

from __future__ import annotations

import os

_WORKERS = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
_CORES = max(1, int(os.environ.get("OMP_NUM_THREADS", "") or (os.cpu_count() or 1)))

#: Threads for one test: the cores this process is given, split between the workers.
THREADS = max(1, _CORES // _WORKERS)
