"""Argument checks shared by the CLI and the Python API: one check per kind, one message per mistake.

Every check raises `HsteerError` with one line that names the setting as the caller knows it: the CLI
passes its option (`--batch-size`), the Python API its keyword (`batch_size`). Nothing is loaded,
created or written before these checks pass.

Names (concepts, groups) use the character set `NAME_CHARS`: ASCII letters, digits, `_`, `-` and `.`,
starting with a letter, a digit or `_`, at most `NAME_MAX` characters; so a name is never a path
(`/`, `\\`), never `.` or `..`, never hidden and never holds a control character.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from hsteer.errors import HsteerError

NAME_MAX = 100
NAME_CHARS = "ASCII letters, digits, '_', '-' and '.' (starting with a letter, digit or '_')"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

#: Seeds are 0 <= seed < SEED_LIMIT (torch's generators take 64-bit seeds; JSON readers often 63).
SEED_LIMIT = 2**63
#: Image sides are multiples of SIZE_MULTIPLE (the VAE's 8x downsampling) up to SIZE_MAX pixels.
SIZE_MULTIPLE = 8
SIZE_MAX = 8192


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
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise HsteerError(f"{label} must be {bound}, got {value}")
    return value


def check_optional_count(label: str, value: object, minimum: int = 1) -> int | None:
    """None (no limit) or a count >= minimum: `--limit 0` and `--limit -1` are refused alike."""
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
        raise HsteerError(f"{label} must be {'>' if above else '>='} {minimum}, got {value}")
    if maximum is not None and number > maximum:
        raise HsteerError(f"{label} must be <= {maximum}, got {value}")
    return number


def check_unique(label: str, values: Iterable[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise HsteerError(f"{label} names {value!r} twice")
        seen.add(value)


def check_device(device: object, label: str = "--device") -> str:
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


def check_output_file(path: str | Path, label: str) -> Path:
    """Where a file may be written: not a folder or special file, and its parent is (or can be) a folder."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise HsteerError(f"{label} {path} exists and is not a regular file")
    return _check_parents(path, label)


def check_output_dir(path: str | Path, label: str) -> Path:
    """A folder to write into: a folder or nothing yet, and no file on the way to it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HsteerError(f"{label} {path} exists and is not a folder")
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
