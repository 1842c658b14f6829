"""Smoke tests of the benchmark scripts (benchmarks/) and of the one-off studies (studies/); their figures are
quoted in BENCHMARKS.md and studies/README.md, not asserted as timings."""

import importlib.util
import sys
from pathlib import Path

import pytest
from cpu import THREADS


ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS, STUDIES = ROOT / "benchmarks", ROOT / "studies"


def _load(name: str):
    """The script `benchmarks/<name>.py` or `studies/<name>.py` as a module, with both folders on sys.path as
    `python <script>` puts its own there (the scripts import their siblings: `from common import
    setup_threads`; a study puts benchmarks/ there itself, `study_paths`)."""
    for folder in (STUDIES, BENCHMARKS):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    path = STUDIES / f"{name}.py"
    if not path.is_file():
        path = BENCHMARKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"hsteer_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_reports_every_key():
    results = _load("run").main(["--quick", "--json", "--threads", str(THREADS)])
    for key in ("steer_overhead", "fair_batch_ratio", "train_speedup", "train_quality", "train_memory"):
        assert key in results, key
    assert results["steer_overhead"] > 0 and results["fair_batch_ratio"] > 0
    assert results["fair_distinct_concepts"] > 1  # the fair batch really mixed concepts
    memory = results["train_memory"]
    assert 0 < memory["memory_ratio_checkpointed"] < memory["memory_ratio"] < 1
    assert {"reference", "fast", "reference_fast_lr"} <= set(results["train_quality"])
    assert set(results["train_sweep"]) == {"reference", "fast", "group"}
    for key in ("train_speedup_best", "train_speedup_best_per_concept", "train_group_speedup"):
        assert results[f"{key}_low"] <= results[key] <= results[f"{key}_high"], key
    arms = results["train_arms"]
    assert arms["reference"]["settings"] == {"batch_size": 1}  # the recipe's learning rate
    assert arms["fast"]["settings"]["lr"] == arms["reference_fast_lr"]["settings"]["lr"] == 0.15
    for key in ("train_speedup_equal_quality", "train_speedup_equal_lr"):
        assert results[f"{key}_low"] <= results[key] <= results[f"{key}_high"], key
    for arm in results["train_quality"].values():  # the untargeted columns travel with the targeted one
        assert {"deviation_ratio", "colour_agreement", "fidelity_min"} <= set(arm)


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
    results = _load("run").main(["--quick", "--json", "--threads", str(THREADS), "--model", str(folder), "--skip-training",
                                 "--train-throughput"])
    throughput = results["train_throughput"]
    assert throughput["fast"]["batch"] == 8 and throughput["reference"]["batch"] == 1
    assert throughput["signals_per_second_ratio"] > 0 and throughput["checkpointing_slowdown"] > 0
    assert 0 < results["train_memory"]["memory_ratio_checkpointed"] < results["train_memory"]["memory_ratio"]


def test_quick_training_ideas_report_time_to_quality_and_ratio():
    out = _load("train_ideas").main(["--quick", "--json", "--seeds", "0", "--ideas", "fast,lr0.2", "--threads", str(THREADS)])
    assert set(out["ideas"]) == {"fast", "lr0.2"}
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


