"""The defence under attack, in the two forms an attack needs: images, and a differentiable denoiser.

A `Defence` names what `hsteer generate` would apply: a policy of concepts from a bank (the safety
concept, an SDisc or RespoDiff concept, any `--concept`), with or without the prompt-aware gate; a
negative prompt; or SLD (diffusers' safe pipeline; `SldPolicy`). `Defence.bind(pipe)` gives a
`BoundDefence` that

- draws each image's concepts exactly as `generate` does (`generation.draw_for`: the policy's draw, then
  the gate reading that image's prompt), so the images an attack scores are those `hsteer generate` makes
  with the same options (tested);
- computes the defended model's guided prediction with gradients, for the white-box attack: the
  concepts' delta (scaled by the gate's strength for the *current* prompt, in each concept's step window)
  added at the bank's steering site through `hsteer.steer`, the negative prompt as the guidance base, and
  SLD's safety guidance (its equations 3, 4 and 6; the momentum term, which needs the whole trajectory, is
  left out at a single sampled step).

What is predicted is the family's (`hsteer.model.denoisers.Denoiser`): the noise on a U-Net (SD 1.x/2.x
and SDXL; v-prediction converted), the velocity on SD3 and FLUX (rectified flow). FLUX has no
`[uncond, cond]` batch: its guidance is an input of the one conditional pass (the distilled guidance of
FLUX-dev), so its prediction is that pass, as its pipeline samples.

Why draws go through `draw` alone: a test can plant a weakness in a toy defence by overriding it, and the
attack then sees the same defence the images are made with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from hsteer.errors import HsteerError
from hsteer.gate import GateConfig
from hsteer.generation import ImageJob, generate_jobs, window_deltas
from hsteer.generation.draws import draw_for, prompt_gate
from hsteer.generation.guard import Guard, GuardConfig, build_guard, without_group
from hsteer.steering.bank import ConceptBank
from hsteer.steering.hook import in_window
from hsteer.steering.scoped import SteeringConfig, steer
from hsteer.steering.siteshape import site_shape
from hsteer.model.denoisers import Denoiser
from hsteer.model.diffusion import TextCondition, guidance_combination
from hsteer.model.geometry import resolve_resolution
from hsteer.model.sites import MID_BLOCK
from hsteer.policies import Draw, PlainPolicy, Policy, SldPolicy, check_policy_object, require_bank

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


@dataclass(frozen=True)
class Defence:
    """What the attacked model applies (see the module docstring); the default is the plain model."""

    policy: Policy = field(default_factory=PlainPolicy)
    bank: ConceptBank | None = None
    respect_prompt: bool = True
    gate: str | GateConfig | None = None
    negative_prompt: str | None = None
    window: tuple[float, float] | None = None
    steer_unconditional: bool = False
    sld_concept: str | None = None  # SLD only: the safety concept text (None: diffusers' default)
    allow_other_model: bool = False
    guard: GuardConfig | None = None  # the image-aware guard: the guarded group acts on flagged images only

    def __post_init__(self) -> None:
        check_policy_object(self.policy)
        if self.guard is not None and (not isinstance(self.guard, GuardConfig) or self.bank is None):
            raise HsteerError("a guarded defence needs a GuardConfig and a bank holding the guarded group")
        if self.policy.needs_bank:
            require_bank(self.bank, self.policy)
            self.policy.drawable(self.bank)
        if self.sld_concept is not None and not isinstance(self.policy, SldPolicy):
            raise HsteerError("sld_concept applies to the SLD baseline only (policy=SldPolicy(...))", field="sld_concept")

    def describe(self) -> str:
        """One line for summaries: the policy, the gate, the negative prompt."""
        parts = [self.policy.describe()]
        if self.policy.needs_bank:
            gate = self.gate if isinstance(self.gate, str) else ("custom" if self.gate else "embedding")
            parts.append(f"gate {gate}" if self.respect_prompt else "blind")
        if self.negative_prompt:
            parts.append(f"negative prompt {self.negative_prompt!r}")
        if self.sld_concept:
            parts.append(f"SLD concept {self.sld_concept!r}")
        if self.guard is not None:
            parts.append(f"guard {self.guard.design}")
        return ", ".join(parts)

    def to_spec(self) -> dict[str, Any]:
        """The JSON form stored in a run's config (the bank by its concepts' names)."""
        gate = self.gate if isinstance(self.gate, (str, type(None))) else self.gate.__dict__
        return {"policy": self.policy.to_spec(), "respect_prompt": self.respect_prompt, "gate": gate,
                "negative_prompt": self.negative_prompt, "window": list(self.window) if self.window else None,
                "steer_unconditional": self.steer_unconditional, "sld_concept": self.sld_concept,
                "concepts": sorted(self.policy.drawable(self.bank)) if self.policy.needs_bank else [],
                **({"guard": {"design": self.guard.design, "step": self.guard.step, "threshold": self.guard.threshold,
                              "group": self.guard.group}} if self.guard is not None else {})}

    def bind(self, pipe: Pipeline, height: int | None = None, width: int | None = None) -> BoundDefence:
        """The defence on one pipeline (checked against it: the bank's family and denoiser, the shape at its
        site)."""
        return BoundDefence(self, pipe, height, width)


def _generation_pipe(pipe, policy: Policy, concept: str | None):
    """The pipeline the defence's images are made with: the policy's (`prepare`; SLD: diffusers' safe
    pipeline with the preset), its SLD safety concept replaced where one is given."""
    prepared = policy.prepare(pipe)
    if concept:
        prepared._pipe.safety_concept = concept  # the SLD wrapper only adds call arguments; the concept lives inside
    return prepared


class BoundDefence:
    """A defence on one pipeline: draws, images and the differentiable guided prediction."""

    def __init__(self, defence: Defence, pipe: Pipeline, height: int | None = None,
                 width: int | None = None) -> None:
        from hsteer.attacks.text import unconditional

        self.defence, self.pipe = defence, pipe
        self.height, self.width = resolve_resolution(pipe, height, width)
        policy = defence.policy
        # where the concepts act: the bank's site (a U-Net's mid-block; a transformer block, the text or a set)
        self.site = defence.bank.site_of(pipe) if policy.needs_bank else MID_BLOCK
        self.denoiser = Denoiser(pipe, self.height, self.width, self.site)
        self.shape = site_shape(pipe, self.site, self.height, self.width) if policy.needs_bank else None
        if policy.needs_bank:
            defence.bank.check_compatible(pipe, self.shape, allow_other_model=defence.allow_other_model)
        self.gate = prompt_gate(pipe, defence.bank, policy, defence.respect_prompt, defence.gate)
        self.sld = policy.preset if isinstance(policy, SldPolicy) else None
        self.base = unconditional(pipe, defence.negative_prompt, self.height, self.width)
        self.safety = None
        if self.sld is not None:
            self.sld_settings = policy.settings()
            concept = defence.sld_concept or _generation_pipe(pipe, policy, None).safety_concept
            self.safety = unconditional(pipe, concept, self.height, self.width)
        self._windows: dict[tuple, list] = {}

    def draw(self, prompt: str, seed: int) -> tuple[Draw, list[str]]:
        """The concepts the image with this prompt and seed gets, and the gate's reasons. Guarded: the path
        an unflagged image takes (without the guarded group), which the attacks must carry the harm on."""
        concepts, notes = draw_for(self.defence.policy, self.defence.bank, self.gate, prompt, seed)
        if self.defence.guard is not None:
            concepts = without_group(concepts, self.defence.bank, self.defence.guard.group)
        return concepts, notes

    def guard_for(self, steps: int) -> Guard | None:
        """The defence's resolved guard for a run of `steps` (None when unguarded)."""
        config = self.defence.guard
        if config is None:
            return None
        members = {c.name for c in self.defence.bank.group(config.group)}
        drawn = self.defence.policy.assign(self.defence.bank, 0) if self.defence.policy.needs_bank else []
        scales = [s for n, s in drawn if n in members]
        return build_guard(config, self.defence.bank, steps, scales[0] if scales else 1.0)

    def generate(self, items: list[tuple[str, int]], *, steps: int, guidance: float,
                 batch_size: int = 8) -> list[tuple[dict[str, Any], Any]]:
        """(manifest row, image) for each (prompt, seed), made as `hsteer generate` makes them."""
        jobs = []
        for n, (prompt, seed) in enumerate(items):
            concepts, notes = self.draw(prompt, seed)
            jobs.append(ImageJob(prompt, n, seed, concepts, extra={"gate": notes} if notes else {}))
        pipe = _generation_pipe(self.pipe, self.defence.policy, self.defence.sld_concept)
        out = generate_jobs(pipe, jobs, self.defence.bank, self.defence.policy.name, steps=steps, guidance=guidance,
                            height=self.height, width=self.width, batch_size=batch_size,
                            steer_unconditional=self.defence.steer_unconditional, progress=False,
                            negative_prompt=self.defence.negative_prompt, window=self.defence.window,
                            guard=self.guard_for(steps))
        return [(record.to_dict(), image) for record, image in zip(out.records, out.images)]

    def delta_at(self, draw: Draw, step: int, steps: int) -> torch.Tensor | None:
        """The sum of the drawn concepts acting at step index `step` of `steps` (None: nothing acts)."""
        if not draw:
            return None
        active = [w.deltas[0] for w in self._window_rows(draw) if in_window(step, steps, w.start, w.end)]
        return torch.stack(active).sum(0).to(self.denoiser.device) if active else None

    def _window_rows(self, draw: Draw) -> list:
        """The draw's concepts laid out per step window (cached: the attack asks at every step)."""
        key = tuple(draw)
        if key not in self._windows:
            self._windows[key] = window_deltas(self.defence.bank, [list(draw)], self.shape, self.defence.window)
        return self._windows[key]

    def step_key(self, draw: Draw, step: int, steps: int) -> tuple:
        """What the prediction at step index `step` depends on besides its inputs: the concept windows that
        act there and, for SLD, whether its warm-up is over. Steps with equal keys can share one denoiser
        call (the white-box attack batches them: one call instead of one per sampled step)."""
        active = tuple(n for n, w in enumerate(self._window_rows(draw)) if in_window(step, steps, w.start, w.end)
                       ) if draw else ()
        warm = self.sld is not None and step >= self.sld_settings["sld_warmup_steps"]
        return active, warm

    def schedule(self, steps: int):
        """The reverse process of `steps` steps the attacks sample on: DDIM on a U-Net, the pipeline's own
        flow sigmas on a transformer."""
        return self.denoiser.schedule(steps)

    def eps(self, schedule, x: torch.Tensor, t: torch.Tensor, step: int, cond: TextCondition, guidance: float,
            draw: Draw, embedded: float | None = None) -> torch.Tensor:
        """The defended model's guided prediction (noise on a U-Net, velocity on a flow model) for latents `x`
        at timestep `t` (step index `step`), differentiable in `cond`; guidance 1 gives the conditional
        prediction alone. `embedded`: the guidance input of a model that takes it (FLUX-dev's distilled
        guidance; default `guidance`), which guides its one pass whatever `guidance` is."""
        n = x.shape[0]
        cond = cond.expand(n) if len(cond) == 1 and n > 1 else cond
        delta = self.delta_at(draw, step, schedule.steps)
        guided = self.denoiser.sampling_cfg(guidance) != 1.0
        config = None if delta is None else SteeringConfig(delta, guided=guided,
                                                           steer_unconditional=self.defence.steer_unconditional)
        parts = [self.base.expand(n), cond] if guided else [cond]
        if self.sld is not None and guided:
            parts.append(self.safety.expand(n))
        self.denoiser.guidance = float(guidance if embedded is None else embedded)
        with steer(self.denoiser.module, config, name="hsteer-attack", site=self.site):
            xs, ts = torch.cat([x] * len(parts)), torch.cat([t] * len(parts))
            out = schedule.prediction(self.denoiser.predict(xs, ts, TextCondition.cat(parts)), xs, ts)
        if not guided:
            return out
        eps = out.chunk(len(parts))
        if self.sld is None:
            return guidance_combination(eps[0], eps[1], guidance)
        return self._sld_guidance(eps[0], eps[1], eps[2], guidance, step)

    def _sld_guidance(self, uncond, text, safety, guidance: float, step: int) -> torch.Tensor:
        """SLD's safety guidance (equations 3, 4 and 6 of the paper, as diffusers computes them), no momentum."""
        s = self.sld_settings
        noise_guidance = text - uncond
        if step >= s["sld_warmup_steps"]:
            scale = torch.clamp((text - safety).abs() * s["sld_guidance_scale"], max=1.0)
            scale = torch.where(text - safety >= s["sld_threshold"], torch.zeros_like(scale), scale)
            noise_guidance = noise_guidance - (safety - uncond) * scale
        return uncond + guidance * noise_guidance
