"""The group site scan (`hsteer sites --group ...`): where each group of the bundled world's recipe should
live, measured on images.

For every group (shape, colour, safety) and every candidate (a site, a window, a set of sites), the scan
trains the group's concepts with the recipe (`apps.recipes.world_train_config`, its site and window
overridden), then generates the world's evaluation set under that group alone and reports, each with a
95% interval:

- **effect**: the deviation ratio of the targeted group (mean over the professions with a planted bias
  in it; lower is better), bootstrap interval; for safety, the harm rate on the harm prompts (Wilson);
- **leakage**: for every other attribute (shape, colour, profession), the share of images whose value
  is the plain image's of the same seed (1 = untouched), Wilson interval;
- **cost**: seconds per image steered over seconds per image plain, timed on paired batches
  (interleaved, so a busy machine slows both alike), bootstrap interval over the batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hsteer.apps.recipes import WINDOWS, WORLD_CONCEPTS, world_train_config
from hsteer.checks import check_count, check_seed
from hsteer.errors import HsteerError, as_field
from hsteer.evaluation.leakage import fmt_ci
from hsteer.evaluation.metrics import wilson_interval
from hsteer.world.evaluate import HARM_PROMPTS, WorldEvalConfig, evaluate_world
from hsteer.generation import generate
from hsteer.steering.bank import ConceptBank
from hsteer.model.loading import sampling_for
from hsteer.model.sites import site_for
from hsteer.policies import FairPolicy, PlainPolicy, SafePolicy
from hsteer.training import train_concept

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

GROUPS = tuple(dict.fromkeys(group for _, group, *_ in WORLD_CONCEPTS))
#: A candidate's window: the recipe's for the group (`RECIPE_WINDOW`), or (start, end).
RECIPE_WINDOW = "recipe"


@dataclass
class GroupScanSettings:
    groups: tuple[str, ...] = GROUPS
    iterations: int = 60
    images_per_prompt: int = 6
    harm_images_per_prompt: int = 4
    seed: int = 0
    timing_batches: int = 4
    timing_images: int = 4
    objective: str | None = None  # None: each group's recipe objective
    steps: int | None = None  # sampling steps and guidance of the images: None, the model's (`sampling_for`)
    guidance: float | None = None
    professions: tuple[str, ...] | None = None  # None: all of the world's

    def validate(self) -> None:
        """Refuse unknown groups, counts outside 1..100000 and a bad seed, before any model loads."""
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown or not self.groups:
            raise HsteerError(f"group {', '.join(unknown) or '(none)'}: the recipe's groups are {', '.join(GROUPS)}",
                              field="group")
        for name in ("iterations", "images_per_prompt", "harm_images_per_prompt", "timing_batches", "timing_images"):
            as_field(name, check_count, getattr(self, name), 1, 100_000)
        as_field("seed", check_seed, self.seed)


@dataclass
class GroupResult:
    """One group at one candidate: effect, leakage per other attribute and cost, each with its interval."""

    group: str
    site: str
    window: tuple[float, float] | None  # None: every step
    effect_name: str
    effect: float
    effect_ci: list[float] | None
    leakage: dict[str, dict[str, Any]] = field(default_factory=dict)  # attribute -> agreement, agreement_ci, n
    cost: float = float("nan")
    cost_ci: list[float] | None = None
    train_seconds: float = 0.0


def candidate_window(group: str, window) -> tuple[float, float] | None:
    """The step window a group is scanned with: the recipe's own window for the group, None for the full
    run (0, 1), else the window given."""
    return WINDOWS.get(group) if window == RECIPE_WINDOW else (None if tuple(window) == (0.0, 1.0) else tuple(window))


def scan_groups(pipe: Pipeline, settings: GroupScanSettings, sites: Sequence[str],
                windows: Sequence = (RECIPE_WINDOW,),
                log: Callable[[str], None] = lambda _: None) -> list[GroupResult]:
    """Every group of `settings` at every site (a spec; `A,B` a set of sites) and window; see the module."""
    settings.validate()
    specs = [site_for(pipe, spec).spec for spec in sites]  # an unknown site fails before any training
    if not specs or not windows:
        raise HsteerError("give at least one site (sites) and one window (windows)", field=("sites", "windows"))
    steps, guidance, _ = sampling_for(pipe, settings.steps, settings.guidance)
    config = WorldEvalConfig(professions=settings.professions, templates=("a photo of a {}",),
                             images_per_prompt=settings.images_per_prompt,
                             harm_images_per_prompt=settings.harm_images_per_prompt, seed=settings.seed,
                             steps=int(steps), guidance=float(guidance))
    plain = evaluate_world(pipe, replace(config, harm_prompts=()), policy=PlainPolicy(), progress=False)
    out = []
    for group in settings.groups:
        seen = set()
        for spec in specs:
            for window in windows:
                chosen = candidate_window(group, window)
                if (spec, chosen) in seen:
                    continue
                seen.add((spec, chosen))
                out.append(_candidate(pipe, settings, config, plain, group, spec, chosen))
                log(format_rows([out[-1]]).splitlines()[-1])
    return out


def _candidate(pipe, settings: GroupScanSettings, config: WorldEvalConfig, plain, group: str, spec: str,
               window: tuple[float, float] | None) -> GroupResult:
    bank, began = ConceptBank(), time.perf_counter()
    for name, concept_group, *_ in WORLD_CONCEPTS:
        if concept_group == group:
            train = world_train_config(name, settings.iterations, settings.seed, objective=settings.objective,
                                       site=spec, window=window)
            bank.add(train_concept(pipe, train, progress=False).concept)
    seconds = time.perf_counter() - began
    safety = group == "safety"
    policy = SafePolicy() if safety else FairPolicy((group,))
    run = config if safety else replace(config, harm_prompts=())
    summary = evaluate_world(pipe, run, bank=bank, policy=policy, harm_policy=policy, baseline=plain,
                             progress=False).summary
    if safety:
        n = len(HARM_PROMPTS) * config.harm_images_per_prompt
        effect, ci, name = summary["harm_rate"], wilson_interval(summary["harm_rate"] * n, n), "harm rate"
    else:
        effect = summary["deviation_ratio"]["mean_biased"][group]
        ci, name = summary["deviation_ratio_ci"]["mean_biased"][group], "DevRat"
    leakage = {attr: {"agreement": e["agreement"], "agreement_ci": e["agreement_ci"], "n": e["n"]}
               for attr, e in summary.get("untargeted", {}).items()}
    cost, cost_ci = _cost(pipe, bank, policy, config, settings)
    return GroupResult(group, spec, window, name, effect, ci, leakage, cost, cost_ci, seconds)


def _cost(pipe, bank: ConceptBank, policy, config: WorldEvalConfig, settings: GroupScanSettings):
    """Seconds per image steered / plain on paired, interleaved batches, and its bootstrap 95% interval."""
    kwargs = dict(num_images_per_prompt=settings.timing_images, steps=config.steps, guidance=config.guidance,
                  progress=False, respect_prompt=False, keep_images=False)
    times = np.zeros((settings.timing_batches, 2))
    for which in (0, 1):  # one untimed call each first: lazy setup is no part of the cost
        generate(pipe, "a photo of a doctor", seed=0, **(dict(bank=bank, policy=policy) if which else {}), **kwargs)
    for b in range(settings.timing_batches):
        for which in (0, 1):
            began = time.perf_counter()
            generate(pipe, "a photo of a doctor", seed=settings.seed + b,
                     **(dict(bank=bank, policy=policy) if which else {}), **kwargs)
            times[b, which] = time.perf_counter() - began
    ratio = float(times[:, 1].mean() / times[:, 0].mean())
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(times), (1000, len(times)))
    boot = times[idx, 1].mean(axis=1) / times[idx, 0].mean(axis=1)
    return ratio, [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def _window(window: tuple[float, float] | None) -> str:
    return "all" if window is None else f"{window[0]:g}-{window[1]:g}"


def format_rows(results: Sequence[GroupResult]) -> str:
    """The scan as a Markdown table, one row per group and candidate (95% intervals in brackets)."""
    lines = ["| group | site | window | effect | leakage: same-seed agreement of the other attributes | "
             "cost (s/image vs plain) | training s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        leak = "; ".join(f"{attr} {fmt_ci(e['agreement'], e['agreement_ci'], 2)}" for attr, e in r.leakage.items())
        lines.append(f"| {r.group} | {r.site} | {_window(r.window)} | {r.effect_name} {fmt_ci(r.effect, r.effect_ci)} "
                     f"| {leak or '-'} | {fmt_ci(r.cost, r.cost_ci, 2)} | {r.train_seconds:.0f} |")
    return "\n".join(lines)


def to_json(results: Sequence[GroupResult]) -> list[dict]:
    """The scan's results as JSON-ready rows (windows as lists, None where the whole run is steered)."""
    return [{**asdict(r), "window": list(r.window) if r.window else None} for r in results]
