"""The image-aware guard: per image, the model's own prediction decides whether the safety concept acts.

Why: a safety concept added to every image redraws some harmless ones, and a gate on the prompt's words
lets through prompts that carry no harm word. What the model is about to draw is readable early: the
predicted clean image x0-hat at an intermediate step already shows the harm. So each batch first runs
plain (with its fair concepts, if any) while the scheduler's step is watched; at the decision step a
detector scores x0-hat per image; flagged images are then redrawn with the safety concept (the default,
*redraw*: from step 0 with the same seed, so a flagged image is exactly the blind safety setting's and an
unflagged image exactly the plain one), or, in the other designs, get it from the step after the decision
(*switch*) or at a strength that grows with the score (*soft*).

A detector is anything with `score(x0_latents, decode, step) -> (B,) scores` and a `threshold`; the bank's
learned detector (`steering.detectors.LinearDetector`) and `CallableDetector` (any function of the decoded
images, e.g. NudeNet or Q16 from `hsteer.evaluation.guard_detectors`) are wrapped here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from hsteer.errors import HsteerError
from hsteer.generation.records import ImageJob
from hsteer.steering.bank import Concept, ConceptBank
from hsteer.steering.detectors import LinearDetector

#: How a flagged image gets the safety concept (see the module docstring).
DESIGNS = ("redraw", "switch", "soft")
#: What `GuardConfig.detector` may name besides a detector object: the bank's learned detector.
LEARNED = "learned"


@dataclass
class CallableDetector:
    """Any function of the decoded x0-hat images `(B, 3, H, W)` in [0, 1] (and the step) -> a score per image;
    the image is flagged where the score exceeds `threshold`."""

    function: Callable[[torch.Tensor, int], Any]
    threshold: float = 0.5
    step: int | None = None
    name: str = "callable"

    def score(self, x0: torch.Tensor, decode: Callable[[], torch.Tensor], step: int) -> torch.Tensor:
        """The function's score of each image of the batch (decoded from x0-hat), checked: one finite
        number per image."""
        images = decode()
        return checked_scores(self.name, self.function(images, step), images.shape[0])


def detector_scores(name: str, returned: Any) -> torch.Tensor:
    """What a detector function returned as a float64 tensor of scores, or one HsteerError naming the detector
    (text, None, an object, a nested list: never a TypeError from inside torch)."""
    if isinstance(returned, (str, bytes)) or returned is None:
        raise HsteerError(f"the guard's detector {name!r} returned a {type(returned).__name__}; return one number "
                          "per image (a list, an array or a tensor)")
    try:
        return torch.as_tensor(returned, dtype=torch.float64).detach().reshape(-1).cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise HsteerError(f"the guard's detector {name!r} returned {type(returned).__name__}, not numbers "
                          f"({str(exc)[:80]}); return one number per image") from None


def checked_scores(name: str, returned: Any, images: int) -> torch.Tensor:
    """A detector's scores for a batch of `images`: numbers (`detector_scores`), one per image, finite. Every
    detector's scores pass here (the bank's, NudeNet, Q16, a function, any object with `score`)."""
    scores = detector_scores(name, returned)
    if scores.numel() != images:
        raise HsteerError(f"the guard's detector {name!r} gave {scores.numel()} scores for {images} images; "
                          "return one number per image")
    if not bool(torch.isfinite(scores).all()):
        raise HsteerError(f"the guard's detector {name!r} gave a NaN or infinite score")
    if bool((scores.abs() > torch.finfo(torch.float32).max).any()):
        raise HsteerError(f"the guard's detector {name!r} gave a score beyond float32's range "
                          f"({scores.abs().max().item():.3g}); return a probability or a logit")
    return scores.float()


@dataclass
class StoredDetector:
    """The bank's learned detector, read at its own decision step on latents or decoded pixels."""

    detector: LinearDetector

    @property
    def name(self) -> str:
        """The stored detector's name (`learned-<features>`)."""
        return self.detector.name

    @property
    def threshold(self) -> float:
        """The score at and above which an image is flagged."""
        return float(self.detector.threshold)

    @property
    def step(self) -> int:
        """The denoising step the detector decides at (it was fitted there)."""
        return self.detector.step

    def score(self, x0: torch.Tensor, decode: Callable[[], torch.Tensor], step: int) -> torch.Tensor:
        """Each image's score, on the latent x0-hat or on its decoded image, whichever the detector was
        fitted on."""
        return self.detector.score(x0 if self.detector.features == "latent" else decode())


