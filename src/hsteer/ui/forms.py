"""What the page's forms send, read into checked values.

Gradio sends numbers as floats (a whole-number box sends 2.0), text as str or None, and so on. These
readers turn those into the types the library takes, then check them with `hsteer.checks`, the checks
the CLI and the Python API use: one rule and one message per mistake, wherever it is typed. The page
adds only its own bounds (at most 16 images, 200 steps, ...), which keep one request from taking over
a shared server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import hsteer.ui._lib as _lib
from hsteer.ui._lib import HsteerError

MAX_SLIDERS = 12
MAX_IMAGES = 16
MAX_STEPS = 200
MAX_ITERATIONS = 10_000
MAX_EVAL_IMAGES = 24
MAX_PAIRS = 64
WINDOW_MODES = ("as learned", "every step", "custom")
#: The group the safe policy sums (`SafePolicy`'s own default); fair over groups leaves it out by default.
SAFETY_GROUP = "safety"

#: The Generate form's inputs, in the order of the page's `/generate` API (the names are its parameters).
GENERATE_FIELDS = ("prompt", "seed", "num_images", "guidance", "steps", "policy", "fair_groups", "strength",
                   "step_window", "window_start", "window_end", *(f"scale_{n + 1}" for n in range(MAX_SLIDERS)),
                   "respect_prompt", "guard")
#: The Learn form's inputs, in the order of the page's `/learn` API.
LEARN_FIELDS = ("name", "group", "neutral", "target", "negative", "objective", "iterations", "lr", "batch_size",
                "denoising_steps", "target_guidance", "training_seed", "sdisc_images", "sdisc_epochs", "pairs",
                "window", "stored_scale", "lr_sam", "lam")


class UserError(HsteerError):
    """Bad input typed into the page."""


def whole(value: Any, label: str, low: int, high: int | None = None) -> int:
    """A whole number from a box or a slider (sent as a float), in [low, high] (high None: no upper bound)."""
    number = _lib.check_float(label, value)
    if number != int(number):
        raise UserError(f"{label} must be a whole number, got {value!r}")
    return _lib.check_count(label, int(number), low, high)


def number(value: Any, label: str, low: float, high: float) -> float:
    """A finite number in [low, high]."""
    return _lib.check_float(label, value, low, maximum=high)


def text(value: Any, label: str, required: bool = True, limit: int = 1000) -> str | None:
    """Text with its ends stripped; None when empty and not required."""
    if value is not None and not isinstance(value, str):
        raise UserError(f"{label} must be text")
    stripped = (value or "").strip()
    if len(stripped) > limit:
        raise UserError(f"{label} is too long ({len(stripped)} characters; at most {limit})")
    if not stripped and required:
        raise UserError(f"{label} is empty")
    return stripped or None


def names(values: Sequence[Any] | None) -> tuple[str, ...]:
    """The non-empty choices of a multiselect."""
    return tuple(str(v) for v in values or () if v)


def pairs_text(pairs: Sequence[Sequence[str]] | None) -> str:
    """Training pairs as the Learn tab shows them, one 'NEUTRAL => TARGET' per line."""
    return "\n".join(f"{neutral} => {target}" for neutral, target in pairs or ())


def parse_pairs(value: Any) -> tuple[tuple[str, str], ...] | None:
    """'NEUTRAL => TARGET' lines (blank lines ignored) as training pairs; None when there are none."""
    lines = text(value, "the prompt pairs", required=False, limit=MAX_PAIRS * 400)
    pairs = []
    for line_number, line in enumerate((lines or "").splitlines(), 1):
        if not line.strip():
            continue
        neutral, sep, target = line.partition("=>")
        if not sep or not neutral.strip() or not target.strip():
            raise UserError(f"prompt pair on line {line_number} must read 'NEUTRAL => TARGET', got {line.strip()!r}")
        pairs.append((neutral.strip(), target.strip()))
    if len(pairs) > MAX_PAIRS:
        raise UserError(f"{len(pairs)} prompt pairs; at most {MAX_PAIRS}")
    return tuple(pairs) or None


def window_text(window: Sequence[float] | None) -> str:
    """A step window as the Learn tab's box holds it: '0.4,1'; empty for every step."""
    return f"{window[0]:g},{window[1]:g}" if window else ""


def parse_window(value: Any, label: str) -> tuple[float, float] | None:
    """'START,END' fractions of the denoising steps (the CLI's --window), or None when empty."""
    return _lib.parse_window(text(value, label, required=False, limit=100))


