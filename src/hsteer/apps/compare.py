"""`hsteer compare`: SD, SDisc, CoDSMa and RespoDiff on the bundled model, one command, fixed seeds.

For each method: the shape group, the colour group, both composed (fair generation over two groups),
and safety; reported as mean deviation ratio, profession fidelity, harm rate and training wall time. With a
bank, safety also under the image-aware guard (`safety, guarded`: the bank's learned harm detector decides per
image, as `hsteer demo` measures it), with the share of harmless and harm images it flagged.
Then each method's bank on prompts that name an attribute, blind against the prompt-aware gate
(`hsteer.world.gate_eval`): the same figures `hsteer demo` reports, so that methods compare there too.
The table it writes is pasted into the README as is (`--readme README.md` does it).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from hsteer.apps.demo import check_app_settings, fit_guard_detector
from hsteer.checks import check_count
from hsteer.errors import HsteerError, as_field
from hsteer.fileio import atomic_write_text
from hsteer.steering.bank import ConceptBank
from hsteer.apps.recipes import METHOD_SETTINGS, OBJECTIVE_SETTINGS, WORLD_CONCEPTS, pipeline_recipe, world_train_config
from hsteer.evaluation.leakage import fmt_ci
from hsteer.evaluation.metrics import wilson_interval
from hsteer.generation.guard import GuardConfig
from hsteer.world.evaluate import WorldEvalConfig, evaluate_world
from hsteer.world.gate_eval import GATE_TABLE_HEAD, GateEvalConfig, evaluate_gate, gate_rows
from hsteer.world.held_out import HELD_OUT_HEAD, HeldOutConfig, evaluate_held_out, held_out_rows
from hsteer.gate import DEFAULT_GATE
from hsteer.policies import FairPolicy, PlainPolicy, SafePolicy
from hsteer.model import load_pipeline, sampling_defaults
from hsteer.training import METHODS as TRAINING_METHODS
from hsteer.training import SdiscConfig, TrainConfig, train_into_bank

#: Plain SD (no concepts), then the registered methods: published baselines first, then hsteer's.
PLAIN = "sd"
METHODS = (PLAIN, *(m.name for m in TRAINING_METHODS if m.baseline),
           *(m.name for m in TRAINING_METHODS if not m.baseline))
SETTINGS = ("shape", "colour", "shape+colour", "safety")
#: Safety under the image-aware guard: measured for each method with a bank (`CompareConfig.guard`).
GUARDED = "safety, guarded"
#: The key `fit_guard_detector` times the detector's fit under.
DETECTOR_SECONDS = "guard_detector"


@dataclass
class CompareConfig:
    out: Path = Path("hsteer-compare")
    model: str | None = None
    iterations: int = 150
    images_per_prompt: int = 24
    harm_images_per_prompt: int = 10
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    respect_prompt: bool = True  # the main table under the prompt-aware gate (False: the papers' blind steering)
    gate_images_per_prompt: int = 8  # the explicit-prompt table, blind against the gate; 0 skips it
    held_out_images_per_prompt: int = 6  # fair steering on the held-out templates (a multiple of 6); 0 skips it
    guard: bool = True  # also safety under the image-aware guard (fits the bank's harm detector where it has none)


def method_configs(method: str, config: CompareConfig, family: str = "unet") -> list[TrainConfig]:
    """The world's concepts learned with `method`, with the recipe of the model's `family`."""
    return [world_train_config(name, config.iterations, config.seed, objective=method, family=family)
            for name, *_ in WORLD_CONCEPTS]


def run_compare(config: CompareConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compare the training methods on the world model: train each method's bank, measure it in every
    setting against plain generation (and, where asked, on prompts that name an attribute and on held-out
    templates), write compare.json and results.md; returns the result. Refuses a held-out count that is
    not whole blocks of 6 fair draws."""
    check_app_settings(config.out, config.iterations, config.images_per_prompt, config.seed)
    as_field("harm_images_per_prompt", check_count, config.harm_images_per_prompt, 1, 10**6)
    as_field("gate_images_per_prompt", check_count, config.gate_images_per_prompt, 0, 10**6)
    check_count("held_out_images_per_prompt", config.held_out_images_per_prompt, 0, 10**6)
    if config.held_out_images_per_prompt % 6:
        raise HsteerError("held_out_images_per_prompt must be a multiple of 6 (whole blocks of fair draws)")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(config.model)
    sampling = sampling_defaults(config.model)
    eval_config = WorldEvalConfig(templates=("a photo of a {}",), images_per_prompt=config.images_per_prompt,
                                  harm_images_per_prompt=config.harm_images_per_prompt, seed=config.seed,
                                  steps=int(sampling["steps"]), guidance=float(sampling["guidance"]))
    plain = evaluate_world(pipe, eval_config, policy=PlainPolicy(), progress=False)
    rows: dict[str, dict[str, Any]] = {}
    gated: dict[str, dict[str, Any]] = {}
    held_out: dict[str, dict[str, Any]] = {}
    for method in config.methods:
        bank, train_seconds = _method_bank(pipe, method, config, sampling, log)
        guarded = config.guard and bank is not None and "safety" in bank.detectors
        rows[method] = {}
        for setting in SETTINGS + ((GUARDED,) if guarded else ()):
            rows[method][setting] = entry = _measure(pipe, eval_config, bank, method, setting, plain, train_seconds,
                                                     config.respect_prompt)
            log(f"  {method:9s} {setting:15s} DR {entry['deviation_ratio_target'] or 0:.3f} "
                f"fidelity {entry['fidelity']:.3f} harm {entry['harm_rate']:.3f}")
        if bank is not None and config.gate_images_per_prompt:
            gate_config = GateEvalConfig(images_per_prompt=config.gate_images_per_prompt, seed=config.seed,
                                         steps=eval_config.steps, guidance=eval_config.guidance)
            gated[method] = evaluate_gate(pipe, bank, gate_config, settings={
                "blind": (False, None), DEFAULT_GATE: (True, DEFAULT_GATE)})
            log(f"  {method}: measured on prompts that name an attribute")
        if bank is not None and config.held_out_images_per_prompt:
            held_out[method] = evaluate_held_out(pipe, bank, eval_config, HeldOutConfig(
                images_per_prompt=config.held_out_images_per_prompt), respect_prompt=config.respect_prompt)
            log(f"  {method}: measured on the held-out templates")
    result = {"settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
                           "eval": asdict(eval_config), "objectives": OBJECTIVE_SETTINGS},
              "results": rows, "respect_prompt": gated, "held_out": held_out}
    atomic_write_text(out / "compare.json", json.dumps(result, indent=2))
    table = results_table(result)
    atomic_write_text(out / "results.md", table)
    return result


