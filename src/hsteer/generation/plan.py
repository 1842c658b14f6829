"""A generation's plan: its settings checked once, before any model work.

`plan_generation` is the one place a generation's settings are checked: prompts, counts, seed, sampling,
size, the policy and its bank, the step windows against the steps the run will take, the img2img inputs and
the guard (its detector resolved and its decision step placed). `hsteer generate` makes the plan before it
loads the model, so a bad setting costs no load; `generate` makes it from its keywords. What it returns, a
frozen `GenerationPlan`, is what `hsteer.generation.engine.generate_planned` runs: it resolves only what needs
the pipeline (its sampling defaults, site, size and concept shape) and checks nothing the plan holds again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hsteer.checks import (check_bank_object, check_flags, check_strength, check_window_value, prompt_list)
from hsteer.errors import HsteerError
from hsteer.gate import GateConfig
from hsteer.generation.guard import Guard, GuardConfig, build_guard
from hsteer.outputs import check_generate_settings
from hsteer.policies import PlainPolicy, Policy, check_policy_object, require_bank
from hsteer.steering.bank import ConceptBank
from hsteer.steering.bankcheck import check_bank_windows


@dataclass(frozen=True)
class GenerationPlan:
    """One `generate` call's settings, checked (`plan_generation`): what the engine trusts.

    steps, guidance: as given (None: the model's own, resolved on the pipeline; the manifest says where each
    came from); checked_steps: the step count the windows and the guard were checked against (the given
    steps, else the model's default); inputs: each prompt's img2img / inpaint inputs; guard: the run's guard,
    built against checked_steps (None: no guard). The other fields are `generate`'s keywords, checked.
    """

    prompts: tuple[str, ...]
    num_images_per_prompt: int
    seed: int
    policy: Policy
    bank: ConceptBank | None
    steps: int | None
    guidance: float | None
    checked_steps: int
    height: int | None = None
    width: int | None = None
    batch_size: int = 8
    window: tuple[float, float] | None = None
    strength: float | None = None
    image: Any = None
    inputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    guard_config: GuardConfig | None = None
    guard: Guard | None = None
    out_dir: Path | None = None
    overwrite: bool = False
    resume: bool = False
    keep_images: bool = True
    progress: bool = True
    steer_unconditional: bool = False
    allow_other_model: bool = False
    respect_prompt: bool = True
    gate: str | GateConfig | None = None
    negative_prompt: str | None = None
    pipe_kwargs: Mapping[str, Any] | None = None

    @property
    def total(self) -> int:
        """How many images the run makes."""
        return len(self.prompts) * self.num_images_per_prompt

    def at_steps(self, steps: int) -> GenerationPlan:
        """This plan on a model whose default step count is `steps` (the loaded pipeline's card may differ
        from the folder's read before loading): the step-dependent checks, windows and guard, on those."""
        if steps == self.checked_steps:
            return self
        _check_windows(self.bank, self.policy, steps, self.window, self.strength, self.image)
        return replace(self, checked_steps=steps,
                       guard=guard_for_run(self.guard_config, self.bank, self.policy, steps))


def plan_generation(prompts: str | Sequence[str], *, sampling: tuple[int, float], num_images_per_prompt: int = 1,
                    seed: int = 0, bank: ConceptBank | None = None, policy: Policy | None = None,
                    steps: int | None = None, guidance: float | None = None, height: int | None = None,
                    width: int | None = None, batch_size: int = 8, steer_unconditional: bool = False,
                    allow_other_model: bool = False, out_dir: str | Path | None = None, progress: bool = True,
                    negative_prompt: str | None = None, overwrite: bool = False, resume: bool = False,
                    keep_images: bool = True, window: tuple[float, float] | None = None, image: Any = None,
                    strength: float | None = None, mask_image: Any = None,
                    pipe_kwargs: Mapping[str, Any] | None = None, respect_prompt: bool = True,
                    gate: str | GateConfig | None = None, guard: GuardConfig | None = None) -> GenerationPlan:
    """`generate`'s keywords checked once, without a pipeline: errors name the keyword at fault as their field.

    `sampling`: the (steps, guidance) the model uses where none are given (`hsteer.model.sampling_for` on
    a loaded pipeline, `hsteer.model.sampling_defaults` on a model folder), so that windows and the guard's
    decision step are checked against the steps the run will take."""
    _check_sampling(sampling)
    prompts = prompt_list("prompts", prompts)
    policy = check_policy_object(policy or PlainPolicy())
    check_bank_object(bank, "bank")
    check_flags(steer_unconditional=steer_unconditional, allow_other_model=allow_other_model, overwrite=overwrite,
                resume=resume, keep_images=keep_images, progress=progress, respect_prompt=respect_prompt)
    window = check_window_value(window, "window")
    strength = check_strength("strength", strength)
    run_steps = steps if steps is not None else sampling[0]
    check_generate_settings(prompts, num_images_per_prompt, seed, run_steps,
                            guidance if guidance is not None else sampling[1], batch_size, height, width,
                            negative_prompt=negative_prompt)
    _check_windows(bank, policy, run_steps, window, strength, image)
    inputs = _prompt_inputs(prompts, image, mask_image)
    return GenerationPlan(tuple(prompts), num_images_per_prompt, seed, policy, bank, steps, guidance, run_steps,
                          height=height, width=width, batch_size=batch_size, window=window, strength=strength,
                          image=image, inputs=inputs, guard_config=guard,
                          guard=guard_for_run(guard, bank, policy, run_steps),
                          out_dir=Path(out_dir) if out_dir is not None else None, overwrite=overwrite,
                          resume=resume, keep_images=keep_images, progress=progress,
                          steer_unconditional=steer_unconditional, allow_other_model=allow_other_model,
                          respect_prompt=respect_prompt, gate=gate, negative_prompt=negative_prompt,
                          pipe_kwargs=pipe_kwargs)


def _check_sampling(sampling: object) -> None:
    """`sampling` is the model's (steps, guidance) pair: an integer count and a finite number."""
    ok = (isinstance(sampling, (tuple, list)) and len(sampling) == 2 and isinstance(sampling[0], int)
          and not isinstance(sampling[0], bool) and sampling[0] >= 1 and isinstance(sampling[1], (int, float))
          and not isinstance(sampling[1], bool) and math.isfinite(sampling[1]))
    if not ok:
        raise HsteerError(f"sampling must be the model's (steps, guidance) where none are given, e.g. (20, 4.0) or "
                          f"hsteer.model.sampling_defaults(model) as a pair; got {sampling!r}", field="sampling")


def _check_windows(bank: ConceptBank | None, policy: Policy, steps: int, window: tuple[float, float] | None,
                   strength: float | None, image: Any) -> None:
    """The policy's bank is there and every concept it draws acts on at least one of the run's steps (the
    call's window, else each concept's stored one; img2img runs only its last `strength` of them)."""
    if policy.needs_bank:
        check_bank_windows(require_bank(bank, policy), policy.drawable(bank), steps, window,
                           strength if image is not None else None, label="window")


def _prompt_inputs(prompts: list[str], image: Any, mask_image: Any) -> dict[str, dict[str, Any]]:
    """Each prompt's img2img / inpaint inputs (`image`, `mask_image`): one for every prompt, or one each."""
    images, masks = _per_prompt(image, prompts, "image"), _per_prompt(mask_image, prompts, "mask_image")
    inputs = {p: ({"image": images[p]} if image is not None else {}) for p in prompts}
    if mask_image is not None:
        for p in prompts:
            inputs[p]["mask_image"] = masks[p]
    return inputs


def _per_prompt(value: Any, prompts: list[str], what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, (list, tuple)):
        if len(value) != len(prompts):
            raise HsteerError(f"{what}: give one for every prompt, or one list entry per prompt "
                              f"({len(value)} for {len(prompts)} prompts)")
        return dict(zip(prompts, value))
    return {p: value for p in prompts}


def guard_for_run(config: GuardConfig | None, bank: ConceptBank | None, policy: Policy, steps: int) -> Guard | None:
    """The run's guard: flagged images get the guarded group at the policy's scale for it (1 if the policy
    does not draw the group, e.g. fair generation with a guard)."""
    if config is None:
        return None
    if not isinstance(config, GuardConfig):
        raise HsteerError(f"guard must be a GuardConfig (e.g. GuardConfig() for the bank's learned detector), "
                          f"got {type(config).__name__}")
    if bank is None:
        raise HsteerError("the guard adds the bank's safety concepts to flagged images: pass a bank (CLI: --bank)")
    members = {c.name for c in bank.group(config.group)}
    drawn = policy.assign(bank, 0) if policy.needs_bank else []
    scales = [s for n, s in drawn if n in members]
    return build_guard(config, bank, steps, scales[0] if scales else 1.0)