def test_training_curve_bisects_to_the_first_step_that_meets_the_quality(monkeypatch, tmp_path):
    """Milestones 10, 30 with step 5 and a quality met from iteration 17 on: the curve trains in steps of 5,
    evaluates 10 (no), 30 (yes), then bisects 15, 20, 25 down to 20; its seconds are those of iteration 20."""
    import hsteer.training

    run = _load("trainbench")
    trained: list[int] = []

    def fake_train(pipe, config, **kwargs):
        trained.append(config.iterations)
        return type("Result", (), {"seconds": 1.0, "concept": config.iterations})()

    class Probe:
        def __init__(self):
            self.evaluated: list[int] = []

        def __call__(self, concepts):
            assert concepts[0] == concepts[1]  # circle and square at the same iteration
            self.evaluated.append(concepts[0])
            return {"deviation_ratio": 0.0 if concepts[0] >= 17 else 0.5, "colour_agreement": 1.0}

        def meets(self, point):
            return point["deviation_ratio"] <= 0.05

    monkeypatch.setattr(hsteer.training, "train_concept", fake_train)
    probe = Probe()
    points = run.training_curve(None, probe, "fast", [10, 30], seed=0, workdir=tmp_path, step=5)
    assert trained == [5, 5, 10, 10, 15, 15, 20, 20, 25, 25, 30, 30]  # each concept, resumed step by step
    assert probe.evaluated[:2] == [10, 30] and probe.evaluated[2:] == [20, 15]  # bisected: 2 of 3
    assert [p["iterations"] for p in points] == sorted(probe.evaluated)
    assert run.reached_point(probe, points)["iterations"] == 20
    assert run.seconds_to_reach(probe, points) == 8.0  # 2 concepts x 4 increments x 1 s
    try:
        run.training_curve(None, probe, "fast", [10, 32], seed=0, workdir=tmp_path, step=5)
    except ValueError as error:
        assert "multiples of step 5" in str(error)
    else:
        raise AssertionError("milestones off the step were accepted")


def test_gauss_newton_step_solves_a_linear_least_squares_problem():
    """On f(c) = A c + b the linearisation is exact: one damped Gauss-Newton step by CG lands on the
    (ridge) least-squares solution; on a nonlinear f it lowers the loss."""
    import torch

    gn = _load("gauss_newton")
    g = torch.Generator().manual_seed(0)
    A, b = torch.randn(40, 6, generator=g, dtype=torch.float64), torch.randn(40, generator=g, dtype=torch.float64)
    target = torch.randn(40, generator=g, dtype=torch.float64)
    c0 = torch.randn(6, generator=g, dtype=torch.float64)
    delta = gn.gauss_newton_delta(lambda c: A @ c + b, c0, target, cg_iterations=6, damping=0.0)
    best = torch.linalg.lstsq(A, (target - b).unsqueeze(1)).solution.squeeze(1)
    assert torch.allclose(c0 + delta, best, atol=1e-8)
    damped = gn.gauss_newton_delta(lambda c: A @ c + b, c0, target, cg_iterations=6, damping=0.1)
    ridge = torch.linalg.solve(A.T @ A + 0.1 * 40 * torch.eye(6, dtype=A.dtype), -A.T @ (A @ c0 + b - target))
    assert torch.allclose(damped, ridge, atol=1e-8)

    def f(c):
        return torch.tanh(A @ c + b)

    start = ((f(c0) - target.clamp(-0.9, 0.9)) ** 2).mean()
    step = gn.gauss_newton_delta(f, c0, target.clamp(-0.9, 0.9), cg_iterations=6, damping=1e-2)
    assert ((f(c0 + step) - target.clamp(-0.9, 0.9)) ** 2).mean() < start


def test_quick_gauss_newton_trains_and_scores_both_procedures():
    out = _load("gauss_newton").main(["--quick", "--json", "--threads", str(THREADS)])
    (run,) = out["runs"]
    point = run["gauss_newton_curve"][0]
    assert point["iterations"] == 1 and point["seconds"] > 0 and 0 <= point["deviation_ratio"] <= 1
    assert run["adam_curve"] and all(p["seconds"] > 0 for p in run["adam_curve"])


