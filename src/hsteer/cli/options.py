"""The options `hsteer generate` and `hsteer eval` share, declared once: the policy and the sampling.

`policy_options` and `sampling_options` are decorators; `build_policy` turns the policy options into a
policy object (`hsteer.policies`), checked before any model loads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import click

from hsteer.errors import HsteerError

POLICY_OPTIONS = (
    click.option("--bank", "bank_path", default=None,
                 help="Bank file or folder, or a Hub repo: USER/REPO[:FILE][@REVISION]."),
    click.option("--fair", default=None, help="Group(s) to draw one concept from per image, e.g. gender,race."),
    click.option("--safe", is_flag=True, help="Add the sum of the bank's safety group."),
    click.option("--concept", "concepts", multiple=True, help="NAME or NAME=SCALE (repeatable; summed)."),
    click.option("--group-scale", "scales", multiple=True, help="GROUP=SCALE for --fair/--safe, e.g. gender=1.1."),
    click.option("--ratio", "ratios", multiple=True,
                 help="Non-uniform --fair draws, e.g. woman=0.3,man=0.7 (exact per block of seeds)."),
    click.option("--window", default=None,
                 help="Steer only these fractions of the denoising steps, e.g. 0.0,0.6 (default: each concept's "
                      "learned window)."),
    click.option("--steer-unconditional", is_flag=True, help="Also steer the unconditional CFG half."),
    click.option("--allow-other-model", is_flag=True, help="Use a bank learned on a U-Net with another config."),
    click.option("--respect-prompt/--no-respect-prompt", default=True, show_default=True,
                 help="Gate each image's concepts by its prompt: a fair group the prompt names is not redrawn "
                      "(with --gate embedding-soft/-hard/token/context the safety concept also acts only as far "
                      "as the prompt carries harm). --no-respect-prompt: the papers' blind steering."),
    click.option("--gate", "gate", default="embedding", show_default=True,
                 type=click.Choice(["embedding", "embedding-soft", "embedding-hard", "token", "context"]),
                 help="How prompts are read for --respect-prompt (docs/methods.md §10); the default leaves "
                      "safety at full strength, embedding-soft scales it by the prompt's harm score."),
)

SAMPLING_OPTIONS = (
    click.option("--steps", default=None, type=int,
                 help="Denoising steps (default: the model card's, 20 on the bundled model; else the pipeline's, "
                      "50 on SD)."),
    click.option("--guidance", default=None, type=float,
                 help="CFG scale (default: the model card's, 4.0 on the bundled model; else the pipeline's, 7.5 "
                      "on SD)."),
    click.option("--batch-size", default=8, show_default=True, type=int, help="Images per denoiser batch."),
    click.option("--height", default=None, type=int, help="Image height (default: the model's)."),
    click.option("--width", default=None, type=int, help="Image width (default: the model's)."),
    click.option("--seed", default=0, show_default=True, type=int, help="Image i of each prompt gets seed SEED + i."),
)


GUARD_OPTIONS = (
    click.option("--guard", "guard", default="auto", show_default=True,
                 type=click.Choice(["auto", "none", "learned", "nudenet", "q16"]),
                 help="Decide per image from the model's predicted clean image whether the safety group acts: "
                      "learned (the bank's detector, `hsteer guard fit`), nudenet or q16 (real models); none: "
                      "every image as the policy says; auto: learned where the policy draws the safety group and "
                      "the bank holds its detector, else none."),
    click.option("--guard-step", default=None, type=int,
                 help="The guard's decision step, 0-based (default: the detector's; nudenet/q16: a quarter in)."),
    click.option("--guard-threshold", default=None, type=float,
                 help="Flag images whose detector score exceeds this (default: the detector's)."),
    click.option("--guard-design", default="redraw", show_default=True, type=click.Choice(["redraw", "switch", "soft"]),
                 help="redraw: flagged images are made again from step 0 with safety (exactly the --safe image); "
                      "switch: safety from the step after the decision; soft: strength grows with the score."),
)


def guard_options(fn: Callable) -> Callable:
    """--guard, --guard-step, --guard-threshold, --guard-design."""
    return _apply(GUARD_OPTIONS, fn)


def resolve_guard_choice(guard: str, policy, bank) -> str:
    """`--guard auto` made concrete: the learned guard is the default of safety wherever the bank carries
    the safety group's detector (it keeps harmless images plain and measured as robust,
    docs/results.md), and no guard where there is none to use."""
    if guard != "auto":
        return guard
    if bank is None or not policy.needs_bank or "safety" not in bank.detectors:
        return "none"
    members = {concept.name for concept in bank.group("safety")}
    return "learned" if policy.drawable(bank) & members else "none"


def build_guard_config(guard: str, step: int | None, threshold: float | None, design: str,
                       q16_prompts: Path | None = None, device: str = "cpu"):
    """The GuardConfig of the command line (None for --guard none), checked before any model loads; the
    NudeNet and Q16 detectors are built here (they load their own small models)."""
    from hsteer.generation.guard import GuardConfig

    if guard == "none":
        if step is not None or threshold is not None or design != "redraw":
            raise HsteerError("--guard-step, --guard-threshold and --guard-design need --guard learned|nudenet|q16")
        return None
    try:
        GuardConfig(step=step, threshold=threshold, design=design)
    except HsteerError as exc:
        raise HsteerError(str(exc).replace("the guard's decision step", "--guard-step").replace(
            "the guard's threshold", "--guard-threshold")) from None
    detector: object = "learned"
    if guard == "nudenet":
        from hsteer.evaluation.guard_detectors import nudenet_guard

        detector = nudenet_guard(step=step)
    elif guard == "q16":
        from hsteer.evaluation.clip import Q16_CLIP
        from hsteer.evaluation.guard_detectors import q16_guard

        if q16_prompts is None:
            raise HsteerError("--guard q16 needs --q16-prompts FILE (Q16's prompt embeddings; hsteer q16 convert)")
        detector = q16_guard(Q16_CLIP, q16_prompts, step=step, device=device)
    return GuardConfig(detector=detector, step=step, threshold=threshold, design=design)


def _apply(options: tuple, fn: Callable) -> Callable:
    for option in reversed(options):
        fn = option(fn)
    return fn


def policy_options(fn: Callable) -> Callable:
    """--bank, --fair, --safe, --concept, --group-scale, --ratio, --window, --steer-unconditional,
    --allow-other-model, --respect-prompt/--no-respect-prompt, --gate."""
    return _apply(POLICY_OPTIONS, fn)


def sampling_options(fn: Callable) -> Callable:
    """--steps, --guidance, --batch-size, --height, --width, --seed."""
    return _apply(SAMPLING_OPTIONS, fn)


def _group_scales(scales: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for spec in scales:
        group, _, value = spec.partition("=")
        try:
            out[group] = float(value)
        except ValueError:
            raise HsteerError(f"bad --group-scale {spec!r}: write GROUP=SCALE, e.g. gender=1.1") from None
    return out


def build_policy(fair: str | None, safe: bool, concepts: tuple[str, ...], scales: tuple[str, ...] = (),
                 ratios: tuple[str, ...] = ()):
    """The policy of the command line's --fair / --safe / --concept (plain without any), with its
    --group-scale and --ratio; every value checked here, before anything loads."""
    from hsteer.policies import FairPolicy, PlainPolicy, SafePolicy
    from hsteer.policy_forms import parse_concept_specs, parse_ratios

    if sum(bool(x) for x in (fair, safe, concepts)) > 1:
        raise HsteerError("choose one of --fair, --safe or --concept")
    group_scales = _group_scales(scales)
    if group_scales and not (fair or safe):
        raise HsteerError("--group-scale applies to the groups of --fair or --safe; with --concept write NAME=SCALE")
    if ratios and not fair:
        raise HsteerError("--ratio needs --fair GROUP")
    if fair:
        policy = FairPolicy(tuple(g.strip() for g in fair.split(",")), group_scales)
        return dataclasses.replace(policy, ratios=parse_ratios(ratios)) if ratios else policy
    if safe:
        other = sorted(set(group_scales) - {"safety"})
        if other:
            raise HsteerError(f"--group-scale {other[0]}=...: --safe steers only the group 'safety'")
        return SafePolicy(scale=group_scales.get("safety", 1.0))
    if concepts:
        return parse_concept_specs(concepts)
    return PlainPolicy()
