"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary name beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_save(path: str | Path, save: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Run `save(temporary_name)` and move the result to `path` atomically."""
    with atomic_path(path, suffix) as tmp:
        save(tmp)


def atomic_png(path: str | Path, picture, **options) -> None:
    """Write a PIL image or a matplotlib figure as a PNG, atomically (`options`: e.g. dpi for a figure)."""
    save = getattr(picture, "savefig", None) or picture.save
    atomic_save(path, lambda tmp: save(tmp, format="png", **options), suffix=".png")
