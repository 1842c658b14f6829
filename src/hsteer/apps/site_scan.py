"""The site scan (`hsteer sites`): which layer and step window of a model a concept should live at
(a site, or a set of sites `A,B` whose tensors are learned and applied together).

Papers that steer transformer blocks (FluxSpace, SHIFT, SafeDIG) find that both the block and the step
window must be chosen, and that no single block is "the bottleneck". So for a new model the scan trains a
short CoDSMa concept at every candidate site and window and measures, on held-out latents that every
site shares (reached by the unmodified model, so no site is favoured by its own trajectories):

- **effect**: how much of the way to the target the concept takes the neutral prompt's prediction,
  `1 - ||pred(z; c, y) - target||^2 / ||pred(z; y) - target||^2` (1: all the way, 0: nowhere, < 0: away);
  `target` is CoDSMa's guided target, in what the model predicts (epsilon or flow velocity);
- **leakage**: how much the concept moves the predictions of prompts it should leave alone (`keep`),
  relative to the change it was asked for, `||pred(z; c, y_k) - pred(z; y_k)||^2 / ||pred(z; y) - target||^2`
  averaged over them (0: untouched);
- **cost**: training seconds per iteration and the concept's size.

These are prediction-space measures: cheap, model-agnostic, and available before any classifier; the
image-level evaluation (`hsteer eval`) confirms the chosen site.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from hsteer import objectives
from hsteer.checks import check_count, check_float, check_seed, check_size, check_text
from hsteer.errors import HsteerError, as_field, field_errors
from hsteer.steering.siteshape import bind_site
from hsteer.model.denoisers import Denoiser
from hsteer.model.diffusion import encode_text, encode_unconditional, reverse_to_steps
from hsteer.model.geometry import resolve_resolution
from hsteer.model.sites import site_for, site_specs
from hsteer.training import CodsmaConfig, train_concept

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


@dataclass
class ScanSettings:
    """What one scan trains and measures (the training settings are CoDSMa's, kept short)."""

    neutral: str
    target: str
    keep: tuple[str, ...] = ()
    iterations: int = 20
    batch_size: int = 4
    steps: int = 10
    lr: float = 0.05
    target_guidance: float = 4.0
    sampling_guidance: float = 3.0
    height: int | None = None
    width: int | None = None
    seed: int = 0
    eval_samples: int = 4

    def validate(self) -> None:
        """Refuse empty prompts, counts outside 1..10000, non-numeric or out-of-range learning rate and
        guidances, and bad image sizes, before any model loads."""
        with field_errors("neutral"):
            check_text("the neutral prompt (neutral)", self.neutral)
        with field_errors("target"):
            check_text("the target prompt (target)", self.target)
        with field_errors("keep"):
            for prompt in self.keep:
                check_text("a prompt to keep (keep)", prompt)
        for name in ("iterations", "batch_size", "steps", "eval_samples"):
            as_field(name, check_count, getattr(self, name), 1, 10_000)
        for name in ("lr", "target_guidance", "sampling_guidance"):
            if isinstance(getattr(self, name), bool):
                raise HsteerError(f"{name} must be a number, got {getattr(self, name)!r}", field=name)
        as_field("lr", check_float, self.lr, 0.0, above=True, maximum=100.0)
        as_field("target_guidance", check_float, self.target_guidance, -1e4, maximum=1e4)
        as_field("sampling_guidance", check_float, self.sampling_guidance, -1e4, maximum=1e4)
        as_field("height", check_size, self.height)
        as_field("width", check_size, self.width)
        as_field("seed", check_seed, self.seed, span=2)


@dataclass
class SiteResult:
    """One site and window of the scan."""

    site: str
    window: tuple[float, float]
    shape: tuple[int, ...]
    effect: float
    leakage: float | None
    seconds_per_iteration: float
    parameters: int


def _held_out(den: Denoiser, conds: dict, settings: ScanSettings, window: tuple[float, float]):
    """Latents inside the window, reached by the unmodified model from seeded noise, and their timesteps."""
    schedule = den.schedule(settings.steps)
    first = math.ceil(window[0] * settings.steps - 1e-9)
    end = max(first + 1, math.ceil(window[1] * settings.steps - 1e-9))
    g = torch.Generator().manual_seed(settings.seed + 1)
    n = settings.eval_samples
    k = (first + torch.arange(n) * (end - first) // n).to(den.device)
    x = (torch.randn((n, *den.latent_shape()), generator=g) * schedule.init_noise_sigma).to(den.device, den.dtype)
    return schedule, reverse_to_steps(den, schedule, x, k, conds["neutral"].expand(n), conds["empty"].expand(n),
                                      den.sampling_cfg(settings.sampling_guidance)), k


def _measure(pipe, den: Denoiser, conds: dict, concept: torch.Tensor, settings: ScanSettings,
             window: tuple[float, float]) -> tuple[float, float | None]:
    """(effect, leakage) of `concept` at `den.site` on the window's held-out latents (`conds`: the encoded
    neutral, target and empty prompts)."""
    schedule, z, k = _held_out(den, conds, settings, window)
    n, t = z.shape[0], schedule.timesteps[k]
    with torch.no_grad():
        neutral, positive, empty = (objectives.frozen_eps(den, schedule, z, t, [conds[key].expand(n)])[0]
                                    for key in ("neutral", "target", "empty"))
        target = objectives.guided_target(positive, empty, settings.target_guidance)
        steered = objectives.eps(den, schedule, z, t, conds["neutral"].expand(n), concept.to(den.device, den.dtype))
        asked = float((neutral - target).pow(2).mean())
        effect = 1.0 - float((steered - target).pow(2).mean()) / max(asked, 1e-12)
        leaks = []
        for prompt in settings.keep:
            y = encode_text(pipe, [prompt], den.height, den.width).expand(n)
            moved = objectives.eps(den, schedule, z, t, y, concept.to(den.device, den.dtype))
            leaks.append(float((moved - objectives.frozen_eps(den, schedule, z, t, [y])[0]).pow(2).mean()))
    return effect, (sum(leaks) / len(leaks) / max(asked, 1e-12) if leaks else None)


def scan_sites(pipe: Pipeline, settings: ScanSettings, sites: Sequence[str] | None = None,
               windows: Sequence[tuple[float, float]] = ((0.0, 1.0),), progress: bool = False) -> list[SiteResult]:
    """Train a short concept at every site (all of the model's when None) and window; measure each."""
    settings.validate()
    specs = list(sites) if sites else site_specs(pipe)
    height, width = resolve_resolution(pipe, settings.height, settings.width)
    # an unknown site fails before any training; a set of sites is bound to its shapes at this size
    resolved = [bind_site(pipe, site_for(pipe, spec), height, width) for spec in specs]
    if not windows:
        raise HsteerError("give at least one step window (windows), e.g. (0.4, 1.0)", field="windows")
    prompts = {"neutral": settings.neutral, "target": settings.target}
    encoded = {key: encode_text(pipe, [p], height, width) for key, p in prompts.items()}
    encoded["empty"] = encode_unconditional(pipe, height, width)
    out = []
    for site in resolved:
        den = Denoiser(pipe, height, width, site, guidance=settings.sampling_guidance)
        for window in windows:
            config = CodsmaConfig(concept="scan", group="scan", neutral=settings.neutral, target=settings.target,
                                  iterations=settings.iterations, batch_size=settings.batch_size,
                                  steps=settings.steps, lr=settings.lr, target_guidance=settings.target_guidance,
                                  sampling_guidance=settings.sampling_guidance, height=height, width=width,
                                  seed=settings.seed, site=site.spec,
                                  window=None if tuple(window) == (0.0, 1.0) else tuple(window))
            began = time.perf_counter()
            result = train_concept(pipe, config, progress=progress)
            seconds = (time.perf_counter() - began) / settings.iterations
            concept = result.concept.delta()
            effect, leakage = _measure(pipe, den, encoded, concept, settings, tuple(window))
            out.append(SiteResult(site.spec, tuple(window), tuple(concept.shape), effect, leakage, seconds,
                                  concept.numel()))
    return out


def choose_site(results: Sequence[SiteResult]) -> SiteResult:
    """The scan's pick: the largest effect net of leakage (effect - leakage; leakage 0 where nothing was kept).
    Both are fractions of the change the concept was asked for, so one unit of leakage costs one of effect."""
    if not results:
        raise HsteerError("the scan has no results to choose from")
    return max(results, key=lambda r: r.effect - (r.leakage or 0.0))


def format_table(results: Sequence[SiteResult]) -> str:
    """The scan as a plain-text table, best effect first."""
    lines = [f"{'site':<30} {'window':<10} {'effect':>7} {'leakage':>8} {'s/it':>7} {'params':>9}"]
    for r in sorted(results, key=lambda r: -r.effect):
        leak = f"{r.leakage:8.3f}" if r.leakage is not None else f"{'-':>8}"
        window = f"{r.window[0]:g}-{r.window[1]:g}"
        lines.append(f"{r.site:<30} {window:<10} {r.effect:7.3f} {leak} "
                     f"{r.seconds_per_iteration:7.3f} {r.parameters:9d}")
    return "\n".join(lines)


def to_json(results: Sequence[SiteResult]) -> list[dict]:
    """The scan's results as JSON-ready rows (windows and shapes as lists)."""
    return [{**asdict(r), "window": list(r.window), "shape": list(r.shape)} for r in results]
