"""The adaptive attack: the white-box attack against a guarded defence, through the guard's detector.

A guarded defence draws an unflagged image plain and a flagged one with the safety concept. So an attacker
who knows the guard wants a prompt whose images (a) carry the harm on the path the guard leaves alone and
(b) do not trip the detector at its decision step. The loss adds to the white-box loss (the defence's
guided prediction for the adversarial prompt against the undefended model's for the harm prompt, on the
path without the guarded group) a hinge through the detector:

    L = L_whitebox + weight * mean(max(0, logit(x0_hat_k) - logit(threshold) + margin))

where x0_hat_k is the predicted clean image at the decision step k, from the target images noised to step
k (the same fixed noise every step): on a U-Net (x_k - sqrt(1 - a_k) * eps(x_k, k, adversarial prompt)) /
sqrt(a_k), on a flow model (SD3, FLUX) x_k - sigma_k * v(x_k, k, adversarial prompt), as the guard reads it
from the sampler; logit is the learned detector's (differentiable in x0-hat, so the gradient reaches the
tokens), on the latents as the sampler holds them (FLUX: packed) or on the decoded pixels. The discrete
refinement scores candidates with the same loss. Same budget as the white-box attack.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from hsteer.attacks.text import encode_prompt_grad, straight_through
from hsteer.attacks.whitebox import WhiteboxAttack, WhiteboxConfig, stream_generator
from hsteer.errors import HsteerError
from hsteer.generation.guard import Guard, StoredDetector
from hsteer.generation.x0 import decode_latents


@dataclass(frozen=True)
class AdaptiveConfig(WhiteboxConfig):
    """The white-box budget, plus the detector term's weight and margin (in logits)."""

    weight: float = 1.0
    margin: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("weight", "margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise HsteerError(f"adaptive {name} must be a finite number >= 0, got {value!r}")


class AdaptiveAttack(WhiteboxAttack):
    """The white-box attack on one harm prompt, plus the hinge through the guard's learned detector."""

    def __init__(self, defence, teacher, vocab, prompt: str, config: AdaptiveConfig, *, guard: Guard,
                 **kwargs) -> None:
        if not isinstance(guard.detector, StoredDetector):
            raise HsteerError("the adaptive attack differentiates through the guard's learned detector; a "
                              f"{guard.name!r} detector gives no gradient (fit one: hsteer guard fit)")
        super().__init__(defence, teacher, vocab, prompt, config, **kwargs)
        self.guard = guard
        gen = stream_generator(self.seed, self.index, 3, 0)
        n = config.val_batch
        which = torch.randint(len(self.targets), (n,), generator=gen)
        noise = torch.randn((n, *self.targets.shape[1:]), generator=gen).to(self.targets.device)
        self.k = torch.full((n,), guard.step, dtype=torch.long, device=self.schedule.timesteps.device)
        self.t_k = self.schedule.timesteps[self.k]
        self.x_k = self.schedule.noised(self.targets[which.to(self.targets.device)], noise, self.k)
        self.cut = math.log(guard.threshold / (1 - guard.threshold))

    def detector_logits(self, cond, draw) -> torch.Tensor:
        """The detector's logits on x0-hat at the decision step for the prompt `cond` (differentiable)."""
        eps = self.defence.eps(self.schedule, self.x_k, self.t_k, self.guard.step, cond, self.guidance, draw)
        x0 = self.schedule.x0_hat(eps, self.x_k, self.k)
        detector = self.guard.detector.detector
        features = x0 if detector.features == "latent" else decode_latents(self.pipe, x0, self.defence.height,
                                                                           self.defence.width)
        return detector.logit(features.reshape(features.shape[0], -1).float())

    def loss(self, choice: torch.Tensor, sample, vectors=None):
        """The attack's loss for one token choice: the harm reconstruction error of the defended model's
        noise prediction plus the weighted hinge that keeps the defence's detector below its cut. With
        `vectors`, gradients flow to them (straight-through); without, it is only evaluated."""
        text = self.text(choice)
        draw, _ = self.defence.draw(text, self.seed)
        ids = [self.vocab.ids[n][choice] for n in range(len(self.vocab.ids))]
        grad = contextlib.nullcontext() if vectors is not None else torch.no_grad()
        with grad:
            if vectors is None:
                cond = encode_prompt_grad(self.pipe, text, self.defence.base)
            else:
                with straight_through(self.pipe, self.positions, ids, vectors):
                    cond = encode_prompt_grad(self.pipe, text, self.defence.base)
            eps = self._eps(self.defence, sample.x, sample.t, sample.steps, cond, draw)
            harm = torch.mean((eps - sample.reference) ** 2)
            hinge = torch.relu(self.detector_logits(cond, draw) - self.cut + self.config.margin).mean()
            return harm + self.config.weight * hinge
