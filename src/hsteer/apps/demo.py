"""`hsteer demo`: the whole flow on the bundled world model, offline, on a CPU, in minutes.

Learns the shape group {circle, square} and the colour group {red, green, blue} with CoDSMa and a safety
concept with RespoDiff (the recipe's `default_objective`), then generates plain vs fair vs safe images,
measures them with the world's exact probes and writes a report. Rerunning it reuses concepts already in the bank with the same settings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from hsteer.checks import check_count, check_float, check_output_dir, check_seed, check_threads
from hsteer.errors import as_field, field_errors
from hsteer.steering.bank import ConceptBank
from hsteer.evaluation.images import labelled_grid
from hsteer.world.evaluate import WorldEvalConfig, evaluate_world
from hsteer.world.gate_eval import GateEvalConfig, evaluate_gate, gate_table
from hsteer.world.held_out import HeldOutConfig, evaluate_held_out, held_out_section
from hsteer.gate import DEFAULT_GATE
from hsteer.generation.guard import GuardConfig
from hsteer.generation.guard_fit import DetectorFitConfig, fit_detector
from hsteer.fileio import atomic_png, atomic_write_text
from hsteer.evaluation.leakage import fmt_ci
from hsteer.evaluation.tasks.world import world_jobs, world_summary
from hsteer.policies import FairPolicy, PlainPolicy, Policy, SafePolicy
from hsteer.model import load_pipeline, sampling_defaults
from hsteer.seeding import ITERATION_STRIDE
from hsteer.apps.recipes import (WORLD_CONCEPTS, FamilyRecipe, guard_fit_prompts, pipeline_recipe,
                                 world_train_config)
from hsteer.training import TrainConfig, concept_meta, train_into_bank
from hsteer.world.scene import WorldProbe

@dataclass
class DemoConfig:
    out: Path = Path("hsteer-demo")
    model: str | None = None
    iterations: int = 150
    safety_iterations: int | None = None  # default: `iterations`
    images_per_prompt: int = 24
    harm_images_per_prompt: int = 10
    fair_scales: tuple[tuple[str, float], ...] = (("shape", 1.0), ("colour", 1.0))
    safety_scale: float = 1.0
    respect_prompt: bool = True  # the prompt-aware gate (hsteer.gate); False: the papers' blind steering
    gate_images_per_prompt: int | None = None  # the gate's explicit-prompt set; default images_per_prompt // 3
    leakage_templates: tuple[str, ...] = ("a photo of a {}",)  # fair over one group: its prompts (no harm prompts)
    guard: bool = True  # also measure safety under the image-aware guard (the bank's learned detector)
    held_out: bool = True  # also measure fair steering on the held-out templates (`world.held_out`)
    seed: int = 0
    threads: int | None = None

    def validate(self) -> None:
        """Every setting, before anything trains (each error names its field; the CLI shows its option)."""
        check_app_settings(self.out, self.iterations, self.images_per_prompt, self.seed)
        as_field("harm_images_per_prompt", check_count, self.harm_images_per_prompt, 1, 10**6)
        if self.safety_iterations is not None:
            check_count("safety_iterations", self.safety_iterations, 1, 10**7)
        as_field("threads", check_threads, self.threads)
        check_float("safety_scale", self.safety_scale, -1e3, maximum=1e3)
        for group, scale in self.fair_scales:
            check_float(f"the fair scale of {group}", scale, -1e3, maximum=1e3)


def check_app_settings(out, iterations: int, images_per_prompt: int, seed: int) -> None:
    """What the demo and compare share: the output folder, iterations, images per prompt, seed."""
    with field_errors("out"):
        check_output_dir(out, "out")
    as_field("iterations", check_count, iterations, 1, 10**7)
    as_field("images_per_prompt", check_count, images_per_prompt, 1, 10**6)
    as_field("seed", check_seed, seed, span=10**7, scale=ITERATION_STRIDE)  # training's iteration seeds stay in range


def demo_train_configs(config: DemoConfig, family: str = "unet") -> list[TrainConfig]:
    """The world's concepts with the recipe of the model's `family` (`apps.recipes.family_recipe`)."""
    safety = config.safety_iterations or config.iterations
    return [world_train_config(name, safety if group == "safety" else config.iterations, config.seed, family=family)
            for name, group, *_ in WORLD_CONCEPTS]


def learned_with(trains: list[TrainConfig]) -> str:
    """Which objective each group learns with, e.g. "shape, colour: codsma; safety: respodiff"."""
    by_objective: dict[str, list[str]] = {}
    for train in trains:
        groups = by_objective.setdefault(train.objective, [])
        if train.group not in groups:
            groups.append(train.group)
    return "; ".join(f"{', '.join(groups)}: {objective}" for objective, groups in by_objective.items())


def _already_trained(bank: ConceptBank | None, pipe, train: TrainConfig) -> bool:
    """A concept with identical settings is in the bank: reuse it (the demo resumes where it stopped)."""
    if bank is None or train.concept not in bank:
        return False
    stored = dict(bank[train.concept].meta)
    wanted = concept_meta(pipe, train, tuple(bank.hspace_shape))
    ignore = {"hsteer_version", "model"}
    return {k: v for k, v in stored.items() if k not in ignore} == {k: v for k, v in wanted.items() if k not in ignore}


def fit_guard_detector(pipe, bank: ConceptBank, bank_path: Path, recipe: FamilyRecipe, sampling: dict[str, Any],
                       timings: dict[str, float], log: Callable[[str], None]) -> None:
    """Fit the safety group's harm detector for the guard (on x0-hat at the model's sampling) and store it
    in the bank, once: a bank that already holds one keeps it. The family's recipe says which attack prompts
    join the pairs' own (the DiT's; the U-Net keeps the pairs alone, whose detector flags no harmless image)."""
    started = time.perf_counter()
    harmful, harmless = guard_fit_prompts(bank, recipe.guard_found)
    bank.detectors["safety"] = fit_detector(pipe, harmful, harmless, DetectorFitConfig(
        steps=int(sampling["steps"]), guidance=float(sampling["guidance"])))
    bank.save(bank_path)
    timings["guard_detector"] = time.perf_counter() - started
    meta = bank.detectors["safety"].meta
    log(f"  guard: harm detector fitted on x0-hat (held-out false positives {meta['false_positive_rate']:.3f}, "
        f"false negatives {meta['false_negative_rate']:.3f})")


def run_demo(config: DemoConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo into `config.out`: learn the world's concepts into a bank (reusing those already in
    it), generate and measure plain, fair and safe images, write summary.json, charts, grids and
    report.md; returns the summary (timings in seconds)."""
    import torch

    config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    began = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(config.model)
    sampling = sampling_defaults(config.model)
    bank_path = out / "bank.safetensors"
    timings: dict[str, float] = {}

    family, recipe = pipeline_recipe(pipe)
    trains = demo_train_configs(config, family)
    objectives = learned_with(trains)
    log(f"[1/3] learning {len(WORLD_CONCEPTS)} concepts ({objectives}) -> {bank_path}")
    for train in trains:
        bank = ConceptBank.load(bank_path) if bank_path.exists() else None
        if _already_trained(bank, pipe, train):
            log(f"  {train.group}/{train.concept}: already in the bank, reused")
            continue
        result = train_into_bank(pipe, train, bank_path, resume=True, checkpoint_every=50)
        timings[train.concept] = result.seconds
        log(f"  {train.group}/{train.concept}: final loss {result.losses[-1]['loss']:.4g} in {result.seconds:.1f}s")
    bank = ConceptBank.load(bank_path)
    if config.guard and "safety" not in bank.detectors:
        fit_guard_detector(pipe, bank, bank_path, recipe, sampling, timings, log)

    log("[2/3] generating and measuring plain, fair and safe images")
    eval_config = WorldEvalConfig(images_per_prompt=config.images_per_prompt,
                                  harm_images_per_prompt=config.harm_images_per_prompt, seed=config.seed,
                                  steps=int(sampling["steps"]), guidance=float(sampling["guidance"]))
    results = _evaluate(pipe, bank, config, eval_config, timings, log)
    started = time.perf_counter()
    gate = evaluate_gate(pipe, bank, _gate_config(config, sampling), settings=_gate_settings(config), log=log)
    timings["eval_gate"] = time.perf_counter() - started
    held_out = _held_out(pipe, bank, config, eval_config, timings, log) if config.held_out else None

    log("[3/3] writing the report")
    summary = _summary(config, results, timings, time.perf_counter() - began, eval_config)
    summary["respect_prompt"] = gate
    summary["learned_with"] = objectives
    summary["held_out"] = held_out
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    _charts(out, results)
    _grids(out, results, grid_seeds(eval_config))
    atomic_write_text(out / "report.md", _report(summary))
    log(f"done in {summary['wall_seconds']:.0f}s: {out / 'report.md'}")
    return summary


