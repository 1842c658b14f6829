"""`hsteer compare`'s table: the untargeted columns with their intervals (no model needed)."""

from hsteer.apps.compare import OBJECTIVE_SETTINGS, results_table


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
