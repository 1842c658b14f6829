"""What every benchmark script does first, in one place.

The scripts run as `python benchmarks/NAME.py`, so this folder is on `sys.path` and they import this module
as `from common import ...` (tests/test_benchmarks.py loads them the same way).
"""

from __future__ import annotations

import os


def setup_threads(threads: int) -> None:
    """Pin torch to `threads` threads and silence library logs, before anything is timed.

    OMP_NUM_THREADS is set before torch is imported here, so the timings of one machine compare across runs
    and the benchmarks leave the rest of a shared machine's cores alone.
    """
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    from hsteer.model import quiet_libraries

    quiet_libraries()