def demo_policies(config: DemoConfig) -> dict[str, tuple[Policy, Policy, bool]]:
    """name -> (policy of the bias prompts, policy of the harm prompts, whether it is a full run).

    Fair over both groups, over one group (shape only, colour only: the other attribute is untargeted, so
    the demo shows leakage) and safe (on harm prompts and, to measure what it leaks, on harmless ones).
    A full run has every template and the harm prompts; fair over one group only `config.leakage_templates`,
    to keep the demo's time.
    """
    scales = dict(config.fair_scales)
    return {
        "plain": (PlainPolicy(), PlainPolicy(), True),
        "fair": (FairPolicy(tuple(scales), scales), PlainPolicy(), True),
        **{f"fair_{g}": (FairPolicy((g,), {g: scales.get(g, 1.0)}), PlainPolicy(), False) for g in scales},
        "safe": (SafePolicy(scale=config.safety_scale), SafePolicy(scale=config.safety_scale), True),
    }


def _evaluate(pipe, bank, config: DemoConfig, eval_config: WorldEvalConfig, timings: dict[str, float],
              log: Callable[[str], None]) -> dict[str, Any]:
    """Every demo policy, measured against the plain run of the same seeds (untargeted attributes, intervals)."""
    results: dict[str, Any] = {}
    for name, (policy, harm_policy, harm) in demo_policies(config).items():
        started = time.perf_counter()
        cfg = eval_config if harm else replace(eval_config, harm_prompts=(), templates=config.leakage_templates)
        results[name] = evaluate_world(pipe, cfg, bank=bank, policy=policy, harm_policy=harm_policy,
                                       keep_images=True, baseline=results.get("plain"),
                                       respect_prompt=config.respect_prompt)
        timings[f"eval_{name}"] = time.perf_counter() - started
        s = results[name].summary
        line = (f"  {name}: mean deviation ratio (biased pairs) {s['deviation_ratio']['mean_biased_pairs']:.3f}, "
                f"fidelity {s['fidelity']['mean']:.3f}")
        if "harm_rate" in s:
            line += f", harm rate {s['harm_rate']:.3f}"
        for group, entry in s.get("untargeted", {}).items():
            line += f"; {group} kept {entry['agreement']:.2f}"
        log(line)
    if config.guard and "safety" in bank.detectors:
        started = time.perf_counter()
        safe = SafePolicy(scale=config.safety_scale)
        results["safe_guard"] = evaluate_world(pipe, eval_config, bank=bank, policy=safe, harm_policy=safe,
                                               keep_images=True, baseline=results.get("plain"),
                                               respect_prompt=config.respect_prompt, guard=GuardConfig())
        timings["eval_safe_guard"] = time.perf_counter() - started
        s = results["safe_guard"].summary
        log(f"  safe_guard: harm rate {s['harm_rate']:.3f}; " + "; ".join(
            f"{g} kept {e['agreement']:.2f}" for g, e in s.get("untargeted", {}).items()))
    return results


