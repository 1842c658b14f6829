"""Evaluation on the bundled world, in memory: professions x templates x N images, read by the exact probes.

The jobs and the summary are the "world" task's (`evaluation.tasks.world`: `world_jobs`, `world_summary`,
whose bias part is WinoBias's); here the bias prompts and the harm prompts may run under different
policies, and the images and labels can be kept for grids. Seeds are fixed: a run repeats bit for bit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from hsteer.evaluation.leakage import targeted_groups, untargeted_summary
from hsteer.evaluation.tasks.world import (HARM_PROMPTS, HELD_OUT_TEMPLATES, TEMPLATES, labelled, world_jobs,
                                           world_summary)
from hsteer.generation import ImageJob, generate_jobs
from hsteer.generation.draws import draw_for, prompt_gate
from hsteer.generation.guard import GuardConfig, build_guard, without_group
from hsteer.policies import PlainPolicy, Policy
from hsteer.steering.bank import ConceptBank

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

__all__ = ["HARM_PROMPTS", "HELD_OUT_TEMPLATES", "TEMPLATES", "WorldEvalConfig", "WorldEvalResult", "evaluate_world"]


@dataclass
class WorldEvalConfig:
    professions: tuple[str, ...] | None = None  # None: all of the world's professions
    templates: tuple[str, ...] | str = TEMPLATES  # or a set's name: "demo" (TEMPLATES), "held-out" (HELD_OUT_TEMPLATES)
    images_per_prompt: int = 24
    harm_prompts: tuple[str, ...] = HARM_PROMPTS
    harm_images_per_prompt: int = 10
    seed: int = 0
    steps: int = 20
    guidance: float = 6.0
    batch_size: int = 32
    groups: tuple[str, ...] = ("shape", "colour")


@dataclass
class WorldEvalResult:
    summary: dict[str, Any]
    images: dict[str, list[Any]] = field(default_factory=dict)  # prompt -> images (for grids)
    labels: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # prompt -> group -> labels
    items: list[dict[str, Any]] = field(default_factory=list)  # bias images: job (prompt, seed, concepts) + labels


def evaluate_world(pipe: Pipeline, config: WorldEvalConfig | None = None, *, bank: ConceptBank | None = None,
                   policy: Policy | None = None, harm_policy: Policy | None = None, probe=None,
                   keep_images: bool = False, progress: bool = True,
                   baseline: WorldEvalResult | None = None, untargeted: bool = True, respect_prompt: bool = True,
                   gate: str | None = None, guard: GuardConfig | None = None) -> WorldEvalResult:
    """Generate the world's evaluation set under `policy` (bias prompts) and `harm_policy` (harm prompts).

    `harm_policy` defaults to `policy`; pass `SafePolicy()` to measure a safety concept. A steered `policy`
    is also measured on the attributes it is not for (summary["untargeted"], docs/methods.md §8) against
    the plain images of the same prompts and seeds: `baseline` (a plain result of the same config), or
    generated here; `untargeted=False` skips it (no plain images are made). `respect_prompt` and `gate`
    as in `hsteer.generate` (the prompt-aware gate; on by default). `guard` as in `hsteer.generate`: the
    guarded group acts on flagged images only; summary["guard_flagged"] is the share flagged per prompt set.
    """
    from hsteer.world import scene

    config = config or WorldEvalConfig()
    probe = probe or scene.WorldProbe()
    policy = policy or PlainPolicy()
    harm_policy = harm_policy or policy
    professions = tuple(config.professions or scene.PROFESSIONS)
    jobs = world_jobs(asdict(config), config.seed)
    readers = {id(p): prompt_gate(pipe, bank, p, respect_prompt, gate) for p in (policy, harm_policy)}
    bias_jobs = [_job(j, policy, bank, readers[id(policy)]) for j in jobs if "profession" in j["extra"]]
    harm_jobs = [_job(j, harm_policy, bank, readers[id(harm_policy)]) for j in jobs if "harm_prompt" in j["extra"]]
    kwargs: dict[str, Any] = dict(steps=config.steps, guidance=config.guidance, batch_size=config.batch_size,
                                  progress=progress)
    if guard is not None:
        scales = [s for n, s in harm_policy.assign(bank, 0) if bank[n].group == guard.group] \
            if harm_policy.needs_bank else []
        kwargs["guard"] = build_guard(guard, bank, config.steps, scales[0] if scales else 1.0)
        for job in bias_jobs + harm_jobs:
            job.concepts = without_group(job.concepts, bank, guard.group)
    outputs = [(bias_jobs, generate_jobs(pipe, bias_jobs, bank, policy.name, **kwargs))]
    if harm_jobs:
        outputs.append((harm_jobs, generate_jobs(pipe, harm_jobs, bank, harm_policy.name, **kwargs)))
    result = WorldEvalResult({})
    items = [_read(probe, batch, out, result, keep_images) for batch, out in outputs]
    attributes = {g: tuple(probe.attributes[g]) for g in config.groups}
    result.summary = {"policy": policy.name, "images": len(bias_jobs) + len(harm_jobs),
                      **world_summary(items[0], items[1] if harm_jobs else None, professions, attributes)}
    if harm_jobs:
        result.summary["harm_policy"] = harm_policy.name
    if guard is not None:
        result.summary["guard_flagged"] = {name: _flagged(out) for name, (_, out) in zip(("bias", "harm"), outputs)}
    result.items = items[0]
    targeted = targeted_groups(policy, bank)
    if targeted and untargeted:
        plain = baseline or evaluate_world(pipe, replace(config, harm_prompts=()), probe=probe, progress=progress)
        groups = {g: c for g, c in attributes.items() if g not in targeted}
        if "profession" not in targeted:
            groups["profession"] = ("profession_read", None)
        result.summary["targeted"] = sorted(targeted)
        result.summary["untargeted"] = untargeted_summary(result.items, plain.items, groups, "profession")
    return result


def _flagged(out) -> dict[str, Any]:
    """The share of a set's images the guard flagged."""
    flags = [bool(r.extra.get("guard", {}).get("flagged")) for r in out.records]
    return {"value": sum(flags) / max(1, len(flags)), "n": len(flags)}


def _job(job: dict[str, Any], policy: Policy, bank: ConceptBank | None, reader) -> ImageJob:
    concepts, notes = draw_for(policy, bank, reader, job["prompt"], job["seed"])
    extra = {**job["extra"], "gate": notes} if notes else job["extra"]
    return ImageJob(job["prompt"], job["index"], job["seed"], concepts, extra=extra)


def _read(probe, jobs: list[ImageJob], out, result: WorldEvalResult, keep_images: bool) -> list[dict]:
    """Labels of generated images, also kept by prompt in `result` (and the images, if asked)."""
    labels = probe.classify(out.images)
    for n, job in enumerate(jobs):
        entry = result.labels.setdefault(job.prompt, {k: [] for k in labels})
        for key in labels:
            entry[key].append(labels[key][n])
        if keep_images:
            result.images.setdefault(job.prompt, []).append(out.images[n])
    return labelled(labels, [{**job.extra, "prompt": job.prompt, "seed": job.seed,
                              "concepts": [name for name, _ in job.concepts]} for job in jobs])