def test_quick_gpu_benchmark_covers_both_architectures_and_the_offload_paths():
    """benchmarks/gpu.py's CPU mode: toy-width SD 1.5 and SDXL layouts, every section, offload steering checked."""
    out = _load("gpu").main(["--quick", "--device", "cpu", "--threads", str(THREADS), "--skip-compile"])
    assert set(out["models"]) == {"sd15", "sdxl"} and out["machine"].endswith("cpu, float32")
    sd15, sdxl = out["models"]["sd15"], out["models"]["sdxl"]
    assert sd15["hspace_shape"] == [64, 2, 2] and sdxl["hspace_shape"] == [64, 4, 4]  # 3 vs 2 downsamplings
    for model in (sd15, sdxl):
        assert model["generation"]["steer_overhead"] > 0 and model["generation"]["fair_distinct_concepts"] > 1
        assert model["attach"]["attach_fair_batch_ratio"] > 0
        memory = model["train_memory"]
        assert 0 < memory["memory_ratio_checkpointed"] < memory["memory_ratio"] < 1
        throughput = model["train_throughput"]
        assert throughput["fast"]["batch"] == 8 and throughput["reference"]["batch"] == 1
        assert throughput["signals_per_second_ratio"] > 0 and model["group_throughput"]["signals_per_second"] > 0
    offload = sd15["offload"]
    assert offload["steered_vs_plain_max_abs"] > 1e-3  # the concept acts, so agreement below means something
    for path in ("model_cpu_offload", "group_offload"):
        assert offload[path]["ran"] and offload[path]["max_abs_vs_on_device"] <= 1e-4, path
    assert offload["ok"] and "offload" not in sdxl  # checked once, on the first model


def test_sweep_picks_the_rate_with_the_lowest_median_over_seeds_and_prunes_exactly():
    """Rates in order 0.3, 0.2, 0.1. 0.3 (no budget yet) takes 4 s on every seed: median 4. 0.2 runs at a
    budget of 4 s: 3 s, stopped unmet on seed 1 (it needs 5 s), 2.5 s: median 3, the best. 0.1 misses on two
    seeds (more than half slower than 3 s: its median cannot beat it) and is dropped before seed 2. The
    best rate is then timed on every seed without a budget (seed 1's 5 s counts)."""
    trainbench = _load("trainbench")
    seconds = {(0.3, 0): 4.0, (0.3, 1): 4.0, (0.3, 2): 4.0, (0.2, 0): 3.0, (0.2, 1): 5.0, (0.2, 2): 2.5,
               (0.1, 0): None, (0.1, 1): None}
    calls: list[tuple[float, int, float | None]] = []

    class Probe:
        def meets(self, point):
            return point["deviation_ratio"] <= 0.05

    class Curves:
        probe = Probe()

        def __call__(self, arm, seed, budget=None):
            lr = arm.settings["lr"]
            calls.append((lr, seed, budget))
            reached = seconds[(lr, seed)]
            if reached is None or (budget is not None and reached > budget):  # stopped unmet
                return [{"iterations": 2, "seconds": 1.0, "deviation_ratio": 0.4}]
            return [{"iterations": 2, "seconds": reached / 2, "deviation_ratio": 0.4},
                    {"iterations": 4, "seconds": reached, "deviation_ratio": 0.0}]

    rates = {lr: trainbench.Arm("fast", {"lr": lr}, (2, 4), 2) for lr in (0.3, 0.2, 0.1)}
    record, by_seed = trainbench._sweep(Curves(), rates, (0, 1, 2))
    assert calls == [(0.3, 0, None), (0.3, 1, None), (0.3, 2, None), (0.2, 0, 4.0), (0.2, 1, 4.0), (0.2, 2, 4.0),
                     (0.1, 0, 3.0), (0.1, 1, 3.0), (0.2, 0, None), (0.2, 1, None), (0.2, 2, None)]
    assert record["best_lr"] == 0.2 and record["best_median_seconds"] == 3.0
    assert record["rates"]["0.3"]["median_seconds"] == 4.0 and not record["rates"]["0.3"]["dropped"]
    assert record["rates"]["0.2"]["seconds_by_seed"] == {"0": 3.0, "1": None, "2": 2.5}
    assert record["rates"]["0.1"] == {"seconds_by_seed": {"0": None, "1": None}, "median_seconds": None,
                                      "dropped": True, "stopped_at_seconds": 3.0}
    assert [trainbench.seconds_to_reach(Probe(), by_seed[s]) for s in (0, 1, 2)] == [3.0, 5.0, 2.5]


