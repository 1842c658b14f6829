"""Smoke test of the benchmark script (its figures are quoted in BENCHMARKS.md, not asserted as timings)."""

import importlib.util
from pathlib import Path


def _load(name: str):
    path = Path(__file__).parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"hsteer_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_reports_every_key():
    results = _load("run").main(["--quick", "--json", "--threads", "2"])
    for key in ("steer_overhead", "fair_batch_ratio", "train_speedup", "train_quality", "train_memory"):
        assert key in results, key
    assert results["steer_overhead"] > 0 and results["fair_batch_ratio"] > 0
    assert results["fair_distinct_concepts"] > 1  # the fair batch really mixed concepts
    memory = results["train_memory"]
    assert 0 < memory["memory_ratio_checkpointed"] < memory["memory_ratio"] < 1
    assert set(results["train_quality"]) >= {"reference", "fast"}


def test_quick_eval_scaling_makes_the_same_images_in_one_and_two_processes():
    results = _load("eval_scaling").main(["--quick", "--json"])
    assert results, "the two runs differ"
    assert results["same_manifest"] and results["max_pixel_difference"] <= 1 and results["images"] == 8
    assert results["same_deviation_ratio"]
    assert results["one_process_seconds"] > 0 and results["two_process_seconds"] > 0


def test_random_sd_architecture_and_training_throughput(tmp_path):
    """The GPU recipe of BENCHMARKS.md, at toy widths: a random SD-1.5-layout pipeline, timed in both modes."""
    folder = _load("random_sd").build(tmp_path / "tiny-sd15", size="tiny")
    from hsteer.model import load_pipeline, pipeline_hspace_shape

    pipe = load_pipeline(folder)
    assert len(pipe.unet.down_blocks) == 4 and pipe.tokenizer.model_max_length == 77
    assert pipeline_hspace_shape(pipe) == (64, 2, 2)  # 128 px / 8 (VAE) / 8 (three U-Net downsamplings)
    results = _load("run").main(["--quick", "--json", "--threads", "2", "--model", str(folder), "--skip-training",
                                 "--train-throughput"])
    throughput = results["train_throughput"]
    assert throughput["fast"]["batch"] == 8 and throughput["reference"]["batch"] == 1
    assert throughput["signals_per_second_ratio"] > 0 and throughput["checkpointing_slowdown"] > 0
    assert 0 < results["train_memory"]["memory_ratio_checkpointed"] < results["train_memory"]["memory_ratio"]