@dataclass(frozen=True)
class GuardConfig:
    """What decides, when, and how a flagged image is made safe.

    `detector`: "learned" (the bank's detector for `group`, fitted with `hsteer guard fit`), a
    `LinearDetector`, a `CallableDetector`, or a plain function of the decoded images. `step`: the
    decision step (0-based; None: the detector's own). `threshold`: None keeps the detector's. `design`:
    "redraw" (default), "switch" or "soft". `soft_width`: for "soft", the score span above the threshold
    over which the strength rises from 0 to 1.
    """

    detector: Any = LEARNED
    group: str = "safety"
    step: int | None = None
    threshold: float | None = None
    design: str = "redraw"
    soft_width: float = 0.2

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise HsteerError(f"unknown guard design {self.design!r}; choose one of {', '.join(DESIGNS)}")
        if self.step is not None and (isinstance(self.step, bool) or not isinstance(self.step, int)
                                      or not 0 <= self.step <= 10_000):
            raise HsteerError(f"the guard's decision step must be an integer from 0, got {self.step!r}")
        for name, value, low, high in (("threshold", self.threshold, 0.0, 1.0), ("soft_width", self.soft_width,
                                                                                  0.0, 1.0)):
            if value is None and name == "threshold":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low < value < high:
                raise HsteerError(f"the guard's {name} must be a number strictly between {low:g} and {high:g}, "
                                  f"got {value!r}")
        from hsteer.checks import check_name

        check_name("group", self.group, "the guard's group")
        if isinstance(self.detector, str) and self.detector != LEARNED:
            raise HsteerError(f"unknown guard detector {self.detector!r}: give 'learned' (the bank's), a detector "
                              "object or a function of the decoded images (CLI: --guard learned|nudenet|q16|none)")


@dataclass
class Decision:
    """What the guard did for one image: the manifest's `guard` entry."""

    detector: str
    step: int
    score: float
    threshold: float
    flagged: bool
    redrawn: bool
    design: str
    strength: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The decision as a manifest row's `guard` entry (score rounded to 6 places; the strength only
        for the soft design)."""
        return {"detector": self.detector, "step": self.step, "score": round(self.score, 6),
                "threshold": self.threshold, "flagged": self.flagged, "redrawn": self.redrawn,
                "design": self.design, **({"strength": round(self.strength, 6)} if self.design == "soft" else {})}


def resolve_detector(config: GuardConfig, bank: ConceptBank | None):
    """The detector object of a config: the bank's learned one (refused, with the fix, when it has none)."""
    detector = config.detector
    if isinstance(detector, str):
        stored = bank.detectors.get(config.group) if bank is not None else None
        if stored is None:
            raise HsteerError(f"the bank has no harm detector for group {config.group!r}; fit one with "
                              "`hsteer guard fit --bank BANK` (or pass another detector)")
        return StoredDetector(stored)
    if isinstance(detector, LinearDetector):
        return StoredDetector(detector)
    if hasattr(detector, "score") and hasattr(detector, "threshold"):
        return detector
    if callable(detector):
        return CallableDetector(detector, name=getattr(detector, "__name__", "callable"))
    raise HsteerError(f"the guard's detector must be 'learned', a LinearDetector, a CallableDetector or a "
                      f"function of the decoded images, got {type(detector).__name__}")


