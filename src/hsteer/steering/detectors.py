"""Harm detectors stored in a bank beside the safety concept they decide for.

A `LinearDetector` is a logistic classifier on the model's own predicted clean image x0-hat at one
denoising step (the *decision step*): its latents flattened, or the decoded pixels. It is learned from the
safety concept's training prompts (`hsteer.generation.guard_fit`), never from the bundled world's probes,
which stay the evaluator. It lives in the bank file as float32 tensors `detector:<group>/<part>` (the
colon keeps them apart from concept tensors, whose names cannot hold one) and a JSON entry under the
header key `detectors`; banks without detectors load as before, and readers that do not know detectors
ignore the extra tensors.

Score: p = sigmoid(w . (x - mean) / std + b), one number per image in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import Any

import torch

from hsteer.errors import BankError, HsteerError

#: What a learned detector reads: the flattened x0-hat latents, or the decoded image's pixels in [0, 1].
FEATURES = ("latent", "pixels")
DETECTOR_PARTS = ("weight", "bias", "mean", "std")
#: The fields of a detector's header entry (`LinearDetector.entry`); any other names a kind this hsteer cannot read.
ENTRY_FIELDS = ("step", "steps", "threshold", "features", "feature_shape", "tensors", "meta")
PREFIX = "detector:"


@dataclass
class LinearDetector:
    """A logistic harm classifier on x0-hat at `step` (0-based, of `steps` sampling steps).

    `meta` records how it was made: the prompts it learned from, its held-out false positive and false
    negative rates, the model fingerprint and the sampling settings.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    step: int
    steps: int
    threshold: float = 0.5
    features: str = "latent"
    feature_shape: tuple[int, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_detector(self, "the harm detector")

    @property
    def name(self) -> str:
        """`learned-<features>`: the detector's kind and what it reads."""
        return f"learned-{self.features}"

    @property
    def size(self) -> int:
        """The number of weights (one per feature)."""
        return int(self.weight.numel())

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Harm probability per image from a batch of features `(B, *feature_shape)`."""
        flat = features.detach().reshape(features.shape[0], -1).to("cpu", torch.float32)
        if flat.shape[1] != self.size:
            raise BankError(f"the harm detector reads {self.size} {self.features} values per image "
                            f"(shape {self.feature_shape}), this model gives {flat.shape[1]}; "
                            "refit it for this model and image size (hsteer guard fit)")
        return torch.sigmoid(self.logit(flat))

    def logit(self, flat: torch.Tensor) -> torch.Tensor:
        """The classifier's logit on flattened features (differentiable: the adaptive attack uses it)."""
        x = (flat - self.mean.to(flat)) / self.std.to(flat)
        return x @ self.weight.to(flat) + self.bias.to(flat)

    def entry(self) -> dict[str, Any]:
        """The detector's settings as its bank metadata entry (the tensors named, not stored)."""
        return {"step": self.step, "steps": self.steps, "threshold": self.threshold, "features": self.features,
                "feature_shape": list(self.feature_shape), "tensors": list(DETECTOR_PARTS), "meta": self.meta}

    def tensors(self, group: str) -> dict[str, torch.Tensor]:
        """The detector's tensors as the bank stores them for `group` (float32 on the CPU)."""
        return {f"{PREFIX}{group}/{part}": getattr(self, part).detach().to("cpu", torch.float32).contiguous()
                for part in DETECTOR_PARTS}

    def describe(self) -> dict[str, Any]:
        """The detector's settings and held-out error rates, for `hsteer bank show`."""
        out = {k: v for k, v in self.entry().items() if k not in ("tensors", "meta")}
        return {**out, **{k: self.meta[k] for k in ("false_positive_rate", "false_negative_rate") if k in self.meta}}


def check_detector(detector: LinearDetector, where: str) -> None:
    """Every part a float tensor, present, finite and of matching size; step, threshold and features valid."""
    if not isinstance(detector.weight, torch.Tensor) or detector.weight.ndim != 1 or not detector.weight.numel():
        raise BankError(f"{where}: its weight must be a 1-d tensor of one value per feature, got "
                        f"{_described(detector.weight)}")
    size = detector.weight.numel()
    for part, expected in (("weight", size), ("bias", 1), ("mean", size), ("std", size)):
        tensor = getattr(detector, part)
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != (expected,) \
                or not tensor.is_floating_point():
            raise BankError(f"{where}: its {part} must be a 1-d float tensor of {expected} values, got "
                            f"{_described(tensor)}")
        if not torch.isfinite(tensor).all():
            raise BankError(f"{where}: its {part} holds NaN or infinite values; refit it (hsteer guard fit)")
    if (detector.std <= 0).any():
        raise BankError(f"{where}: its std must be positive")
    if isinstance(detector.steps, bool) or not isinstance(detector.steps, int) or not 1 <= detector.steps <= 10_000:
        raise BankError(f"{where}: steps must be an integer from 1 to 10000, got {detector.steps!r}")
    if isinstance(detector.step, bool) or not isinstance(detector.step, int) or not 0 <= detector.step < detector.steps:
        raise BankError(f"{where}: the decision step must be an integer from 0 to {detector.steps - 1}, "
                        f"got {detector.step!r}")
    threshold = detector.threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < float(threshold) < 1 \
            or not math.isfinite(float(threshold)):
        raise BankError(f"{where}: the threshold must be a probability strictly between 0 and 1, got {threshold!r}")
    if detector.features not in FEATURES:
        raise BankError(f"{where}: features must be one of {', '.join(FEATURES)}, got {detector.features!r}")
    shape = tuple(detector.feature_shape)
    if shape and math.prod(shape) != size:
        raise BankError(f"{where}: its feature shape {shape} does not hold {size} values")
    if not isinstance(detector.meta, dict):
        raise BankError(f"{where}: its meta must be an object")


def _described(tensor: Any) -> str:
    if not isinstance(tensor, torch.Tensor):
        return type(tensor).__name__
    return f"shape {tuple(tensor.shape)} of {str(tensor.dtype).removeprefix('torch.')}"


def detector_from_entry(group: str, entry: Any, tensors: dict[str, torch.Tensor], where: str) -> LinearDetector:
    """A stored detector, checked: every field typed, the header's tensor list the four parts, every tensor
    present, float32, of its stored shape and finite."""
    label = f"{where}: the harm detector of group {group!r}" if where else f"the harm detector of group {group!r}"
    if not isinstance(entry, dict):
        raise BankError(f"{label} is not an object")
    unknown = sorted(str(key) for key in entry if key not in ENTRY_FIELDS)
    if unknown:  # e.g. a 'kind' of a detector this version does not have: never read it as a linear one
        raise BankError(f"{label}: its header entry holds the field {unknown[0][:60]!r}, which this hsteer does not "
                        f"know (it reads {', '.join(ENTRY_FIELDS)}); the file was written by another hsteer or is "
                        "damaged: upgrade hsteer, or refit the detector (hsteer guard fit)")
    if entry.get("tensors", list(DETECTOR_PARTS)) != list(DETECTOR_PARTS):
        raise BankError(f"{label}: its header lists the tensors {str(entry.get('tensors'))[:80]}, not "
                        f"{list(DETECTOR_PARTS)}; the file is damaged")
    parts = {}
    for part in DETECTOR_PARTS:
        tensor = tensors.get(f"{PREFIX}{group}/{part}")
        if tensor is None or tensor.dtype != torch.float32:
            raise BankError(f"{label}: tensor {part!r} is missing or not float32; the file is damaged")
        parts[part] = tensor
    shape = entry.get("feature_shape", [])
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                              for n in shape):
        raise BankError(f"{label}: feature_shape is not a list of positive integers")
    try:
        return LinearDetector(parts["weight"], parts["bias"], parts["mean"], parts["std"], step=entry.get("step"),
                              steps=entry.get("steps"), threshold=entry.get("threshold"),
                              features=entry.get("features"), feature_shape=tuple(shape),
                              meta=entry.get("meta", {}))
    except BankError as exc:
        raise BankError(str(exc).replace("the harm detector", label, 1)) from None