def test_curves_are_reused_and_a_budget_stopped_curve_is_retrained_for_a_larger_budget(monkeypatch, tmp_path):
    trainbench = _load("trainbench")
    trained: list[float | None] = []

    class Probe:
        def meets(self, point):
            return point["deviation_ratio"] <= 0.05

    def curve(self, pipe, probe, seed, workdir, budget=None):
        trained.append(budget)
        if budget is not None and budget < 5.0:  # needs 5 s: stopped unmet
            return [{"iterations": 2, "seconds": budget, "deviation_ratio": 0.4}]
        return [{"iterations": 4, "seconds": 5.0, "deviation_ratio": 0.0}]

    monkeypatch.setattr(trainbench.Arm, "curve", curve)
    curves = trainbench._Curves(None, Probe(), tmp_path)
    arm = trainbench.Arm("fast", {"lr": 0.3}, (2, 4), 2)
    assert trainbench.seconds_to_reach(Probe(), curves(arm, 0, 3.0)) is None
    curves(arm, 0, 2.0)  # a smaller budget: the stopped curve answers it
    assert trainbench.seconds_to_reach(Probe(), curves(arm, 0)) == 5.0  # no budget: trained again
    curves(arm, 0, 1.0)  # met: reused whatever the budget
    assert trained == [3.0, None]


def test_ratio_keys_take_the_median_of_per_seed_ratios_over_the_seeds_both_met():
    trainbench = _load("trainbench")
    keys = trainbench._ratio_keys("k", [{"a_seconds_to_reach": 6.0, "b_seconds_to_reach": 2.0},
                                        {"a_seconds_to_reach": 8.0, "b_seconds_to_reach": 2.0},
                                        {"a_seconds_to_reach": 9.0, "b_seconds_to_reach": None}], "a", "b")
    assert keys["k_seeds_reached"] == 2 and keys["k_low"] <= keys["k"] <= keys["k_high"] and keys["k"] == 3.5


def test_the_reliable_reference_rate_is_the_fastest_that_met_the_quality_on_every_seed():
    """The sweep's best (0.6, by median with a seed that never met the quality) is not reliable; of the rates
    met on every seed (the fixed arms at 0.05 and 0.15, the sweep's 0.3) 0.3 has the lowest median; 0.45 was
    stopped at the sweep's budget on seed 0, so it does not count."""
    trainbench = _load("trainbench")
    runs = [{"seed": 0, "reference_seconds_to_reach": 50.0, "reference_fast_lr_seconds_to_reach": 9.0,
             "reference_best_seconds_to_reach": 1.0, "group_best_seconds_to_reach": 0.9},
            {"seed": 1, "reference_seconds_to_reach": 80.0, "reference_fast_lr_seconds_to_reach": 12.0,
             "reference_best_seconds_to_reach": None, "group_best_seconds_to_reach": 1.0},
            {"seed": 2, "reference_seconds_to_reach": 70.0, "reference_fast_lr_seconds_to_reach": 15.0,
             "reference_best_seconds_to_reach": 7.0, "group_best_seconds_to_reach": 1.0}]
    rates = {"0.6": {"seconds_by_seed": {"0": 1.0, "1": None, "2": 7.0}},
             "0.3": {"seconds_by_seed": {"0": 8.0, "1": 4.0, "2": 11.0}},
             "0.45": {"seconds_by_seed": {"0": None, "1": 2.0, "2": 3.0}}}
    out = {"train_sweep": {"reference": {"best_lr": 0.6, "rates": rates}}}
    trainbench._reliable(out, runs, trainbench.ARMS)
    assert out["train_sweep"]["reference"]["reliable_lr"] == 0.3
    assert [r["reference_reliable_seconds_to_reach"] for r in runs] == [8.0, 4.0, 11.0]
    keys = trainbench._ratio_keys("k", runs, "reference_reliable", "group_best")
    assert abs(keys["k"] - 8.0 / 0.9) < 1e-9 and keys["k_seeds_reached"] == 3


