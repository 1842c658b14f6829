"""Fair steering on the held-out templates: the demo's figures on prompts no recipe or test was tuned on.

`HELD_OUT_TEMPLATES` (`evaluation.tasks.world`) are phrased unlike the demo's templates and the recipes'
training prompts. For fair over each group (and over both), on every profession, against the plain images
of the same prompts and seeds, each figure with its 95% interval (bootstrap within profession and drawn
concept for a deviation ratio; Wilson for a share):

- the targeted deviation ratio (mean over the professions with a planted bias), plain and steered;
- same-seed agreement on every untargeted attribute (the other group, and the profession);
- profession fidelity;
- explicit prompts in the same phrasing ("an image of a red nurse scene"): the share of images that keep
  the value the prompt names, for each group, under the default prompt-aware gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from hsteer.evaluation.leakage import fmt_ci
from hsteer.evaluation.metrics import wilson_interval
from hsteer.evaluation.tasks.world import HELD_OUT_TEMPLATES
from hsteer.world.evaluate import WorldEvalConfig, evaluate_world
from hsteer.policies import FairPolicy, PlainPolicy

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

#: The runs measured: fair over each group alone, then over both.
RUNS = (("shape",), ("colour",), ("shape", "colour"))


@dataclass(frozen=True)
class HeldOutConfig:
    templates: tuple[str, ...] = HELD_OUT_TEMPLATES
    images_per_prompt: int = 6  # a multiple of 6, as the seed: every fair draw's block (2, 3, 6) is whole
    explicit_professions: tuple[str, ...] = ("nurse", "doctor", "baker")
    explicit_images_per_prompt: int = 4
    seed: int = 1200  # seeds disjoint from the demo's (0...) and the gate evaluation's (300...)

    def __post_init__(self) -> None:
        if self.images_per_prompt % 6 or self.seed % 6:
            raise ValueError("held-out images per prompt and the seed must be multiples of 6: a fair draw is "
                             "balanced over whole blocks of 2 (shape), 3 (colour) or 6 (both) seeds, and a "
                             "part-block gives a deviation ratio before any image is made")


def _share(flags: Sequence[bool]) -> dict[str, Any]:
    return {"value": sum(flags) / max(1, len(flags)), "ci": wilson_interval(sum(flags), len(flags)),
            "n": len(flags)}


def _fair(groups: Sequence[str], scales: dict[str, float] | None) -> FairPolicy:
    return FairPolicy(tuple(groups), {g: (scales or {}).get(g, 1.0) for g in groups})


def explicit_kept(pipe: Pipeline, bank, config: HeldOutConfig, eval_config: WorldEvalConfig,
                  policy: FairPolicy,
                  respect_prompt: bool = True, plain_cache: dict | None = None) -> dict[str, Any]:
    """Per named group: the share of held-out explicit prompts' images showing the named value, plain and
    under the fair `policy` (`plain_cache`: a dict that keeps the plain images' labels between calls)."""
    from hsteer.generation import generate
    from hsteer.world.scene import WorldProbe

    probe = WorldProbe()
    rows = [(template.format(f"{value} {p}"), group, value) for template in config.templates
            for p in config.explicit_professions for group, values in probe.attributes.items() for value in values]
    n = config.explicit_images_per_prompt
    cache = {} if plain_cache is None else plain_cache
    out: dict[str, Any] = {}
    for label, run_policy, steer in (("plain", PlainPolicy(), None), ("steered", policy, bank)):
        read = cache.get("plain") if steer is None else None  # the plain images are shared between methods
        if read is None:
            made = generate(pipe, [r[0] for r in rows], num_images_per_prompt=n, seed=config.seed, bank=steer,
                            policy=run_policy, steps=eval_config.steps, guidance=eval_config.guidance,
                            batch_size=eval_config.batch_size, progress=False, respect_prompt=respect_prompt)
            read = probe.classify(made.images)
        if steer is None:
            cache["plain"] = read
        for group in probe.attributes:
            flags = [read[group][k] == value for k, (_, g, value) in enumerate(r for r in rows for _ in range(n))
                     if g == group]
            out.setdefault(group, {})[label] = _share(flags)
    return out


def _run_figures(s: dict[str, Any], groups: Sequence[str]) -> dict[str, Any]:
    """One steered run's held-out figures from its `evaluate_world` summary."""
    dr, ci = s["deviation_ratio"]["mean_biased"], s["deviation_ratio_ci"]["mean_biased"]
    return {"deviation_ratio": {g: {"value": dr[g], "ci": ci[g]} for g in groups},
            "fidelity": {"value": s["fidelity"]["mean"], "ci": s["fidelity_ci"]},
            "untargeted": {g: {"value": e["agreement"], "ci": e["agreement_ci"]}
                           for g, e in s.get("untargeted", {}).items()}}


def evaluate_held_out(pipe: Pipeline, bank, eval_config: WorldEvalConfig, config: HeldOutConfig | None = None,
                      respect_prompt: bool = True, runs: Sequence[tuple[str, ...]] = RUNS,
                      scales: dict[str, float] | None = None, log=lambda message: None) -> dict[str, Any]:
    """The module's figures for each run of `runs` (sampling as `eval_config`: steps, guidance, batch;
    `scales`: group -> the fair policy's scale, as the demo's `fair_scales`)."""
    config = config or HeldOutConfig()
    cfg = replace(eval_config, templates=tuple(config.templates), images_per_prompt=config.images_per_prompt,
                  harm_prompts=(), seed=config.seed)
    plain = evaluate_world(pipe, cfg, progress=False)
    p = plain.summary
    report: dict[str, Any] = {
        "templates": list(config.templates), "images_per_prompt": config.images_per_prompt, "seed": config.seed,
        "plain": {"deviation_ratio": {g: {"value": p["deviation_ratio"]["mean_biased"][g],
                                          "ci": p["deviation_ratio_ci"]["mean_biased"][g]} for g in cfg.groups},
                  "fidelity": {"value": p["fidelity"]["mean"], "ci": p["fidelity_ci"]}},
        "runs": {}}
    plain_explicit: dict = {}
    for groups in runs:
        name = "fair_" + "+".join(groups)
        policy = _fair(groups, scales)
        s = evaluate_world(pipe, cfg, bank=bank, policy=policy, progress=False, baseline=plain,
                           respect_prompt=respect_prompt).summary
        entry = _run_figures(s, groups)
        if config.explicit_images_per_prompt and len(groups) == 1:
            entry["explicit_kept"] = explicit_kept(pipe, bank, config, eval_config, policy, respect_prompt,
                                                   plain_explicit)
        report["runs"][name] = entry
        log(f"  held-out {name}: " + held_out_line(entry))
    return report


def _cell(entry: dict[str, Any] | None) -> str:
    return "-" if entry is None else fmt_ci(entry["value"], entry["ci"], 3)


def held_out_line(entry: dict[str, Any]) -> str:
    """One run's figures in a line (for logs)."""
    parts = [f"{g} DevRat {e['value']:.3f}" for g, e in entry["deviation_ratio"].items()]
    parts += [f"{g} kept {e['value']:.2f}" for g, e in entry["untargeted"].items()]
    parts += [f"explicit {g} kept {e['steered']['value']:.2f}" for g, e in entry.get("explicit_kept", {}).items()]
    return ", ".join(parts + [f"fidelity {entry['fidelity']['value']:.3f}"])


HELD_OUT_HEAD = ("| run | targeted DevRat (plain -> fair) | untargeted same-seed agreement | explicit prompts: "
                 "named value kept, shape / colour | profession fidelity |\n|---|---|---|---|---|")


def held_out_rows(report: dict[str, Any], label: str = "") -> list[str]:
    """The table's rows (one per run), each run's name after `label` (e.g. the method, in `hsteer compare`)."""
    rows = []
    for name, e in report["runs"].items():
        targeted = "; ".join(f"{g} {_cell(report['plain']['deviation_ratio'][g])} -> {_cell(v)}"
                             for g, v in e["deviation_ratio"].items())
        untargeted = "; ".join(f"{g} {_cell(v)}" for g, v in e["untargeted"].items()) or "-"
        kept = e.get("explicit_kept")
        explicit = " / ".join(_cell(kept[g]["steered"]) for g in ("shape", "colour")) if kept else "-"
        rows.append(f"| {label + ' ' if label else ''}{name.replace('_', ' ')} | {targeted} | {untargeted} | "
                    f"{explicit} | {_cell(e['fidelity'])} |")
    return rows


def held_out_section(report: dict[str, Any]) -> list[str]:
    """The report's section: what was measured, then the table."""
    return ["## On held-out templates", "",
            f"Prompts: {', '.join(repr(t) for t in report['templates'])} with every profession, "
            f"{report['images_per_prompt']} images each, seeds from {report['seed']} (phrased unlike the demo's "
            "templates; no recipe or test was tuned on them). Explicit prompts: the same templates with a shape or "
            "colour before the profession. Agreement: same-seed, against plain. Brackets: 95% intervals "
            "(bootstrap for DevRat, Wilson for shares).", "", HELD_OUT_HEAD, *held_out_rows(report), ""]
