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


def test_quick_training_ideas_report_time_to_quality_and_ratio():
    out = _load("train_ideas").main(["--quick", "--json", "--seeds", "0", "--ideas", "recipe,lr0.2", "--threads", "2"])
    assert set(out["ideas"]) == {"recipe", "lr0.2"}
    for idea in out["ideas"].values():
        assert [r["seed"] for r in idea["runs"]] == [0]
        assert all(p["iterations"] in (1, 2) and p["seconds"] > 0 for p in idea["runs"][0]["curve"])
        assert 0 <= idea["final"]["deviation_ratio"] <= 1 and 0 <= idea["final"]["colour_agreement"] <= 1
    assert out["ideas"]["lr0.2"]["settings"] == {"lr": 0.2}


def test_tradeoff_text_plot_places_each_method_and_the_targets():
    tradeoff = _load("tradeoff")
    rows = [{"method": "codsma", "scale": 1.0, "deviation_ratio": 0.0, "colour_agreement": 1.0},
            {"method": "sdisc", "scale": 1.0, "deviation_ratio": 0.4, "colour_agreement": 0.6},
            {"method": "respodiff", "scale": 0.5, "deviation_ratio": 0.2, "colour_agreement": 0.8}]
    lines = tradeoff.text_plot({"rows": rows}, width=40, height=10).splitlines()
    grid = lines[:10]
    assert grid[-1].endswith("C")  # DevRat 0, agreement 1: bottom right
    assert "S" in grid[0] and grid[0].index("S") < grid[-1].index("C")  # the worst: top, left
    assert any(set(g.split("|", 1)[1]) == {"-"} for g in grid)  # the 0.05 line
    assert "R" in "".join(grid)
