"""`hsteer compare`'s table: the untargeted columns with their intervals (no model needed), and the row of
safety under the image-aware guard (a tiny run on the bundled model)."""

import functools
import json
from dataclasses import replace
from pathlib import Path

import pytest

from hsteer.apps.compare import GUARDED, OBJECTIVE_SETTINGS, SETTINGS, results_table
from hsteer.evaluation.leakage import fmt_ci
from hsteer.steering.bank import ConceptBank
from hsteer.world.evaluate import HARM_PROMPTS
from hsteer.world.scene import PROFESSIONS


def _entry(target, untargeted):
    return {"deviation_ratio": {"shape": 0.1, "colour": 0.8}, "deviation_ratio_ci": {"shape": [0.05, 0.2],
                                                                                    "colour": [0.7, 0.9]},
            "deviation_ratio_target": target, "deviation_ratio_target_ci": [0.05, 0.2] if target else None,
            "fidelity": 0.99, "fidelity_ci": [0.98, 1.0], "harm_rate": 0.9, "untargeted": untargeted,
            "train_seconds": 12.0}


def test_results_table_has_untargeted_columns_with_intervals():
    colour = {"agreement": 0.5, "agreement_ci": [0.42, 0.58], "deviation_ratio": 0.4,
              "deviation_ratio_change": 0.21, "deviation_ratio_change_ci": [0.1, 0.3]}
    prof = {"agreement": 1.0, "agreement_ci": [1.0, 1.0], "fidelity": 1.0, "fidelity_change": 0.0,
            "fidelity_change_ci": [0.0, 0.0]}
    result = {"settings": {"iterations": 150, "images_per_prompt": 24, "harm_images_per_prompt": 10, "seed": 0,
                           "objectives": OBJECTIVE_SETTINGS},
              "results": {"codsma": {"shape": _entry(0.1, {"colour": colour, "profession": prof})},
                          "sd": {"shape": {**_entry(0.8, {}), "untargeted": {}}}}}
    table = results_table(result)
    assert "| untargeted agreement | untargeted DevRat change |" in table
    assert ("| codsma | shape | 0.100 [0.050, 0.200] | 0.990 [0.980, 1.000] | colour 0.50 [0.42, 0.58]; "
            "profession 1.00 [1.00, 1.00] | colour 0.21 [0.10, 0.30]; profession fidelity 0.00 [0.00, 0.00] |") in table
    assert "| sd | shape | 0.800 [0.050, 0.200] | 0.990 [0.980, 1.000] | - | - |" in table
    old = {**result, "results": {"codsma": {"shape": {k: v for k, v in _entry(0.1, {}).items()
                                                      if not k.endswith("_ci") and k != "untargeted"}}}}
    assert "| codsma | shape | 0.100 | 0.990 | - | - | 0.900 | 12 |" in results_table(old)  # an older compare.json


def test_results_table_names_the_model_it_was_run_on():
    settings = {"iterations": 150, "images_per_prompt": 24, "harm_images_per_prompt": 10, "seed": 0}
    result = {"settings": settings, "results": {}}
    assert results_table(result).startswith("Bundled model, ")
    result["settings"] = {**settings, "model": "/models/world-dit"}
    assert results_table(result).startswith("Model /models/world-dit, ")


@pytest.fixture(scope="module")
def guarded_runs(tmp_path_factory):
    """Two tiny `run_compare`s into one folder on the bundled model (8 steps, one image per prompt, the world's
    concepts as random directions instead of trained ones, the detector fitted on 2 images per prompt): plain SD
    and CoDSMa with the guard, then CoDSMa with `guard=False` on the bank (and detector) the first one left."""
    from test_gate import _world_bank

    from hsteer.apps import compare, demo
    from hsteer.generation.guard_fit import DetectorFitConfig

    def train(pipe, train, bank_path, **_):
        if not Path(bank_path).exists():
            _world_bank(pipe).save(bank_path)

    out = tmp_path_factory.mktemp("compare")
    config = compare.CompareConfig(out=out, iterations=1, images_per_prompt=1, harm_images_per_prompt=1,
                                   methods=("sd", "codsma"), gate_images_per_prompt=0,
                                   held_out_images_per_prompt=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compare, "train_into_bank", train)
        patch.setattr(compare, "sampling_defaults", lambda model: {"steps": 8, "guidance": 4.0})
        patch.setattr(demo, "DetectorFitConfig", functools.partial(DetectorFitConfig, images_per_prompt=2))
        guarded = compare.run_compare(config, log=lambda message: None)
        written = json.loads((out / "compare.json").read_text()), (out / "results.md").read_text()
        unguarded = compare.run_compare(replace(config, methods=("codsma",), guard=False), log=lambda message: None)
    return out, written, guarded, unguarded


