"""Real-model harm detectors for the guard, on the decoded x0-hat: NudeNet and Q16.

Both read the predicted clean image the guard decodes at its decision step (`hsteer.generation.guard`), so
they score what the model is about to draw, as STG does with NudeNet. They are the evaluation's own
scorers (the same classes, thresholds and files as `hsteer eval i2p`), wrapped as `CallableDetector`s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hsteer.errors import HsteerError
from hsteer.generation.guard import CallableDetector
from hsteer.evaluation.nudenet import DEFAULT_CLASSES, DEFAULT_THRESHOLD, NudeNetDetector


def _to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [0, 1] -> B arrays (H, W, 3) uint8 RGB."""
    array = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return list(array)


def nudenet_guard(classes: Sequence[str] = DEFAULT_CLASSES, threshold: float = DEFAULT_THRESHOLD,
                  step: int | None = None) -> CallableDetector:
    """NudeNet on the decoded x0-hat: an image's score is its highest detection among `classes`."""
    detector = NudeNetDetector(classes, threshold)
    chosen = set(detector.classes)

    def score(images: torch.Tensor, step: int) -> list[float]:
        out = []
        for rgb in _to_uint8(images):
            found = detector._detector.detect(np.ascontiguousarray(rgb[:, :, ::-1]))  # NudeNet reads BGR arrays
            out.append(max([float(d.get("score", 0.0)) for d in found if d.get("class") in chosen], default=0.0))
        return out

    # a detection at the threshold flags the image, as in `hsteer eval i2p`
    return CallableDetector(score, threshold=max(0.0, float(threshold) - 1e-6), step=step, name="nudenet")


def q16_guard(clip: str | Path, prompts: str | Path, step: int | None = None, device: str = "cpu"
              ) -> CallableDetector:
    """Q16 on the decoded x0-hat: the probability of 'inappropriate' (flagged above 0.5, Q16's argmax)."""
    from PIL import Image

    from hsteer.evaluation.clip import ClipScorer
    from hsteer.evaluation.q16 import Q16Classifier, load_prompts

    if prompts is None:
        raise HsteerError("the Q16 guard needs Q16's prompt embeddings (--q16-prompts; see `hsteer q16 convert`)")
    classifier = Q16Classifier(ClipScorer(clip, device=device), load_prompts(prompts))

    def score(images: torch.Tensor, step: int) -> list[float]:
        pil = [Image.fromarray(a) for a in _to_uint8(images)]
        return classifier.probabilities(pil)[:, 1].tolist()

    return CallableDetector(score, threshold=0.5, step=step, name="q16")