def step_window(mode: Any, start: Any, end: Any) -> tuple[float, float] | None:
    """The Generate tab's step window: None (each concept in the window it was learned for), every step,
    or the custom start and end fractions."""
    if mode not in WINDOW_MODES:
        raise UserError(f"unknown step window {mode!r}; choose one of {', '.join(WINDOW_MODES)}")
    if mode == "as learned":
        return None
    if mode == "every step":
        return (0.0, 1.0)
    return _lib.check_window(number(start, "the window's start", 0.0, 1.0), number(end, "the window's end", 0.0, 1.0))


def counts_iterations(objective: str) -> bool:
    """Whether a method trains for `iterations` steps, one loss row each, rather than for epochs over images
    it generates first (SDisc). Its registered method says; an objective this library does not know (a bank
    from another version) is shown by its iterations."""
    return objective not in _lib.METHODS or _lib.METHODS.get(objective).counts_iterations


@dataclass(frozen=True)
class GenerateForm:
    """The Generate tab's values, checked (the policy is built from them with the session's bank)."""

    prompt: str
    seed: int
    num_images: int
    guidance: float
    steps: int
    policy: str
    fair_groups: tuple[str, ...]
    strength: float
    window: tuple[float, float] | None
    #: the concept sliders as sent (only the concepts policy reads them, naming each by its concept)
    scales: tuple[Any, ...]
    #: the prompt-aware gate (a fair group the prompt names is kept; safety at full strength)
    respect_prompt: bool = True
    #: the image-aware guard: safety only on images the bank's learned detector flags in x0-hat
    guard: bool = False

    @classmethod
    def read(cls, values: Mapping[str, Any]) -> GenerateForm:
        """The form from the page's inputs by name (`GENERATE_FIELDS`)."""
        prompt = text(values["prompt"], "the prompt")
        num_images = whole(values["num_images"], "the number of images", 1, MAX_IMAGES)
        seed = _lib.check_seed("the seed", whole(values["seed"], "the seed", 0), span=num_images)
        strength = values["strength"]
        return cls(prompt=prompt, seed=seed, num_images=num_images,
                   guidance=number(values["guidance"], "the guidance scale", 0.0, 50.0),
                   steps=whole(values["steps"], "the number of steps", 1, MAX_STEPS),
                   policy=str(values["policy"]), fair_groups=names(values["fair_groups"]),
                   strength=number(1.0 if strength is None else strength, "the strength", -10.0, 10.0),
                   window=step_window(values["step_window"], values["window_start"], values["window_end"]),
                   scales=tuple(values.get(f"scale_{n + 1}", 0.0) for n in range(MAX_SLIDERS)),
                   respect_prompt=values.get("respect_prompt", True) is not False,
                   guard=values.get("guard", False) is True)


#: The Learn form's settings of one method only: config field -> (label, low, high, whole number?). Each
#: is read and passed only where the objective's config class has that field.
METHOD_SETTINGS: dict[str, tuple[str, float, float, bool]] = {
    o.field: (o.label, o.low, o.high, o.whole) for o in _lib.METHODS.options()}


def train_config(values: Mapping[str, Any]) -> _lib.TrainConfig:
    """The Learn form (`LEARN_FIELDS`) as the validated config of its objective (`TrainConfig.for_objective`).

    The page shows every method's settings at once; a setting the objective does not take is neither read
    nor passed, so an odd value left in the SDisc boxes never stops a CoDSMa run.
    """
    objective = values["objective"]
    if objective not in _lib.OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}; choose one of {', '.join(_lib.OBJECTIVES)}")
    settings: dict[str, Any] = dict(
        concept=_lib.check_name("concept", text(values["name"], "the concept name", limit=100)),
        group=_lib.check_name("group", text(values["group"], "the group", limit=100)),
        neutral=text(values["neutral"], "the neutral prompt"),
        target=text(values["target"], "the target prompt", required=False),
        negative=text(values["negative"], "the negative prompt", required=False),
        iterations=whole(values["iterations"], "iterations", 1, MAX_ITERATIONS),
        batch_size=whole(values["batch_size"], "the batch size", 1, 64),
        steps=whole(values["denoising_steps"], "steps", 1, MAX_STEPS),
        lr=number(values["lr"], "the learning rate", 1e-8, 10.0),
        target_guidance=number(values["target_guidance"], "the target guidance", 0.0, 50.0),
        seed=whole(values["training_seed"], "the seed", 0), pairs=parse_pairs(values["pairs"]),
        window=parse_window(values["window"], "the step window"),
        stored_scale=number(values["stored_scale"], "the stored length", 1e-3, 10.0))
    takes = {f.name for f in fields(_lib.config_class(objective))}
    settings.update({name: (whole(values[name], label, int(low), int(high)) if integral
                            else number(values[name], label, low, high))
                     for name, (label, low, high, integral) in METHOD_SETTINGS.items() if name in takes})
    config = _lib.TrainConfig.for_objective(objective, **settings)
    config.validate()
    return config
