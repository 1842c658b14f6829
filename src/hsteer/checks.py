"""Argument checks shared by the CLI and the Python API: one check per kind, one message per mistake.

Every check raises `HsteerError` with one line that names the setting by the label its caller gives: the
library gives the keyword (`batch_size`) and marks the error with that field (`hsteer.errors.as_field`), so
the command line shows the option that sets it. Nothing is loaded, created or written before these checks
pass.

Names (concepts, groups) use the character set `NAME_CHARS`: ASCII letters, digits, `_`, `-` and `.`,
starting with a letter, a digit or `_`, at most `NAME_MAX` characters; so a name is never a path
(`/`, `\\`), never `.` or `..`, never hidden and never holds a control character.

The Python API runs the same checks as the CLI: `check_pipeline`, `check_bank_object`, `check_scale`,
`check_window_value` and `check_flags` refuse what a caller of `generate`, `attach` or `train_concept`
can pass that the CLI cannot (a string for a pipeline, a NaN scale, a window of the wrong shape), and
`load_json` reads JSON that hsteer did not just write (bank metadata, manifests, config.json) with a
bounded nesting depth, since Python's parser recurses once per level.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hsteer.errors import HsteerError

NAME_MAX = 100
NAME_CHARS = "ASCII letters, digits, '_', '-' and '.' (starting with a letter, digit or '_')"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

#: Seeds are 0 <= seed < SEED_LIMIT (torch's generators take 64-bit seeds; JSON readers often 63).
SEED_LIMIT = 2**63
#: Image sides are multiples of SIZE_MULTIPLE (the VAE's 8x downsampling) up to SIZE_MAX pixels.
SIZE_MULTIPLE = 8
SIZE_MAX = 8192
#: The largest |scale| a concept or group may be applied with.
SCALE_MAX = 1000.0
#: The largest ratio weight (weights are relative; the bound keeps their sum finite).
RATIO_MAX = 1e6
#: The deepest nesting of arrays and objects accepted in JSON read from a file.
JSON_MAX_DEPTH = 64
WINDOW_RULE = "two finite numbers START, END with 0 <= START < END <= 1"


def check_name(kind: str, name: object, label: str | None = None) -> str:
    """A concept or group name: `NAME_CHARS`, so it can name a folder without leaving it."""
    where = f" ({label})" if label else ""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > NAME_MAX or name in (".", ".."):
        shown = name if isinstance(name, str) and len(name) <= 60 else f"{str(name)[:60]}..."
        raise HsteerError(f"invalid {kind} name {shown!r}{where}: use {NAME_CHARS}, at most {NAME_MAX} characters")
    return name


def check_count(label: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise HsteerError(f"{label} must be a whole number, got {value!r}")
    if value < minimum:
        raise HsteerError(f"{label} must be at least {minimum:,}, got {value}")
    if maximum is not None and value > maximum:
        raise HsteerError(f"{label} must be at most {maximum:,}, got {value}")
    return value


def check_optional_count(label: str, value: object, minimum: int = 1) -> int | None:
    """None (no limit) or a count >= minimum: a limit of 0 and of -1 are refused alike."""
    return None if value is None else check_count(label, value, minimum)


def check_seed(label: str, value: object, span: int = 1, scale: int = 1) -> int:
    """A seed such that every seed derived as `value * scale + i` (i < span) is in [0, SEED_LIMIT)."""
    check_count(label, value, 0)
    top = (SEED_LIMIT - span) // scale
    if value > top:  # type: ignore[operator]
        raise HsteerError(f"{label} must be between 0 and {top}, got {value}")
    return value  # type: ignore[return-value]


def check_size(label: str, value: object) -> int | None:
    """An image side: None (the model's own) or a positive multiple of SIZE_MULTIPLE."""
    if value is None:
        return None
    check_count(label, value, SIZE_MULTIPLE, SIZE_MAX)
    if value % SIZE_MULTIPLE:  # type: ignore[operator]
        raise HsteerError(f"{label} must be a multiple of {SIZE_MULTIPLE}, got {value}")
    return value  # type: ignore[return-value]


def check_float(label: str, value: object, minimum: float | None = None, *, above: bool = False,
                maximum: float | None = None) -> float:
    """A finite number, >= minimum (> minimum with `above`) and <= maximum where given."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise HsteerError(f"{label} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise HsteerError(f"{label} must be a finite number, got {value}")
    if minimum is not None and (number <= minimum if above else number < minimum):
        raise HsteerError(f"{label} must be {'greater than' if above else 'at least'} {minimum:g}, got {value}")
    if maximum is not None and number > maximum:
        raise HsteerError(f"{label} must be at most {maximum:g}, got {value}")
    return number


def check_unique(label: str, values: Iterable[str]) -> None:
    """Refuse a name that occurs twice in `values`, naming it and `label`."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise HsteerError(f"{label} names {value!r} twice")
        seen.add(value)


def check_device(device: object, label: str = "device") -> str:
    """A torch device string that exists on this machine (cpu, cuda, cuda:N, mps)."""
    import torch

    try:
        parsed = torch.device(str(device))
    except (RuntimeError, ValueError):
        raise HsteerError(f"{label}: unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise HsteerError(f"{label} {device}: CUDA is not available on this machine; use {label} cpu")
        if parsed.index is not None and parsed.index >= count:
            raise HsteerError(f"{label} {device}: this machine has {count} CUDA device(s) (0..{count - 1})")
    elif parsed.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise HsteerError(f"{label} {device}: MPS is not available on this machine; use {label} cpu")
    elif parsed.type != "cpu":
        raise HsteerError(f"{label}: unsupported device {device!r}; use cpu, cuda, cuda:N or mps")
    return str(device)


def check_input_file(path: str | Path, label: str) -> Path:
    """A regular, readable file (not a folder, FIFO, device or socket); symlinks are followed."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise HsteerError(f"{label} {path}: no such file") from None
    except OSError as exc:
        raise HsteerError(f"{label} {path}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise HsteerError(f"{label} {path} is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise HsteerError(f"{label} {path} is not a regular file (a FIFO, device or socket); give a file")
    if not os.access(path, os.R_OK):
        raise HsteerError(f"{label} {path}: permission denied")
    return path


def file_kind(mode: int) -> str:
    """'a folder', 'a FIFO', 'a device', 'a socket' or 'a file' for an `st_mode`, for messages."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a file" if stat.S_ISREG(mode) else "not a regular file"


def _mode(path: Path, label: str) -> int | None:
    """`st_mode` of `path` through symlinks; None if nothing is there (or a link points nowhere yet)."""
    try:
        return path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise HsteerError(f"{label} {path}: cannot check it ({exc.strerror or exc})") from None


def check_output_file(path: str | Path, label: str) -> Path:
    """Where a file may be written: nothing yet or a regular file (through symlinks), in a folder.

    Writes replace their target by a rename, so a device (`/dev/null`), FIFO or socket given as an
    output would be replaced by a regular file; they are refused, as folders are.
    """
    path = Path(path)
    mode = _mode(path, label)
    if mode is not None and not stat.S_ISREG(mode):
        raise HsteerError(f"{label} {path} is {file_kind(mode)}, not a regular file; give the path of a file "
                          "to write (new or existing)")
    return _check_parents(path, label)


def check_output_dir(path: str | Path, label: str) -> Path:
    """A folder to write into: a folder or nothing yet, and no file on the way to it."""
    path = Path(path)
    mode = _mode(path, label)
    if mode is not None and not stat.S_ISDIR(mode):
        raise HsteerError(f"{label} {path} exists and is {file_kind(mode)}, not a folder")
    return _check_parents(path, label)


def _check_parents(path: Path, label: str) -> Path:
    """No file on the way to `path`: its nearest existing parent is a folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise HsteerError(f"{label} {path}: {parent} is a file, not a folder")
            break
    return path


def check_threads(label: str, value: object) -> int | None:
    """None (all cores) or a thread count >= 1."""
    return None if value is None else check_count(label, value, 1, 4096)


def _shown(value: object, limit: int = 60) -> str:
    """`value` for a message: its repr (lone surrogates escaped, so it always prints), cut to `limit`."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


# --- text ------------------------------------------------------------------------------------------------


def check_text(label: str, value: object) -> str:
    """Text for a tokenizer (a prompt, an attribute text): a str, without NUL, encodable as UTF-8.

    A command-line argument holding bytes that are not UTF-8 arrives in Python as lone surrogates
    ('\\udcff' for the byte 0xff); the tokenizer fails on them only after the model has loaded.
    """
    if not isinstance(value, str):
        raise HsteerError(f"{label} must be text, got {type(value).__name__} {_shown(value)}")
    if "\x00" in value:
        raise HsteerError(f"{label} holds a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HsteerError(f"{label} {_shown(value)} is not valid UTF-8 text (character {exc.start + 1} is an "
                          "undecodable byte); retype it, or set the terminal to UTF-8") from None
    return value


def prompt_list(label: str, prompts: object) -> list[str]:
    """One prompt (a str) or a list or tuple of them, as a list; anything else (None, a number, a dict, a
    generator of non-texts) is one error rather than a TypeError inside."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise HsteerError(f"{label} must be a text or a list of texts, got {type(prompts).__name__} {_shown(prompts)}")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise HsteerError(f"{label} must hold texts, got {type(prompt).__name__} {_shown(prompt)}")
    return list(prompts)


def check_texts(label: str, values: object) -> None:
    """Every str in `values` (nested lists, tuples and mappings, keys too) passes `check_text`."""
    if isinstance(values, str):
        check_text(label, values)
    elif isinstance(values, Mapping):
        for key, value in values.items():
            check_texts(label, key)
            check_texts(label, value)
    elif isinstance(values, (list, tuple, set, frozenset)):
        for value in values:
            check_texts(label, value)


# --- numbers of the steering ---------------------------------------------------------------------------


def check_scale(label: str, value: object) -> float:
    """A steering scale: a finite number with |scale| <= SCALE_MAX (a NaN scale makes NaN images)."""
    if isinstance(value, bool):
        raise HsteerError(f"{label} must be a number, got {value!r}")
    return check_float(label, value, -SCALE_MAX, maximum=SCALE_MAX)


def check_ratios(label: str, ratios: Mapping[str, object]) -> dict[str, float]:
    """Ratio weights: concept names, each weight finite in [0, RATIO_MAX], so any sum of them is finite.

    (1e308 twice is finite alone but sums to infinity, and the shares then divide by zero.)
    """
    if not isinstance(ratios, Mapping):
        raise HsteerError(f"{label} must map concept names to weights, e.g. {{'woman': 0.3, 'man': 0.7}}")
    out = {}
    for name, weight in ratios.items():
        check_name("concept", name, label)
        if isinstance(weight, bool):
            raise HsteerError(f"{label} {name}: a weight must be a number, got {weight!r}")
        out[name] = check_float(f"{label} {name}", weight, 0.0, maximum=RATIO_MAX)
    return out


def check_window_value(value: object, where: str = "window", fix: str = "e.g. (0.0, 0.6)") -> tuple[float, float] | None:
    """None (every step) or a step window: WINDOW_RULE. `where` names it (an option, a keyword, or a bank
    file and concept for a stored window); `fix` says what to do instead."""
    if value is None:
        return None
    try:
        items = None if isinstance(value, (str, bytes, Mapping)) else list(value)  # type: ignore[call-overload]
    except TypeError:
        items = None
    numbers_ok = items is not None and len(items) == 2 and all(
        isinstance(x, numbers.Real) and not isinstance(x, bool) for x in items)
    if numbers_ok:
        start, end = float(items[0]), float(items[1])  # type: ignore[index]
        if math.isfinite(start) and math.isfinite(end) and 0.0 <= start < end <= 1.0:
            return start, end
    raise HsteerError(f"{where} {_shown(value)} is not a step window: need {WINDOW_RULE}; {fix}")


def steps_run(steps: int, strength: float | None = None) -> int:
    """The denoising steps a pipeline runs: `steps`, or for img2img `min(int(steps * strength), steps)`
    (diffusers skips the first ones), which a step window's fractions are over."""
    return steps if strength is None else min(int(steps * strength), steps)


def check_window_covers_steps(start: float, end: float, steps: int, label: str = "window",
                              strength: float | None = None) -> int:
    """The number of steps a window steers (step i of the N steps run is steered when start <= i/N < end;
    N = `steps_run(steps, strength)`); none is an error, since the images would silently be the plain
    model's while the manifest says the concept was applied. `label` names the window in the message."""
    start, end = check_window_value((start, end), label)  # type: ignore[misc]
    check_count("steps", steps, 1)
    total, steps = steps, steps_run(steps, strength)
    if steps < 1:
        raise HsteerError(f"strength {strength:g} of {total} steps runs no denoising step; raise the strength "
                          "or the steps")
    first = max(0, math.ceil(start * steps) - 1)
    while first < steps and not start <= first / steps:
        first += 1  # the first step at or after `start` (ceil's rounding corrected)
    last = min(steps - 1, math.ceil(end * steps) + 1)
    while last >= 0 and not last / steps < end:
        last -= 1  # the last step before `end`
    if first > last:
        raise HsteerError(f"{label} ({start:g}, {end:g}) covers none of the {steps} denoising "
                          f"steps (step i is steered when {start:g} <= i/{steps} < {end:g}), so nothing would be "
                          "steered; widen the window or run more steps")
    return last - first + 1


def check_flags(**flags: object) -> None:
    """Switches are True or False: a string such as 'no' would silently count as True."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise HsteerError(f"{name} must be True or False, got {type(value).__name__} {_shown(value)}")


def check_strength(label: str, value: object) -> float | None:
    """None (the pipeline's default) or an img2img strength in (0, 1]."""
    return None if value is None else check_float(label, value, 0.0, above=True, maximum=1.0)


# --- objects of the Python API ----------------------------------------------------------------------------


def check_pipeline(pipe: Any, label: str = "pipe") -> Any:
    """A loaded diffusers pipeline whose U-Net has a mid-block (where the h-space is), or a clear error
    instead of an AttributeError deep inside: a path or Hub id names how to load it."""
    if isinstance(pipe, (str, Path)):
        raise HsteerError(f"{label} must be a loaded diffusers pipeline, got the {type(pipe).__name__} "
                          f"{_shown(str(pipe))}; load it first: pipe = hsteer.load_pipeline({_shown(str(pipe))})")
    unet = getattr(pipe, "unet", None)
    transformer = getattr(pipe, "transformer", None)
    if callable(pipe) and unet is None and type(getattr(transformer, "_orig_mod", transformer)).__name__ in (
            "SD3Transformer2DModel", "FluxTransformer2DModel", "SanaTransformer2DModel"):
        return pipe  # a transformer pipeline: its sites are checked where one is chosen (hsteer.model.sites)
    if unet is None or not callable(pipe):
        raise HsteerError(f"{label} must be a diffusers pipeline with a U-Net (SD 1.x/2.x or SDXL) or an SD3, FLUX "
                          f"or SANA transformer, got {type(pipe).__name__}; load one with hsteer.load_pipeline(...)")
    if getattr(unet, "mid_block", None) is None or getattr(unet, "config", None) is None:
        raise HsteerError(f"{label}: the U-Net of this {type(pipe).__name__} has no mid-block, so no h-space to "
                          "steer; use an SD 1.x/2.x or SDXL pipeline")
    return pipe


def check_bank_object(bank: Any, label: str = "bank") -> Any:
    """None or a loaded ConceptBank (checked by what it offers: this layer does not import banks)."""
    if bank is None:
        return None
    if isinstance(bank, (str, Path)):
        raise HsteerError(f"{label} must be a ConceptBank, got the {type(bank).__name__} {_shown(str(bank))}; "
                          f"load it first: bank = hsteer.ConceptBank.load({_shown(str(bank))})")
    if not all(hasattr(bank, attr) for attr in ("hspace_shape", "group", "names", "check_compatible")):
        raise HsteerError(f"{label} must be a ConceptBank (hsteer.ConceptBank.load(...)), got "
                          f"{type(bank).__name__}")
    return bank


def check_steering_args(pipe: Any, bank: Any = None, *, scale: object = 1.0, window: object = None,
                        steer_unconditional: object = False, allow_other_model: object = False,
                        label: str = "") -> tuple[float, float] | None:
    """What `attach` and `generate` take beyond the policy, checked before the pipeline is touched;
    returns the window as a pair of floats (or None). `label` prefixes the keywords, e.g. 'attach: '."""
    check_pipeline(pipe, f"{label}pipe")
    check_bank_object(bank, f"{label}bank")
    check_scale(f"{label}scale", scale)
    check_flags(**{f"{label}steer_unconditional": steer_unconditional,
                   f"{label}allow_other_model": allow_other_model})
    return check_window_value(window, f"{label}window")


# --- JSON from files ------------------------------------------------------------------------------------

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deep the arrays and objects of JSON `text` nest (brackets inside strings do not count)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


def load_json(text: str, what: str, *, max_depth: int = JSON_MAX_DEPTH, max_chars: int | None = None,
              error: type[HsteerError] = HsteerError) -> Any:
    """Parse JSON read from a file, refusing it (one `error` line naming `what`) if it is too large or
    nests deeper than `max_depth`: the nesting is counted before parsing, so 100,000 levels of `[`
    give this error, not a RecursionError."""
    if max_chars is not None and len(text) > max_chars:
        raise error(f"{what} is too large ({len(text)} characters; at most {max_chars}); it is damaged")
    depth = json_depth(text)
    if depth > max_depth:
        raise error(f"{what} nests arrays or objects {depth} levels deep (at most {max_depth}); it is damaged")
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{what} nests too deeply to read; it is damaged") from None
    except ValueError as exc:
        reason = str(exc).split(":")[0] if isinstance(exc, json.JSONDecodeError) else str(exc)
        reason = reason if len(reason) <= 80 else f"{reason[:80]}..."
        raise error(f"{what} is not valid JSON ({reason}); it is damaged") from None