def test_compare_measures_safety_under_the_guard_for_each_trained_method(guarded_runs):
    """The guarded row: in compare.json and results.md for the trained method, not for plain SD; the shares
    the detector flagged, with intervals, on every harmless and harm image; the detector's fit as its seconds."""
    _, (written, table), result, _ = guarded_runs
    assert written["settings"]["guard"] is True
    assert list(written["results"]["codsma"]) == [*SETTINGS, GUARDED]
    assert list(written["results"]["sd"]) == list(SETTINGS)
    row, safety = written["results"]["codsma"][GUARDED], written["results"]["codsma"]["safety"]
    flagged = row["guard_flagged"]
    assert set(flagged) == {"bias", "harm"}
    assert flagged["bias"]["n"] == len(PROFESSIONS) and flagged["harm"]["n"] == len(HARM_PROMPTS)
    for share in flagged.values():
        assert 0.0 <= share["ci"][0] <= share["value"] <= share["ci"][1] <= 1.0
    assert flagged["harm"]["value"] > flagged["bias"]["value"], flagged  # the detector tells harm apart
    assert row["deviation_ratio_target"] is None and row["train_seconds"] > 0.0 and 0.0 <= row["harm_rate"] <= 1.0
    assert set(row["untargeted"]) == set(safety["untargeted"]) == {"shape", "colour", "profession"}
    assert "guard_flagged" not in safety
    assert table == results_table(result)
    assert "| training s | guard flagged, harmless / harm |" in table and "Safety, guarded: " in table
    lines = [line for line in table.splitlines() if line.startswith("| codsma | safety, guarded |")]
    assert len(lines) == 1 and lines[0].endswith(
        f"| {fmt_ci(flagged['bias']['value'], flagged['bias']['ci'], 2)} / "
        f"{fmt_ci(flagged['harm']['value'], flagged['harm']['ci'], 2)} |")
    assert "| sd | safety, guarded |" not in table
    assert all(line.endswith(" - |") for line in table.splitlines() if line.startswith("| sd | "))


def test_compare_without_the_guard_has_no_guarded_row(guarded_runs):
    """`guard=False` leaves the guarded row out even where the bank holds a detector (the first run fitted it)."""
    out, _, _, unguarded = guarded_runs
    assert "safety" in ConceptBank.load(out / "codsma.safetensors").detectors
    assert unguarded["settings"]["guard"] is False
    assert list(json.loads((out / "compare.json").read_text())["results"]["codsma"]) == list(SETTINGS)
    table = (out / "results.md").read_text()
    assert "| codsma | safety |" in table
    assert "safety, guarded" not in table and "guard flagged" not in table and "Safety, guarded" not in table


def test_the_compare_command_takes_guard_and_no_guard(monkeypatch, tmp_path):
    """`hsteer compare` passes --guard (the default) and --no-guard on to `CompareConfig.guard`."""
    from click.testing import CliRunner

    from hsteer.apps import compare
    from hsteer.cli.main import main

    seen = []

    def run(config, log):
        seen.append(config.guard)
        return {"settings": {"iterations": 1, "images_per_prompt": 1, "harm_images_per_prompt": 1, "seed": 0},
                "results": {}}

    monkeypatch.setattr(compare, "run_compare", run)
    for flags in ([], ["--guard"], ["--no-guard"]):
        outcome = CliRunner().invoke(main, ["compare", "--out", str(tmp_path / "c"), *flags])
        assert outcome.exit_code == 0, outcome.output
    assert seen == [True, True, False]
    assert "--guard / --no-guard" in CliRunner().invoke(main, ["compare", "--help"]).output
