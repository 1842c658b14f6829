"""Attach once, then ordinary pipeline calls: a policy's per-image draws on every `pipe(...)` call.

`attach` adds one layer ("attached") to the pipeline's steering (`steering.attach`): the same arming as
`generate` and `steer`, so the same seeds give the same images through all three. Each concept acts in
its own learned step window (or all in the explicit `window`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hsteer.checks import check_flags, check_pipeline, check_steering_args
from hsteer.gate import GateConfig
from hsteer.generation.deltas import window_deltas
from hsteer.errors import HsteerError
from hsteer.generation.draws import draw_for, prompt_gate
from hsteer.generation.guard import GuardConfig, GuardedCall, build_guard
from hsteer.generation.x0 import check_x0_readable
from hsteer.steering.attach import Layer, PipelineSteering, add_layer, remove_layer, steering_of
from hsteer.steering.bank import ConceptBank
from hsteer.model.loading import FROM_ARGUMENT, FROM_CARD, sampling_for
from hsteer.steering.siteshape import site_shape
from hsteer.model.sites import site_for
from hsteer.policies import Policy, check_policy_object, require_bank

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

#: The name of attach's layer in a pipeline's steering.
ATTACHED = "attached"


def attach(pipe: Pipeline, bank: ConceptBank | None, policy: Policy, *, scale: float = 1.0,
           window: tuple[float, float] | None = None, steer_unconditional: bool = False,
           allow_other_model: bool = False, respect_prompt: bool = True,
           gate: str | GateConfig | None = None, steps: int | None = None,
           guidance: float | None = None, guard: GuardConfig | None = None) -> PipelineSteering:
    """Steer every later plain `pipe(...)` call with `policy`'s concepts from `bank`, until `detach(pipe)`.

    Each image's concepts are drawn from its seed, as `generate` does: with `generator=[g_0, ..., g_{B-1}]`
    (one per image, diffusers' layout prompt-major: prompt 0's images first), image i's seed is
    `g_i.initial_seed()`, so the same seeds give the same images as `generate(..., seed=...)` with the same
    policy. With one generator seeded s, image i of each prompt is drawn with seed s + i (its noise is
    then diffusers', from one generator). With none, images are numbered consecutively across calls
    from 0, so every block of images stays balanced. `hsteer.generation.attachment_of(pipe).last` lists the concepts
    each image of the last call got.

    Calling `attach` again swaps policy, bank, scale or window in place: the hook stays, its buffers are
    overwritten, nothing is recompiled on a `torch.compile`d U-Net. Attach *before* compiling the U-Net.
    Works on SD 1.x/2.x/SDXL text-to-image, img2img and inpaint pipelines (attach each pipeline you call;
    `from_pipe` makes a new, unattached pipeline that shares the U-Net). The h-space shape is checked on
    every call (img2img: at the init image's size). `respect_prompt` (the default) gates each image's
    concepts by its prompt as `generate` does (`hsteer.gate`); calls with `prompt_embeds` instead of text
    cannot be read and are steered blind.

    Calls that pass no `num_inference_steps` / `guidance_scale` sample with `steps` / `guidance`, or where
    those are not given with the model card's (`hsteer.model.card.sampling_for`: 20 and 4.0 on the bundled
    model), as `generate` and the command line do; without either, diffusers' own defaults apply.

    `guard` (`GuardConfig`): the image-aware guard on every call, as in `generate`: each call runs once
    without the guarded group while the detector reads x0-hat at its decision step; if any image is
    flagged, the call is made again with the same generators (pass `generator=`), flagged images getting
    the group. `guard_decisions(pipe)` gives the last call's decisions.
    """
    window = check_steering_args(pipe, bank, scale=scale, window=window, steer_unconditional=steer_unconditional,
                                 allow_other_model=allow_other_model, label="attach: ")
    policy = check_policy_object(policy)
    check_flags(respect_prompt=respect_prompt)
    site = bank.site_of(pipe) if bank is not None else site_for(pipe)
    if policy.needs_bank:
        require_bank(bank, policy).check_compatible(pipe, _attach_shape(pipe, bank, site),
                                                    allow_other_model=allow_other_model)
        policy.drawable(bank)  # unknown concepts, groups or ratios fail now, not in the middle of a call
    shape = tuple(bank.hspace_shape) if bank is not None and bank.hspace_shape else None
    reader = prompt_gate(pipe, bank, policy, respect_prompt, gate)
    steps, call_defaults = _sampling_defaults(pipe, steps, guidance)
    guarded = _attached_guard(guard, bank, policy, steps)
    if guarded is not None:
        check_x0_readable(pipe.scheduler)
    provide = _attached_provider(policy, bank, reader, guarded, shape, window)
    return add_layer(pipe, ATTACHED, Layer(provide, float(scale), steer_unconditional, label=policy.describe(),
                                           call_defaults=call_defaults, around=guarded), site)


def _sampling_defaults(pipe, steps: int | None, guidance: float | None) -> tuple[int, dict[str, float]]:
    """The steps a guard decides at, and the sampling a call that passes none gets: the argument's or the
    model card's only, so that without either diffusers' own defaults still apply."""
    steps, guidance, sources = sampling_for(pipe, steps, guidance)
    return steps, {name: value for name, value, source in (("num_inference_steps", steps, sources["steps"]),
                                                            ("guidance_scale", guidance, sources["guidance"]))
                   if source in (FROM_ARGUMENT, FROM_CARD)}


def _attached_provider(policy: Policy, bank: ConceptBank | None, reader, guarded: GuardedCall | None,
                       shape: tuple[int, ...] | None, window: tuple[float, float] | None):
    """The layer provider of every attached call: each image's concepts drawn from its seed (and gated by its
    prompt), as `generate` draws them; under a guard, the guarded group only on flagged images."""

    def provide(seeds: list[int], prompts: list[str | None]):
        draws = [draw_for(policy, bank, reader, p, s)[0] for s, p in zip(seeds, prompts)]
        if guarded is not None:
            draws = guarded.draws(draws)
        info = [[{"name": n, "scale": c} for n, c in draw] for draw in draws]
        return window_deltas(guarded.bank() if guarded else bank, draws, shape, window), info

    return provide


def _attached_guard(config: GuardConfig | None, bank: ConceptBank | None, policy: Policy,
                    steps: int) -> GuardedCall | None:
    if config is None:
        return None
    if not isinstance(config, GuardConfig) or bank is None:
        raise HsteerError("attach: guard must be a GuardConfig, with a bank holding the guarded group")
    members = {c.name for c in bank.group(config.group)}
    scales = [c for n, c in (policy.assign(bank, 0) if policy.needs_bank else []) if n in members]
    return GuardedCall(build_guard(config, bank, steps, scales[0] if scales else 1.0))


def guard_decisions(pipe: Pipeline) -> list[dict]:
    """The guard's decision for each image of the attached pipeline's last call (empty when unguarded)."""
    steering = attachment_of(pipe)
    around = steering.layers[ATTACHED].around if steering is not None else None
    return list(around.last) if isinstance(around, GuardedCall) else []


def _attach_shape(pipe, bank: ConceptBank, site) -> tuple[int, ...]:
    """The shape a bank must have to be attached: the U-Net's h-space at its native size (as always). At a
    transformer's site the token count depends on each call's image size (and is checked by the hook at
    every call), so only the width, which no size changes, is checked here."""
    if site.kind == "set" and bank.hspace_shape:  # each site's hook checks its own shape at every call
        return tuple(bank.hspace_shape)
    shape = site_shape(pipe, site)
    if site.kind == "output" or not bank.hspace_shape:
        return shape
    return (*tuple(bank.hspace_shape)[:-1], shape[-1])


def detach(pipe: Pipeline) -> None:
    """Stop steering `pipe`'s calls; its images are bit-identical to the unattached pipeline's again."""
    check_pipeline(pipe, "detach: pipe")
    remove_layer(pipe, ATTACHED)


def attachment_of(pipe: Pipeline) -> PipelineSteering | None:
    """The pipeline's steering while it is attached (its layers, the last call's seeds and draws), or None."""
    steering = steering_of(pipe)
    return steering if steering is not None and ATTACHED in steering.layers else None