def _method_bank(pipe, method: str, config: CompareConfig, sampling: dict[str, Any],
                 log: Callable[[str], None]) -> tuple[ConceptBank | None, dict[str, float]]:
    """`method`'s bank of the world's concepts (None for plain SD) and the seconds spent per group: trained into
    `config.out` (resuming a bank there), then, with `config.guard`, the safety group's harm detector fitted
    the way the demo fits it where the bank has none (timed under `DETECTOR_SECONDS`), so the guarded row
    measures the guard each method's bank would ship with."""
    if method == PLAIN:
        return None, {}
    bank_path = Path(config.out) / f"{method}.safetensors"
    family, recipe = pipeline_recipe(pipe)
    train_seconds: dict[str, float] = {}
    for train in method_configs(method, config, family):
        began = time.perf_counter()
        train_into_bank(pipe, train, bank_path, resume=True, checkpoint_every=50, progress=False)
        train_seconds[train.group] = train_seconds.get(train.group, 0.0) + time.perf_counter() - began
        log(f"  {method}: trained {train.group}/{train.concept}")
    bank = ConceptBank.load(bank_path)
    if config.guard and "safety" not in bank.detectors:
        fit_guard_detector(pipe, bank, bank_path, recipe, sampling, train_seconds, log)
    return bank, train_seconds


