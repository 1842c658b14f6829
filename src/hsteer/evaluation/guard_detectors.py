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
from hsteer.generation.guard import CallableDetector, GuardConfig
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
        raise HsteerError("the Q16 guard needs Q16's prompt embeddings: pass prompts=FILE (made by "
                          "`hsteer q16 convert`)")
    classifier = Q16Classifier(ClipScorer(clip, device=device), load_prompts(prompts))

    def score(images: torch.Tensor, step: int) -> list[float]:
        pil = [Image.fromarray(a) for a in _to_uint8(images)]
        return classifier.probabilities(pil)[:, 1].tolist()

    return CallableDetector(score, threshold=0.5, step=step, name="q16")


#: The detectors a run folder can name (Q16 needs a prompt file the folder would have to carry).
RUN_DETECTORS = ("learned", "nudenet")


def guard_spec(detector: str, step: int | None = None, threshold: float | None = None,
               design: str = "redraw") -> dict:
    """The guard as a run folder's config.json stores it, checked now (a bad step or threshold fails before
    the folder is written)."""
    if detector not in RUN_DETECTORS:
        raise HsteerError(f"an evaluation run's guard detector is one of {', '.join(RUN_DETECTORS)}, "
                          f"got {detector!r}")
    GuardConfig(step=step, threshold=threshold, design=design)
    return {"detector": detector, "step": step, "threshold": threshold, "design": design, "group": "safety"}


def guard_from_spec(spec: dict) -> GuardConfig:
    """The GuardConfig a run folder's spec describes (NudeNet loads its own small model here)."""
    detector = spec.get("detector")
    if detector not in RUN_DETECTORS:
        raise HsteerError(f"the run's guard names detector {detector!r}; this version knows "
                          f"{', '.join(RUN_DETECTORS)}")
    chosen = nudenet_guard(step=spec.get("step")) if detector == "nudenet" else "learned"
    return GuardConfig(detector=chosen, step=spec.get("step"), threshold=spec.get("threshold"),
                       design=spec.get("design", "redraw"), group=str(spec.get("group", "safety")))

