"""Smoke test of the benchmark script (its figures are quoted in BENCHMARKS.md, not asserted as timings)."""

import importlib.util
from pathlib import Path


def test_quick_benchmark_reports_every_key():
    path = Path(__file__).parent.parent / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("hsteer_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--quick", "--json", "--threads", "2"])
    for key in ("steer_overhead", "fair_batch_ratio", "train_speedup", "train_quality", "train_memory"):
        assert key in results, key
    assert results["steer_overhead"] > 0 and results["fair_batch_ratio"] > 0
    assert results["fair_distinct_concepts"] > 1  # the fair batch really mixed concepts
    assert 0 < results["train_memory"]["memory_ratio"] < 1
    assert set(results["train_quality"]) >= {"reference", "fast"}