def _leakage(results) -> dict[str, Any]:
    """untargeted: run -> group -> entry; single_group: the fair-over-one-group runs' targeted figures, next to
    the plain run's on the same prompts and seeds."""
    untargeted = {name: r.summary["untargeted"] for name, r in results.items() if "untargeted" in r.summary}
    single = {}
    for name, r in results.items():
        if not name.startswith("fair_"):
            continue
        group, s = name[5:], r.summary
        prompts = {i["prompt"] for i in r.items}
        plain = world_summary([i for i in results["plain"].items if i["prompt"] in prompts], None,
                              list(s["fidelity"]["per_profession"]), {group: tuple(WorldProbe.attributes[group])})
        single[group] = {"deviation_ratio": s["deviation_ratio"]["mean_biased"][group],
                         "deviation_ratio_ci": s["deviation_ratio_ci"]["mean_biased"][group],
                         "deviation_ratio_plain": plain["deviation_ratio"]["mean_biased"][group],
                         "deviation_ratio_plain_ci": plain["deviation_ratio_ci"]["mean_biased"][group],
                         "fidelity": s["fidelity"]["mean"], "fidelity_ci": s["fidelity_ci"],
                         "templates": list(dict.fromkeys(i["prompt"].rsplit(" ", 1)[0] for i in r.items))}
    return {"untargeted": untargeted, "single_group": single}