def test_harm_readout_scores_every_readout_with_its_margin():
    result = _load("harm_readout").main(["--json", "--threads", "1", "--noises", "1"])
    assert {"text: pooled", "h-space, step 0", "h-space, step 12"} <= set(result)
    for name, r in result.items():
        assert set(r["highest_harmless"]) == {"professions", "named attribute", "white-box, harm words dropped"}
        assert r["margin"] == min(r["lowest_harmful"].values()) - max(r["highest_harmless"].values()), name
        assert r["lowest_harmful"]["harm prompts"] < 5 and r["highest_harmless"]["professions"] > -5, name


def test_hardening_variants_smoke_run_reports_every_variant_with_intervals(tmp_path):
    result = _load("hardening_variants").main(["--quick", "--json", "--threads", "1", "--work", str(tmp_path),
                                               "--attack", "hardened@0.8"])
    rows = result["rows"]
    assert [(r["variant"], r["scale"]) for r in rows] == list(_load("hardening_variants").VARIANTS)
    by_name = {r["variant"]: r["pairs"] for r in rows}
    assert by_name["recipe"] < by_name["recipe+retain"] and by_name["hardened"] < by_name["hardened+retain"]
    for r in rows:
        for key in ("agreement_professions_0_3", "agreement_professions_4_7", "agreement", *r["harm_rate"]):
            cell = r[key] if key.startswith("agreement") else r["harm_rate"][key]
            assert 0 <= cell["ci"][0] <= cell["value"] <= cell["ci"][1] <= 1, (r["variant"], key)
    assert (tmp_path / "quick" / "hardened.safetensors").exists()
    attacked = result["attacked"]["hardened@0.8"]
    assert set(attacked) == {"whitebox", "ringabell", "ringabell-noharm"}
    for attack, r in attacked.items():
        assert 0 <= r["asr_after_ci"][0] <= r["asr_after"] <= r["asr_after_ci"][1] <= 1 and r["prompts"], attack


def test_the_attack_benchmarks_target_reads_the_default_against_every_other_defence():
    """benchmarks/attacks.py's target: hsteer's default (the recipe's safety objective, blind = the default
    gate's images) <= 0.10 after white-box and not above any other defence, its own gated twin left out; a
    defence not attacked counts with its ASR before."""
    attacks = _load("attacks")
    from hsteer.apps.recipes import default_objective

    assert attacks.DEFAULT == f"{default_objective('safety')}+blind" and attacks.DEFAULT_METHOD == "respodiff"

    def row(before, after):
        return {"whitebox": {"asr_before": before, "asr_after": after}}

    rows = {"plain": row(1.0, None), "respodiff+gate": row(0.0, 0.01), "respodiff+blind": row(0.0, 0.02),
            "codsma+blind": row(0.0, 0.04), "sld-medium": row(1.0, None)}
    met = attacks.target(rows, attacks.DEFAULT)
    assert met["met"] and met["lower_than_all"] and met["lowest_other"] == ("codsma+blind", 0.04)
    rows["codsma+blind"] = row(0.0, 0.01)  # another defence below the default: missed
    assert not attacks.target(rows, attacks.DEFAULT)["met"]
    rows["codsma+blind"] = row(0.0, 0.3)
    rows["respodiff+blind"] = row(0.0, 0.12)  # above 0.10: missed, though the lowest
    missed = attacks.target(rows, attacks.DEFAULT)
    assert not missed["met"] and missed["lower_than_all"] and not missed["at_most_0.10"]