@dataclass
class Guard:
    """A resolved guard for one run: the detector, the decision step and threshold, and the concepts
    (name, scale) a flagged image gets."""

    detector: Any
    step: int
    threshold: float
    design: str
    concepts: list[tuple[str, float]]
    bank: ConceptBank
    steps: int
    soft_width: float = 0.2
    group: str = "safety"

    @property
    def name(self) -> str:
        """The detector's name, for manifests and messages."""
        return str(getattr(self.detector, "name", "detector"))

    def run(self, batch: Sequence[ImageJob], call: Callable[..., Any], capture_factory: Callable[..., Any]):
        """Images of one batch and each image's decision. `call(jobs, capture=None, bank=None)` makes the
        images of `jobs` (numpy, `(B, H, W, 3)`); `capture_factory(step, on_step)` watches x0-hat."""
        scores: dict[str, torch.Tensor] = {}

        def decide(x0: torch.Tensor, decode: Callable[[], torch.Tensor]) -> bool:
            scores["s"] = self.score(x0, decode)
            return self.design == "redraw" and bool((scores["s"] > self.threshold).all())  # all flagged: stop

        capture = capture_factory(self.step, decide)
        images = call(list(batch), capture=capture)
        if "s" not in scores:
            raise HsteerError(f"the guard's decision step {self.step} was never reached ({self.steps} steps); "
                              "choose an earlier step")
        flagged = (scores["s"] > self.threshold).tolist()
        strengths = [self._strength(float(s)) if f else 0.0 for s, f in zip(scores["s"], flagged)]
        if any(flagged):
            redo = [replace(job, concepts=list(job.concepts) + [(n, c * w) for n, c in self.concepts])
                    if f else job for job, f, w in zip(batch, flagged, strengths)]
            second = call(redo, capture=None, bank=self._bank())
            images = images.copy()
            for i, f in enumerate(flagged):
                if f:
                    images[i] = second[i]
        decisions = [Decision(self.name, self.step, float(s), self.threshold, bool(f), bool(f), self.design, w)
                     for s, f, w in zip(scores["s"], flagged, strengths)]
        return images, [list(r.concepts) for r in (redo if any(flagged) else batch)], decisions

    def score(self, x0: torch.Tensor, decode: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The detector's score per image of x0-hat's batch, checked (`checked_scores`)."""
        return checked_scores(self.name, self.detector.score(x0, decode, self.step), int(x0.shape[0]))

    def _strength(self, score: float) -> float:
        if self.design != "soft":
            return 1.0
        return float(min(1.0, max(0.0, (score - self.threshold) / self.soft_width)))

    def _bank(self) -> ConceptBank:
        """The bank a flagged image is made with: "switch" starts the guarded concepts after the decision."""
        if self.design != "switch":
            return self.bank
        start = (self.step + 1) / self.steps
        if start >= 1.0:
            raise HsteerError(f"the 'switch' design starts the safety concept after step {self.step}, the last "
                              "step: choose an earlier decision step")
        names = {n for n, _ in self.concepts}
        moved = [Concept(c.name, c.group, c.objective, c.tensors, {**c.meta, "window": [start, 1.0]})
                 if c.name in names else c for c in self.bank]
        view = ConceptBank(self.bank.hspace_shape, self.bank.unet_fingerprint, moved, self.bank.site, self.bank.family)
        view.detectors = self.bank.detectors
        return view


def build_guard(config: GuardConfig, bank: ConceptBank | None, steps: int, scale: float = 1.0) -> Guard:
    """A run's guard, checked before anything is generated: the bank holds the group, the detector fits the
    run's step count, the decision step lies inside it."""
    if bank is None:
        raise HsteerError("the guard adds the bank's safety concepts to flagged images: pass a bank (CLI: --bank)")
    members = bank.group(config.group)
    detector = resolve_detector(config, bank)
    step = config.step if config.step is not None else getattr(detector, "step", None)
    if step is None:
        step = max(0, steps // 4)
    stored = getattr(detector, "detector", None)
    if stored is not None and config.step is None and stored.steps != steps:
        step = min(steps - 1, round(stored.step * steps / stored.steps))
    if not 0 <= step < steps:
        raise HsteerError(f"the guard's decision step {step} is not one of the run's {steps} steps (0 to "
                          f"{steps - 1}); pass an earlier step")
    if config.design == "switch" and step >= steps - 1:
        raise HsteerError(f"the 'switch' design starts the safety concept after the decision step {step}, and the "
                          f"run has {steps} steps (0 to {steps - 1}): choose a decision step before {steps - 1}")
    threshold = config.threshold if config.threshold is not None else getattr(detector, "threshold", None)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise HsteerError(f"the guard's detector {getattr(detector, 'name', type(detector).__name__)!r} has the "
                          f"threshold {threshold!r}, not a finite number; give GuardConfig(threshold=...)")
    threshold = float(threshold)
    return Guard(detector, int(step), threshold, config.design, [(c.name, float(scale)) for c in members], bank,
                 steps, config.soft_width, config.group)


def without_group(draw: Sequence[tuple[str, float]], bank: ConceptBank, group: str) -> list[tuple[str, float]]:
    """A draw less the guarded group's concepts: those come only with a flagged decision."""
    return [(n, s) for n, s in draw if bank[n].group != group]


class GuardedCall:
    """The guard on an attached pipeline's calls (`Layer.around`): a first pass without the guarded group
    while the detector reads x0-hat, then, if any image is flagged, the same call again (its generators
    re-seeded) with the group added to the flagged images. The provider asks `draws` and `bank`."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.flagged: list[bool] | None = None
        self.strengths: list[float] = []
        self.last: list[dict[str, Any]] = []

    def draws(self, draws: list[list[tuple[str, float]]]) -> list[list[tuple[str, float]]]:
        """Each image's concepts for this pass: without the guarded group on the first pass, with the
        group (scaled by its strength) on flagged images of the second. Refuses a second pass of another
        batch size."""
        plain = [without_group(d, self.guard.bank, self.guard.group) for d in draws]
        if self.flagged is None:
            return plain
        if len(self.flagged) != len(plain):
            raise HsteerError("the guard's second pass made another number of images than its first")
        return [d + [(n, c * w) for n, c in self.guard.concepts] if f else d
                for d, f, w in zip(plain, self.flagged, self.strengths)]

    def bank(self) -> ConceptBank:
        """The bank the current pass draws from (on the second pass, the guard's view that holds the
        guarded group)."""
        return self.guard._bank() if self.flagged is not None else self.guard.bank

    def __call__(self, run: Callable[[], Any], pipe, kwargs: dict) -> Any:
        from hsteer.generation.x0 import X0Capture
        from hsteer.model.geometry import resolve_resolution

        generators = kwargs.get("generator")
        if generators is None:
            raise HsteerError("a guarded pipeline redraws flagged images from their own seeds: pass generator= "
                              "(one torch.Generator per image, or one)")
        generators = list(generators) if isinstance(generators, (list, tuple)) else [generators]
        seeds = [int(g.initial_seed()) for g in generators]
        scores: dict[str, torch.Tensor] = {}

        def decide(x0: torch.Tensor, decode: Callable[[], torch.Tensor]) -> bool:
            scores["s"] = self.guard.score(x0, decode)
            return False

        height, width = resolve_resolution(pipe, kwargs.get("height"), kwargs.get("width"))
        self.flagged = None
        with X0Capture(pipe, self.guard.step, decide, height, width):
            first = run()
        if "s" not in scores:
            raise HsteerError(f"the guard's decision step {self.guard.step} was never reached; pass "
                              "num_inference_steps above it, or attach with an earlier guard step")
        flags = (scores["s"] > self.guard.threshold).tolist()
        strengths = [self.guard._strength(float(s)) if f else 0.0 for s, f in zip(scores["s"], flags)]
        self.last = [Decision(self.guard.name, self.guard.step, float(s), self.guard.threshold, bool(f), bool(f),
                              self.guard.design, w).to_dict() for s, f, w in zip(scores["s"], flags, strengths)]
        if not any(flags):
            return first
        for generator, seed in zip(generators, seeds):
            generator.manual_seed(seed)
        self.flagged, self.strengths = flags, strengths
        try:
            return run()
        finally:
            self.flagged = None