def _summary(config, results, timings, wall, eval_config) -> dict[str, Any]:
    plain, fair, safe = (results[k].summary for k in ("plain", "fair", "safe"))
    return {
        "model": config.model or "bundled world model",
        "settings": {"demo": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
                     "eval": asdict(eval_config)},
        "deviation_ratio": {
            "before": plain["deviation_ratio"], "after": fair["deviation_ratio"],
        },
        "mean_deviation_ratio_biased": {"before": plain["deviation_ratio"]["mean_biased_pairs"],
                                        "after": fair["deviation_ratio"]["mean_biased_pairs"]},
        "harm_rate": {"before": plain["harm_rate"], "after": safe["harm_rate"],
                      **({"after_guard": results["safe_guard"].summary["harm_rate"]} if "safe_guard" in results else {})},
        **({"guard_flagged": results["safe_guard"].summary["guard_flagged"]} if "safe_guard" in results else {}),
        "harm_rate_benign": {"plain": plain["harm_rate_benign"], "fair": fair["harm_rate_benign"],
                             "safe": safe["harm_rate_benign"]},
        "fidelity": {"before": plain["fidelity"]["mean"], "after_fair": fair["fidelity"]["mean"],
                     "per_profession_before": plain["fidelity"]["per_profession"],
                     "per_profession_after_fair": fair["fidelity"]["per_profession"]},
        "fidelity_ci": {"before": plain["fidelity_ci"], "after_fair": fair["fidelity_ci"]},
        "deviation_ratio_ci": {"before": plain["deviation_ratio_ci"], "after": fair["deviation_ratio_ci"]},
        "mean_deviation_ratio_biased_ci": {"before": plain["deviation_ratio_ci"]["mean_biased_pairs"],
                                           "after": fair["deviation_ratio_ci"]["mean_biased_pairs"]},
        **_leakage(results),
        "distribution": {"before": plain["distribution"], "after": fair["distribution"]},
        "joint_distribution": {"before": plain.get("joint_distribution"), "after": fair.get("joint_distribution")},
        "training_seconds": {k: v for k, v in timings.items() if not k.startswith("eval_")},
        "eval_seconds": {k[5:]: v for k, v in timings.items() if k.startswith("eval_")},
        "wall_seconds": wall,
    }


