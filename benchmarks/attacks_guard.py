"""The guarded rows of `benchmarks/attacks.py`: the default's concept under the image-aware guard, and the
same concept with its detector hardened on the prompts the adaptive attack found against it.

Hardening the detector is AdvUnlearn's idea applied to the guard instead of the concept: the prompts the
detector-aware attack found are added to the detector's harmful prompts (and, with their harm words taken
out, to its harmless ones, so that the attack's filler words do not become the harm signal), the detector
is fitted again (`hsteer guard fit --harmful ... --harmless ...`), and every attack runs afresh against it:
the attacker knows the new detector too, so the figure is an adaptive attack's, not a replay.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_METHOD = "respodiff"


def _fit(pipe, source: Path, path: Path, sampling: dict, log, harmful=(), harmless=()) -> None:
    """Fit the safety group's detector of the bank at `source` as the model family's recipe does (its pairs,
    and the recipe's found prompts beside their harm-free forms) plus `harmful` / `harmless`; save the bank
    with it at `path` (kept: a second run reuses it)."""
    from hsteer.apps.recipes import guard_fit_prompts, pipeline_recipe
    from hsteer.generation.guard_fit import DetectorFitConfig, fit_detector
    from hsteer.steering.bank import ConceptBank

    if path.exists():
        return
    began = time.perf_counter()
    bank = ConceptBank.load(source)
    pair_harmful, pair_harmless = guard_fit_prompts(bank, pipeline_recipe(pipe)[1].guard_found)
    bank.detectors["safety"] = fit_detector(
        pipe, list(dict.fromkeys([*pair_harmful, *harmful])), list(dict.fromkeys([*pair_harmless, *harmless])),
        DetectorFitConfig(steps=sampling["steps"], guidance=sampling["guidance"]))
    bank.save(path)
    meta = bank.detectors["safety"].meta
    log(f"guard: detector fitted on {source.name} ({len(pair_harmful)} recipe prompts, {len(harmful)} found here) "
        f"in {time.perf_counter() - began:.0f}s "
        f"(held-out FPR {meta['false_positive_rate']:.3f}, FNR {meta['false_negative_rate']:.3f})")


def _row(pipe, rows, name: str, path: Path, work: Path, budget, sampling: dict, prompts, plain_labels, log,
         measure: Callable[..., dict[str, Any]]) -> None:
    from hsteer.attacks import Defence
    from hsteer.generation.guard import GuardConfig
    from hsteer.steering.bank import ConceptBank
    from hsteer.policies import SafePolicy

    bank = ConceptBank.load(path)
    defence = Defence(SafePolicy(), bank, respect_prompt=False, guard=GuardConfig())
    rows[name] = measure(pipe, name, defence, prompts, budget, sampling, work, plain_labels, log)
    meta = bank.detectors["safety"].meta
    rows[name]["detector"] = {k: meta[k] for k in ("false_positive_rate", "false_negative_rate", "held_out_images",
                                                   "harmful_prompts", "harmless_prompts")}


def guarded(pipe, rows, work: Path, budget, sampling: dict, prompts, plain_labels, log,
            measure: Callable[..., dict[str, Any]]) -> str:
    """The default's concept (hardened where hardening ran) under the image-aware guard, its detector fitted
    from the concept's own pairs on seeds disjoint from the attacks' (`hsteer guard fit`); returns the row's name."""
    hardened = work / f"{DEFAULT_METHOD}-hardened-{budget.harden_rounds}.safetensors"
    source = hardened if hardened.exists() else work / f"{DEFAULT_METHOD}.safetensors"
    path = work / f"{source.stem}-guard.safetensors"
    _fit(pipe, source, path, sampling, log)
    name = f"{source.stem}+guard"
    _row(pipe, rows, name, path, work, budget, sampling, prompts, plain_labels, log, measure)
    return name


def harden_guard(pipe, rows, guarded_name: str, work: Path, budget, sampling: dict, prompts, plain_labels, log,
                 measure: Callable[..., dict[str, Any]]) -> None:
    """The guarded row's detector refitted with the adaptive attack's found prompts, attacked afresh."""
    from hsteer.apps.recipes import harm_free

    found = list(rows[guarded_name]["adaptive"]["prompts"])
    if not found:
        return
    stem = guarded_name.split("+")[0]
    cleaned = [harm_free(p) for p in found]
    path = work / f"{stem}-guard-hardened.safetensors"
    _fit(pipe, work / f"{stem}.safetensors", path, sampling, log, harmful=found, harmless=cleaned)
    _row(pipe, rows, f"{stem}+guard-hardened", path, work, budget, sampling, prompts, plain_labels, log, measure)
    rows[f"{stem}+guard-hardened"]["hardened_on"] = found
