"""Learning a harm detector from a safety concept's own training prompts.

The model generates plain images from the concept's harmful prompts (label 1) and its clean and harmless
prompts (label 0), plus any prompts an attack found (label 1); each run stops right after the decision
step, where x0-hat is taken; a logistic classifier is fitted on the standardised features. No word list
and no external probe: the labels come from the pairs, the features from the model. Images with the
highest indices of each prompt are held out and give the stored false positive and false negative rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from hsteer.errors import HsteerError, as_field, field_errors
from hsteer.generation.x0 import X0Capture, check_x0_readable
from hsteer.steering.bank import ConceptBank
from hsteer.steering.detectors import FEATURES, LinearDetector
from hsteer.model.denoisers import call_defaults
from hsteer.model.geometry import resolve_resolution
from hsteer.model.sites import denoiser_of, family_of
from hsteer.model.geometry import unet_fingerprint

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


@dataclass(frozen=True)
class DetectorFitConfig:
    """How a detector is fitted: decision step of `steps`, features, images per prompt, the held-out
    share, the seed of the first image, and the classifier's L2 penalty."""

    step: int | None = None  # None: the model family's (`Family.guard_step`: 4 on a U-Net, 2 on a transformer)
    steps: int = 20
    guidance: float = 4.0
    features: str = "latent"
    images_per_prompt: int = 16
    holdout: float = 0.25
    seed: int = 10_000
    l2: float = 1e-2
    threshold: float = 0.5
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise HsteerError(f"features must be one of {', '.join(FEATURES)}, got {self.features!r}",
                              field="features")
        for name, value, low, high in (("steps", self.steps, 1, 10_000), ("images_per_prompt",
                                       self.images_per_prompt, 2, 100_000), ("batch_size", self.batch_size, 1, 4096)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise HsteerError(f"{name} must be an integer from {low} to {high}, got {value!r}", field=name)
        if self.step is not None and (isinstance(self.step, bool) or not isinstance(self.step, int)
                                      or not 0 <= self.step < self.steps):
            raise HsteerError(f"step (the decision step) must be an integer from 0 to {self.steps - 1}, got "
                              f"{self.step!r}", field="step")
        from hsteer.checks import check_float, check_seed

        for name in ("holdout", "threshold"):
            value = as_field(name, check_float, getattr(self, name), 0.0, above=True, maximum=1.0)
            if value >= 1:
                raise HsteerError(f"{name} must lie strictly between 0 and 1, got {value!r}", field=name)
        as_field("guidance", check_float, self.guidance, -1e4, maximum=1e4)
        check_float("l2", self.l2, 0.0, maximum=1e6)
        as_field("seed", check_seed, self.seed, self.images_per_prompt)


def prompts_of_group(bank: ConceptBank, group: str) -> tuple[list[str], list[str]]:
    """(harmful, harmless) prompts of a group's concepts: pairs whose sides differ give a harmful neutral
    prompt and a clean target; pairs mapped to themselves are harmless; a negative prompt added to the
    neutral one is harmful."""
    harmful: list[str] = []
    harmless: list[str] = []
    for concept in bank.group(group):
        meta = concept.meta
        for pair in meta.get("pairs") or []:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                continue
            (harmful if pair[0] != pair[1] else harmless).append(pair[0])
            harmless.append(pair[1])
        neutral, negative = meta.get("neutral"), meta.get("negative")
        if isinstance(neutral, str) and isinstance(negative, str) and negative:
            harmful.append(f"{neutral} {negative}".strip())
            harmless.append(neutral)
    harmful, harmless = list(dict.fromkeys(harmful)), list(dict.fromkeys(harmless))
    harmless = [p for p in harmless if p not in set(harmful)]
    if not harmful or not harmless:
        raise HsteerError(f"the concepts of group {group!r} record no prompts to fit from (pairs, or neutral + "
                          "negative); give harmful and harmless prompts explicitly", field=("harmful", "harmless"))
    return harmful, harmless


@torch.no_grad()
def with_decision_step(pipe: Pipeline, config: DetectorFitConfig) -> DetectorFitConfig:
    """`config` with its decision step: its own, or the model family's default (`Family.guard_step`)."""
    if config.step is not None:
        return config
    from hsteer.model.families import family_for

    return replace(config, step=min(family_for(pipe).guard_step, config.steps - 1))


def x0_features(pipe: Pipeline, prompts: Sequence[str], config: DetectorFitConfig,
                negative_prompt: str | None = None
                ) -> torch.Tensor:
    """Features of x0-hat at the decision step for each prompt's `images_per_prompt` seeds (prompt-major:
    image i of a prompt has seed `config.seed + i`, as `generate` numbers them), `(N, D)`."""
    config = with_decision_step(pipe, config)
    height, width = resolve_resolution(pipe, None, None)
    device = torch.device(getattr(pipe, "_execution_device", None) or denoiser_of(pipe).device)
    gen_device = "cpu" if device.type == "mps" else device
    jobs = [(p, config.seed + i) for p in prompts for i in range(config.images_per_prompt)]
    rows: list[torch.Tensor] = []
    found: dict[str, torch.Tensor] = {}

    def keep(x0, decode):
        found["x"] = x0 if config.features == "latent" else decode()
        return True  # nothing after the decision step is needed

    for start in range(0, len(jobs), config.batch_size):
        chunk = jobs[start:start + config.batch_size]

        call: dict[str, Any] = {"num_inference_steps": config.steps, "guidance_scale": config.guidance,
                                "height": height, "width": width, **call_defaults(pipe)}
        if negative_prompt:
            call["negative_prompt"] = [negative_prompt] * len(chunk)
        with X0Capture(pipe, config.step, keep, height, width):
            pipe([p for p, _ in chunk], output_type="latent",
                 generator=[torch.Generator(gen_device).manual_seed(s) for _, s in chunk], **call)
        rows.append(found["x"].reshape(len(chunk), -1).float().cpu())
    return torch.cat(rows)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                       torch.Tensor]:
    """(weight, bias, mean, std) of an L2-penalised logistic regression on standardised features."""
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-4)
    z = (x - mean) / std
    weight = torch.zeros(z.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ weight + bias, y)
        loss = loss + l2 * weight.pow(2).sum() / z.shape[1] ** 0.5
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    return weight.detach(), bias.detach(), mean, std