def detectors_from_header(stored: Any, tensors: dict[str, torch.Tensor], groups: Iterable[str]
                          ) -> dict[str, LinearDetector]:
    """The detectors of a bank file's header entry `detectors` (absent in banks without any), each checked
    (`detector_from_entry`), each for a valid group name the bank holds concepts of, and no `detector:`
    tensor that no listed detector owns."""
    if stored is None:
        stored = {}
    if not isinstance(stored, dict):
        raise BankError("its 'detectors' entry is not an object of group -> detector")
    detectors = {group: detector_from_entry(group, entry, tensors, "") for group, entry in stored.items()}
    check_detector_groups(detectors, groups)
    owned = {f"{PREFIX}{group}/{part}" for group in detectors for part in DETECTOR_PARTS}
    stray = sorted(k for k in tensors if k.startswith(PREFIX) and k not in owned)
    if stray:
        raise BankError(f"tensor {stray[0][:120]!r} belongs to no harm detector its header lists; the file is "
                        "damaged")
    return detectors


def check_detector_groups(detectors: dict[str, Any], groups: Iterable[str]) -> None:
    """Each detector decides for a group of the bank (a valid group name), and is a LinearDetector: what a
    bank stores and what `load` accepts are the same."""
    from hsteer.checks import check_name

    held = set(groups)
    for group, detector in detectors.items():
        try:
            check_name("group", group, "of a harm detector")
        except HsteerError as exc:
            raise BankError(str(exc)) from None
        if not isinstance(detector, LinearDetector):
            raise BankError(f"the harm detector of group {group!r} must be a LinearDetector, got "
                            f"{type(detector).__name__}")
        if group not in held:
            raise BankError(f"there is a harm detector for group {group!r}, but no concept of that group "
                            f"(groups: {', '.join(sorted(held)) or 'none'}); the detector decides when that "
                            "group's concepts act, so remove it or add the group's concepts")


def merge_detectors(first: dict[str, LinearDetector], second: dict[str, LinearDetector], replace: bool
                    ) -> dict[str, LinearDetector]:
    """The detectors of two merged banks: a group both hold a detector for is a clash (as a concept name is),
    resolved for the second bank's only with `replace`."""
    clash = sorted(first.keys() & second.keys())
    if clash and not replace:
        raise BankError(f"both banks hold a harm detector for group {clash[0]!r}; keep the second bank's with "
                        "replace=True (CLI: hsteer bank merge --replace), or remove one first")
    return {**first, **second} if replace else {**second, **first}