def _measure(pipe, eval_config: WorldEvalConfig, bank, method: str, setting: str, plain,
             train_seconds: dict[str, float], respect_prompt: bool = True) -> dict[str, Any]:
    """One (method, setting) cell: targeted deviation ratio, fidelity, harm rate, untargeted attributes vs plain.

    Safety steers the harmless prompts too, so that what it does to shape, colour and profession shows; the
    guarded setting does it through the guard (the safety concept only on the images whose x0-hat the bank's
    detector flags), so its untargeted cells show what the guard spares, and its flagged shares why.
    """
    guarded = setting == GUARDED
    groups = ("safety",) if guarded else tuple(setting.split("+"))
    safety = groups == ("safety",)
    if method == PLAIN:
        s = plain.summary
    else:
        policy = SafePolicy() if safety else FairPolicy(groups)
        harm_policy = SafePolicy() if safety else PlainPolicy()
        s = evaluate_world(pipe, eval_config, bank=bank, policy=policy, harm_policy=harm_policy, progress=False,
                           baseline=plain, respect_prompt=respect_prompt,
                           guard=GuardConfig() if guarded else None).summary
    dr, ci = s["deviation_ratio"]["mean_biased"], s["deviation_ratio_ci"]["mean_biased"]
    single = setting in ("shape", "colour")
    entry = {"deviation_ratio": {g: dr[g] for g in ("shape", "colour")},
             "deviation_ratio_ci": {g: ci[g] for g in ("shape", "colour")},
             "deviation_ratio_target": (sum(dr[g] for g in groups) / len(groups) if not safety else None),
             "deviation_ratio_target_ci": ci[setting] if single else None,
             "fidelity": s["fidelity"]["mean"], "fidelity_ci": s["fidelity_ci"], "harm_rate": s["harm_rate"],
             "untargeted": s.get("untargeted", {}),
             "train_seconds": (0.0 if method == PLAIN else train_seconds.get(DETECTOR_SECONDS, 0.0) if guarded
                               else sum(train_seconds.get(g, 0.0) for g in groups))}
    if setting == "shape+colour":
        entry["joint_distribution"] = s.get("joint_distribution")
    if guarded:  # "bias": the harmless prompts' images, "harm": the harm prompts'
        entry["guard_flagged"] = {name: {**share, "ci": wilson_interval(share["value"] * share["n"], share["n"])}
                                  for name, share in s["guard_flagged"].items()}
    return entry


def _untargeted_cells(entry: dict[str, Any]) -> tuple[str, str]:
    """(agreement, deviation-ratio change) cells: each untargeted attribute with its 95% interval."""
    agree, change = [], []
    for group, e in entry.get("untargeted", {}).items():
        key = "deviation_ratio" if "deviation_ratio" in e else "fidelity"
        agree.append(f"{group} {fmt_ci(e['agreement'], e['agreement_ci'], 2)}")
        change.append(f"{group if key == 'deviation_ratio' else group + ' fidelity'} "
                      f"{fmt_ci(e[key + '_change'], e[key + '_change_ci'], 2)}")
    return "; ".join(agree) or "-", "; ".join(change) or "-"


def results_table(result: dict[str, Any]) -> str:
    """The compare results as Markdown: the settings in words, then one table row per method and setting (with
    the guard's flagged shares as a last column where a guarded row was measured)."""
    s = result["settings"]
    model = f"Model {s['model']}" if s.get("model") else "Bundled model"
    guarded = any("guard_flagged" in e for settings in result["results"].values() for e in settings.values())
    sdisc = METHOD_SETTINGS[SdiscConfig]
    lines = [f"{model}, CoDSMa/RespoDiff {s['iterations']} iterations per concept (fast mode, the leakage "
             "recipe: pairs and step windows, batch 9 for shape, 8 for colour), "
             f"SDisc {sdisc['sdisc_images']} images x {sdisc['sdisc_epochs']} "
             f"epochs; {s['images_per_prompt']} images per profession ('a photo of a <profession>'), "
             f"{s['harm_images_per_prompt']} per harm prompt, seed {s['seed']}. Deviation ratio: mean over the "
             "professions with a planted bias in that attribute (lower is better); fidelity: share of images "
             "showing the profession's pattern; harm rate: share of harm-prompt images with the harm mark. "
             "Untargeted (the attributes the setting is not for; safety is applied to the harmless prompts too): "
             "same-seed agreement with the plain image of the same seed (1 = untouched) and the change of "
             "the deviation ratio over all professions against plain (profession: of fidelity). Brackets: "
             "bootstrap 95% intervals (1000 resamples within profession and drawn concept, fixed seed). "
             + ("Steering under the prompt-aware gate (the default)." if s.get("respect_prompt")
                else "Blind steering (the papers' setting).")
             + (_GUARDED_NOTE if guarded else ""), "",
             "| method | setting | deviation ratio | fidelity | untargeted agreement | untargeted DevRat change "
             "| harm rate | training s |" + (" guard flagged, harmless / harm |" if guarded else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if guarded else "")]
    for method, settings in result["results"].items():
        lines += [_table_row(method, setting, e, guarded) for setting, e in settings.items()]
    return "\n".join(lines) + "\n" + _gate_section(result) + _held_out_section(result)


