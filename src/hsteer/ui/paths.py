"""Which server paths the page may read: only those under the folders allowed on the command line.

A path typed into the page is resolved (symlinks followed, `..` collapsed) *before* anything is read or
even tested for existence, and refused unless the resolved path lies inside one of the resolved allowed
folders. A symlink inside an allowed folder that points outside it is thus refused, and the page learns
nothing about files outside (a refused path gets the same answer whether it exists or not).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hsteer.ui._lib import HsteerError


class PathRefused(HsteerError):
    """A path outside the allowed folders, or one that cannot be used."""


class AllowedDirs:
    """The folders (resolved once, at start-up) under which the page may read files."""

    def __init__(self, dirs: Iterable[str | os.PathLike] = ()) -> None:
        roots = []
        for d in dirs:
            root = Path(d).expanduser().resolve()
            if not root.is_dir():
                raise HsteerError(f"allowed folder {d} does not exist or is not a folder")
            roots.append(root)
        self.roots: tuple[Path, ...] = tuple(dict.fromkeys(roots))

    def __bool__(self) -> bool:
        return bool(self.roots)

    def describe(self) -> str:
        if not self.roots:
            return "none (start `hsteer ui --allow-dir DIR` to open files on this server)"
        return ", ".join(str(r) for r in self.roots)

    def contains(self, path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in self.roots)

    def resolve(self, text: str | os.PathLike, *, kind: str = "file") -> Path:
        """The resolved path of `text` if it lies inside an allowed folder and is a `kind` ("file" or "dir").

        A relative path is taken relative to each allowed folder in turn (the first that holds it wins).
        """
        raw = os.fspath(text).strip() if text is not None else ""
        if not raw:
            raise PathRefused("no path given")
        if "\x00" in raw or len(raw) > 4096:
            raise PathRefused("that is not a usable path")
        if not self.roots:
            raise PathRefused("this server allows no folders to be opened from the page; start it with "
                              "`hsteer ui --allow-dir DIR`")
        given = Path(raw).expanduser()
        candidates = [given] if given.is_absolute() else [root / given for root in self.roots]
        inside = []
        for candidate in candidates:
            try:
                real = candidate.resolve(strict=False)
            except (OSError, RuntimeError):  # symlink loops and the like
                continue
            if self.contains(real):
                inside.append(real)
        if not inside:
            raise PathRefused(f"{raw} is outside the folders this server may read ({self.describe()})")
        for real in inside:
            if (kind == "dir" and real.is_dir()) or (kind == "file" and real.is_file()):
                return real
        what = "folder" if kind == "dir" else "file"
        raise PathRefused(f"{raw} is not an existing {what} inside the allowed folders")

    def child(self, folder: Path, name: str) -> Path | None:
        """`folder/name` resolved, if it is a file inside `folder` (and so inside an allowed folder)."""
        try:
            real = (folder / name).resolve(strict=False)
        except (OSError, RuntimeError):
            return None
        if real.is_relative_to(folder) and self.contains(real) and real.is_file():
            return real
        return None

    def find(self, filename: str, limit: int = 200, max_depth: int = 4) -> list[Path]:
        """Folders under the allowed folders that hold `filename` (symlinked folders are not followed)."""
        found: list[Path] = []
        for root in self.roots:
            base_depth = len(root.parts)
            for current, dirs, files in os.walk(root, followlinks=False):
                here = Path(current)
                if len(here.parts) - base_depth >= max_depth:
                    dirs[:] = []
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                if filename in files and self.child(here, filename) is not None:
                    found.append(here)
                    if len(found) >= limit:
                        return found
        return found