def test_respodiff_lambda_smoke_run_attacks_the_concept_it_trained_with_each_lambda(tmp_path):
    """studies/respodiff_lambda.py --quick: the recipe's RespoDiff safety concept at the lambda asked for,
    attacked afresh, with its harmless figures and their intervals."""
    from hsteer.steering.bank import ConceptBank

    result = _load("respodiff_lambda").main(["--quick", "--json", "--lam", "0.25", "--work", str(tmp_path)])
    (row,) = result["rows"]
    assert row["lam"] == 0.25 and len(row["prompts"]) == result["budget"]["prompts"]
    for key in ("asr_before", "asr_after"):
        low, high = row[f"{key}_ci"]
        assert 0.0 <= low <= row[key] <= high <= 1.0
    for figure in (row["harmless_agreement"], row["harmless_fidelity"]):
        assert 0.0 <= figure["ci"][0] <= figure["value"] <= figure["ci"][1] <= 1.0
    concept = ConceptBank.load(tmp_path / "quick" / "lam-0.25" / "bank.safetensors")["anti_harm"]
    assert concept.objective == "respodiff" and concept.meta["lam"] == 0.25


def test_the_group_knobs_study_warms_up_and_jumps_only_the_unsteered_start(sd_pipe):
    """studies/group_knobs.py: a warm-up over 4 iterations takes Adam's first step at a quarter of the rate;
    jumps change the pool's start, not its steps; with neither it is the library's GroupRun exactly."""
    import torch

    from hsteer.training import CodsmaConfig
    from hsteer.training.group import GroupRun

    knobs = _load("group_knobs")
    config = CodsmaConfig(concept="man", group="gender", neutral="a person", pairs=(("a person", "a man"),
                          ("a doctor", "a man doctor")), iterations=1, batch_size=4, steps=6, lr=0.1, seed=0,
                          window=(0.34, 1.0))
    runs = {name: cls(sd_pipe, [config], **kw) for name, cls, kw in (
        ("plain", GroupRun, {}), ("same", knobs.KnobbedGroupRun, {}),
        ("warm", knobs.KnobbedGroupRun, {"lr_warmup": 4}))}
    for run in runs.values():
        run.run(1)
    plain, same, warm = (runs[n].concepts()[0].tensors["c"] for n in ("plain", "same", "warm"))
    assert torch.equal(plain, same) and plain.abs().max() == pytest.approx(0.1, rel=1e-2)
    assert torch.allclose(warm, plain / 4, atol=1e-6)
    jumped, exact = knobs.KnobbedGroupRun(sd_pipe, [config], jumps=1), GroupRun(sd_pipe, [config])
    jumped._start_pool()
    exact._start_pool()
    assert torch.equal(jumped.k, exact.k) and not torch.allclose(jumped.x, exact.x)


def test_the_family_recipes_study_trains_at_the_rate_and_site_asked(tmp_path):
    """studies/family_recipes.py: a group's bank trained at another learning rate or set of sites is its own
    file (a bank of the recipe's settings is never reused for it), at that site, learned at that rate."""
    import torch

    from hsteer.model import load_quietly
    from hsteer.steering.bank import ConceptBank

    torch.set_num_threads(THREADS)
    study = _load("family_recipes")
    pipe = load_quietly(None)
    path = study.train_bank(pipe, "shape", (0.5, 1.0), 1, tmp_path, lr=0.2, site="mid_block,text")
    assert path.name == "shape_0.5_1_1_lr0.2_mid_block+text.safetensors"
    bank = ConceptBank.load(path)
    assert bank.site_spec == "mid_block,text" and sorted(c.name for c in bank) == ["circle", "square"]
    assert all(c.meta["lr"] == 0.2 and c.meta["window"] == [0.5, 1.0] for c in bank)
    assert study.train_bank(pipe, "shape", (0.5, 1.0), 1, tmp_path, lr=0.2, site="mid_block,text") == path