_GUARDED_NOTE = (" Safety, guarded: the image-aware guard, with the harm detector fitted into each method's bank: "
                 "the safety concept acts only on the images whose x0-hat the bank's learned detector flags at the "
                 "decision step (redrawn from the same seed with it), the others are the plain images; its "
                 "training seconds are the detector's fit, and the last column the shares of harmless and of "
                 "harm-prompt images the detector flagged (Wilson 95% intervals).")


def _table_row(method: str, setting: str, e: dict[str, Any], flagged_column: bool) -> str:
    """One Markdown row of the main table; `flagged_column`: the table has the guard's flagged shares."""
    if setting in ("safety", GUARDED):
        dr = "-"
    elif setting == "shape+colour":
        dr = f"{e['deviation_ratio']['shape']:.3f} / {e['deviation_ratio']['colour']:.3f}"
    else:
        dr = fmt_ci(e["deviation_ratio_target"], e.get("deviation_ratio_target_ci"))
    agree, change = _untargeted_cells(e)
    row = (f"| {method} | {setting} | {dr} | {fmt_ci(e['fidelity'], e.get('fidelity_ci'))} | {agree} | "
           f"{change} | {e['harm_rate']:.3f} | {e['train_seconds']:.0f} |")
    if flagged_column:
        flagged = e.get("guard_flagged")
        row += (f" {fmt_ci(flagged['bias']['value'], flagged['bias'].get('ci'), 2)} / "
                f"{fmt_ci(flagged['harm']['value'], flagged['harm'].get('ci'), 2)} |" if flagged else " - |")
    return row


def _gate_section(result: dict[str, Any]) -> str:
    """Each method's bank on prompts that name an attribute, blind against the default gate (if measured)."""
    gated = result.get("respect_prompt")
    if not gated:
        return ""
    config = next(iter(gated.values()))["config"]
    lines = ["", f"Prompts that name an attribute ('a photo of a circle nurse': every profession x every shape and "
             f"colour, {config['images_per_prompt']} images each, seed {config['seed']}), the open prompts, and "
             "safety on harm prompts phrased outside its templates and on harmless prompts: each method's bank "
             "blind (the papers' setting) and under the prompt-aware gate (`" + DEFAULT_GATE + "`, the default). "
             "Named kept: share of images showing the value the prompt names; agreement: same-seed, against "
             "plain, on shape and colour. Brackets: bootstrap 95% intervals.", "", GATE_TABLE_HEAD]
    for method, report in gated.items():
        lines += gate_rows(report, method)
    return "\n".join(lines) + "\n"


def _held_out_section(result: dict[str, Any]) -> str:
    """Each method's bank, fair over each group and both, on the held-out templates (if measured)."""
    held = result.get("held_out")
    if not held:
        return ""
    first = next(iter(held.values()))
    lines = ["", f"On held-out templates ({', '.join(repr(t) for t in first['templates'])}, every profession, "
             f"{first['images_per_prompt']} images each, seeds from {first['seed']}; phrased unlike the table's "
             "template, no recipe or test was tuned on them), under the same gate setting as the main table. "
             "Untargeted: same-seed agreement with plain; explicit prompts: the same templates naming a shape or "
             "colour. Brackets: 95% intervals (bootstrap for DevRat, Wilson for shares).", "", HELD_OUT_HEAD]
    for method, report in held.items():
        lines += held_out_rows(report, method)
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str) -> None:
    """Replace the text between the README's results markers with `table`."""
    text = readme.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    block = f"{start}\n{table}{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text += f"\n## Results on the bundled model\n\nGenerated by `hsteer compare --readme README.md`.\n\n{block}\n"
    atomic_write_text(readme, text)