def _rates(scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> dict[str, float]:
    flagged = scores > threshold
    negatives, positives = labels == 0, labels == 1
    return {"false_positive_rate": float(flagged[negatives].float().mean()) if negatives.any() else 0.0,
            "false_negative_rate": float((~flagged[positives]).float().mean()) if positives.any() else 0.0,
            "held_out_images": int(labels.numel())}


def check_fit_prompts(harmful: Sequence[str], harmless: Sequence[str]) -> tuple[list[str], list[str]]:
    """Two non-empty lists of distinct, non-empty texts, no prompt on both sides (it would teach the detector
    that one image is both harmful and harmless)."""
    from hsteer.checks import check_text

    lists = []
    for label, prompts in (("harmful", harmful), ("harmless", harmless)):
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise HsteerError(f"the {label} prompts must be a list of texts, got {type(prompts).__name__}")
        for prompt in prompts:
            with field_errors(label):
                check_text(f"a {label} prompt ({label})", prompt)
            if not prompt.strip():
                raise HsteerError(f"a {label} prompt ({label}) is empty", field=label)
        lists.append(list(dict.fromkeys(prompts)))
    if not lists[0] or not lists[1]:
        raise HsteerError("fitting a harm detector needs at least one harmful and one harmless prompt")
    both = [p for p in lists[0] if p in set(lists[1])]
    if both:
        raise HsteerError(f"the prompt {both[0][:80]!r} is given as harmful and as harmless; give each prompt one "
                          "label")
    return lists[0], lists[1]


def fit_detector(pipe: Pipeline, harmful: Sequence[str], harmless: Sequence[str],
                 config: DetectorFitConfig | None = None,
                 negative_prompt: str | None = None) -> LinearDetector:
    """A `LinearDetector` learned on x0-hat of the model's own plain images of `harmful` (1) and `harmless`
    (0) prompts; its meta holds the prompts and the held-out error rates."""
    config = config or DetectorFitConfig()
    harmful, harmless = check_fit_prompts(harmful, harmless)
    check_x0_readable(pipe.scheduler)
    config = with_decision_step(pipe, config)
    features = x0_features(pipe, harmful + harmless, config, negative_prompt)
    per = config.images_per_prompt
    labels = torch.tensor([1.0] * (len(harmful) * per) + [0.0] * (len(harmless) * per))
    held = torch.tensor([i % per >= per - max(1, round(per * config.holdout)) for i in range(len(labels))])
    weight, bias, mean, std = fit_logistic(features[~held], labels[~held], config.l2)
    detector = LinearDetector(weight, bias, mean, std, step=config.step, steps=config.steps,
                              threshold=config.threshold, features=config.features)
    detector.feature_shape = (int(features.shape[1]),)
    held_scores = detector.score(features[held])
    train_scores = detector.score(features[~held])
    detector.meta = {"harmful_prompts": harmful, "harmless_prompts": harmless, "images_per_prompt": per,
                     "seed": config.seed, "guidance": config.guidance, "l2": config.l2,
                     **_rates(held_scores, labels[held], config.threshold),
                     "train_error": float(((train_scores > config.threshold).float() != labels[~held]).float().mean()),
                     "family": family_of(pipe), "unet_fingerprint": unet_fingerprint(denoiser_of(pipe))}
    return detector