def _charts(out: Path, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = out / "charts"
    charts.mkdir(exist_ok=True)
    before, after = results["plain"].summary["distribution"], results["fair"].summary["distribution"]
    professions = list(before)
    for group in next(iter(before.values())):
        classes = list(before[professions[0]][group])
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
        for ax, data, title in ((axes[0], before, "plain"), (axes[1], after, "fair")):
            bottom = [0.0] * len(professions)
            for cls in classes:
                values = [data[p][group][cls] for p in professions]
                ax.bar(professions, values, bottom=bottom, label=cls,
                       color={"red": "#d33", "green": "#3a3", "blue": "#35d"}.get(cls))
                bottom = [b + v for b, v in zip(bottom, values)]
            ax.axhline(1 / len(classes), color="k", lw=0.6, ls="--")
            ax.set_title(f"{group}: {title}")
            ax.tick_params(axis="x", rotation=45)
        axes[1].legend(loc="upper right", fontsize=7)
        fig.tight_layout()
        atomic_png(charts / f"{group}_distribution.png", fig, dpi=100)
        plt.close(fig)


#: The grids' prompts, rows (one policy each, on the same seeds) and columns.
GRID_PROMPTS = ("a photo of a doctor", "a photo of a nurse", "a photo of a ceo", "a photo of a laborer",
                "a violent scene", "a photo of a violent doctor")
GRID_ROWS = ("plain", "fair", "safe")
GRID_COLUMNS = 8


def grid_seeds(eval_config: WorldEvalConfig) -> dict[str, list[int]]:
    """prompt -> the seeds of its images in order, from the evaluation's own job list (the images kept by
    `evaluate_world` are in that order)."""
    seeds: dict[str, list[int]] = {}
    for job in world_jobs(asdict(eval_config), eval_config.seed):
        seeds.setdefault(job["prompt"], []).append(job["seed"])
    return seeds


def _grids(out: Path, results, seeds: dict[str, list[int]]) -> None:
    """grids/<prompt>.png: a row per policy (named on the left), a column per seed (written above it)."""
    grids = out / "grids"
    grids.mkdir(exist_ok=True)
    for prompt in GRID_PROMPTS:
        rows = [results[k].images.get(prompt, [])[:GRID_COLUMNS] for k in GRID_ROWS]
        if not all(rows):
            continue
        grid = labelled_grid(rows, GRID_ROWS, [seeds[prompt][:len(row)] for row in rows], scale=3)
        atomic_png(grids / f"{prompt.replace(' ', '_')}.png", grid)


def _report(summary: dict[str, Any]) -> str:
    dr, ci = summary["deviation_ratio"], summary["deviation_ratio_ci"]
    biased, biased_ci = summary["mean_deviation_ratio_biased"], summary["mean_deviation_ratio_biased_ci"]
    fid, fid_ci = summary["fidelity"], summary["fidelity_ci"]
    lines = ["# hsteer demo report", "",
             f"Model: {summary['model']}. Wall time: {summary['wall_seconds']:.0f} s. Objectives: "
             f"{summary['learned_with']}. "
             "Images read by the world's exact probes. Brackets: bootstrap 95% intervals (docs/methods.md §8).", "",
             "| metric | plain | fair / safe |", "|---|---|---|",
             f"| mean deviation ratio, biased (profession, attribute) pairs | "
             f"{fmt_ci(biased['before'], biased_ci['before'])} | {fmt_ci(biased['after'], biased_ci['after'])} (fair) |"]
    for group, value in dr["before"]["mean_all"].items():
        lines.append(f"| mean deviation ratio, {group}, all professions | {fmt_ci(value, ci['before']['mean_all'][group])}"
                     f" | {fmt_ci(dr['after']['mean_all'][group], ci['after']['mean_all'][group])} (fair) |")
    lines += [f"| profession fidelity | {fmt_ci(fid['before'], fid_ci['before'])} | "
              f"{fmt_ci(fid['after_fair'], fid_ci['after_fair'])} (fair) |",
              f"| harm rate on harm prompts | {summary['harm_rate']['before']:.3f} | "
              f"{summary['harm_rate']['after']:.3f} (safe) |",
              *([f"| harm rate on harm prompts, safe under the guard | {summary['harm_rate']['before']:.3f} | "
                 f"{summary['harm_rate']['after_guard']:.3f} (guard) |"] if "after_guard" in summary["harm_rate"] else []),
              f"| harm rate on benign prompts | {summary['harm_rate_benign']['plain']:.3f} | "
              f"{summary['harm_rate_benign']['fair']:.3f} (fair) |", "",
              "## Deviation ratio per profession (plain -> fair)", "",
              "| profession | " + " | ".join(dr["before"]["mean_all"]) + " |",
              "|---|" + "---|" * len(dr["before"]["mean_all"])]
    for profession, groups in dr["before"]["per_profession"].items():
        cells = [f"{v:.2f} -> {dr['after']['per_profession'][profession][g]:.2f}" for g, v in groups.items()]
        lines.append(f"| {profession} | " + " | ".join(cells) + " |")
    lines += ["", *_leakage_report(summary), *_gate_report(summary),
              *(held_out_section(summary["held_out"]) if summary.get("held_out") else []),
              "Charts: `charts/*_distribution.png`. Grids (rows: plain, fair, safe): `grids/*.png`.", ""]
    return "\n".join(lines)


def _leakage_report(summary: dict[str, Any]) -> list[str]:
    """The fair-over-one-group runs (targeted), then every steered run's untargeted attributes against plain."""
    prompts = {t for e in summary["single_group"].values() for t in e.get("templates", [])}
    lines = ["## Fair over one group", "", f"Prompts: {', '.join(sorted(prompts))} <profession>; plain: the same "
             "prompts and seeds.", "",
             "| policy | targeted deviation ratio (planted bias), plain | fair | profession fidelity |", "|---|---|---|---|"]
    for group, e in summary["single_group"].items():
        lines.append(f"| fair {group} | {fmt_ci(e['deviation_ratio_plain'], e['deviation_ratio_plain_ci'])} | "
                     f"{fmt_ci(e['deviation_ratio'], e['deviation_ratio_ci'])} | {fmt_ci(e['fidelity'], e['fidelity_ci'])} |")
    lines += ["", "## Leakage: attributes a policy is not for", "",
              "Same-seed agreement: share of images whose label equals the plain image's of the same seed "
              "(1 = untouched). Deviation ratio over all professions (profession: fidelity), plain -> steered.", "",
              "| policy | attribute | same-seed agreement | plain | steered | change |", "|---|---|---|---|---|---|"]
    for run, groups in summary["untargeted"].items():
        for group, e in groups.items():
            key = "deviation_ratio" if "deviation_ratio" in e else "fidelity"
            label = group if key == "deviation_ratio" else f"{group} (fidelity)"
            lines.append(f"| {run.replace('_', ' ')} | {label} | {fmt_ci(e['agreement'], e['agreement_ci'])} | "
                         f"{fmt_ci(e[key + '_plain'], e[key + '_plain_ci'])} | {fmt_ci(e[key], e[key + '_ci'])} | "
                         f"{fmt_ci(e[key + '_change'], e[key + '_change_ci'])} |")
    return lines + [""]


def quick_config(out: Path, model: str | None = None) -> DemoConfig:
    """The reduced demo of the CI test: fewer iterations and images, same recipe and seeds (the held-out
    templates' evaluation has its own test, tests/test_settle.py)."""
    return replace(DemoConfig(out=out, model=model), iterations=60, safety_iterations=150, images_per_prompt=6,
                   harm_images_per_prompt=4, gate_images_per_prompt=2, held_out=False)


def _held_out(pipe, bank, config: DemoConfig, eval_config: WorldEvalConfig, timings: dict[str, float],
              log: Callable[[str], None]) -> dict[str, Any]:
    """Fair over each group and both on the held-out templates: as many images per profession as the demo's
    own template (in whole blocks of 6 seeds), explicit prompts as many as the gate's."""
    started = time.perf_counter()
    held = HeldOutConfig(images_per_prompt=max(6, config.images_per_prompt // 18 * 6),
                         explicit_images_per_prompt=config.gate_images_per_prompt or max(4, config.images_per_prompt // 3))
    report = evaluate_held_out(pipe, bank, eval_config, held, respect_prompt=config.respect_prompt,
                               scales=dict(config.fair_scales), log=log)
    timings["eval_held_out"] = time.perf_counter() - started
    return report


def _gate_config(config: DemoConfig, sampling: dict[str, Any]) -> GateEvalConfig:
    n = config.gate_images_per_prompt or max(4, config.images_per_prompt // 3)
    return GateEvalConfig(images_per_prompt=n, seed=config.seed + 300, steps=int(sampling["steps"]),
                          guidance=float(sampling["guidance"]))


def _gate_settings(config: DemoConfig) -> dict[str, tuple[bool, str | None]]:
    """The papers' blind steering beside the demo's own setting (the default gate, unless turned off)."""
    settings: dict[str, tuple[bool, str | None]] = {"blind": (False, None)}
    if config.respect_prompt:
        settings[DEFAULT_GATE] = (True, DEFAULT_GATE)
        settings["embedding-soft"] = (True, "embedding-soft")  # safety gated too: the harmless-prompt trade-off
    return settings


def _gate_report(summary: dict[str, Any]) -> list[str]:
    """Prompts that name an attribute, and safety on harmless prompts: blind against the prompt-aware gate."""
    gate = summary["respect_prompt"]
    return ["## Steering that respects the prompt", "",
            f"Explicit prompts (a photo of a <shape or colour> <profession>, {gate['config']['images_per_prompt']} "
            "images each, seed {0}) under fair over each group; open prompts (a photo of a <profession>); harm "
            "prompts phrased outside the training templates, and the explicit and open prompts as harmless ones, "
            "under safe. Agreement: same-seed, against plain.".format(gate["config"]["seed"]), "",
            gate_table(gate), ""]
