"""Output folders of `generate`: refuse to mix runs, resume consistently, keep the manifest true at any moment.

A folder holds PNGs named `NNNNN.png` and `manifest.jsonl`, one JSON line per image. Each image is
written atomically and its manifest line appended (and flushed to disk) right after, so at any kill
point the manifest lists exactly the finished images, except at most the one image whose PNG landed
in the instant before its line; `resume` removes such an image and makes it again, drops a torn last
line, and refuses to continue a folder made with other settings. A folder that already holds files
is refused unless `overwrite` (its images and manifest are replaced; other files are left alone) or
`resume`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hsteer.checks import check_count, check_float, check_output_dir, check_seed, check_size
from hsteer.errors import HsteerError
from hsteer.fileio import atomic_png, write_error

MANIFEST = "manifest.jsonl"
IMAGE_NAME = re.compile(r"\d{5,}\.png")
#: What must match between a manifest line and the job that would make the same file, to resume.
SAME_KEYS = ("prompt", "seed", "concepts", "policy", "steps", "guidance", "height", "width", "index")
#: The largest number of images one call may ask for (jobs are streamed, never listed).
MAX_IMAGES = 10**12


def manifest_line(row: dict[str, Any]) -> str:
    """One manifest line: strict JSON (a NaN or infinity is refused, never written as bare NaN)."""
    try:
        return json.dumps(row, allow_nan=False)
    except ValueError:
        bad = sorted(k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v))
        raise HsteerError(f"refusing to write a manifest line with non-finite values ({', '.join(bad) or 'nested'})"
                          ) from None


def check_generate_settings(prompts: Sequence[str], num_images: int, seed: int, steps: int, guidance: float,
                            batch_size: int, height: int | None, width: int | None, cli: bool = False) -> None:
    """Every number of a generation, checked before any model work (labels: CLI options or keywords)."""
    name = (lambda opt, kw: opt) if cli else (lambda opt, kw: kw)
    if not prompts:
        raise HsteerError(f"no prompt given; pass at least one {name('--prompt', 'prompt')}")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise HsteerError(f"empty prompt; pass a non-empty {name('--prompt', 'prompt')}")
        if "\x00" in p:
            raise HsteerError(f"a {name('--prompt', 'prompt')} holds a NUL character")
    check_count(name("--num-images", "num_images_per_prompt"), num_images, 1, MAX_IMAGES // len(prompts))
    check_seed(name("--seed", "seed"), seed, span=num_images)
    check_count(name("--steps", "steps"), steps, 1, 10_000)
    check_float(name("--guidance", "guidance"), guidance, -1e4, maximum=1e4)
    check_count(name("--batch-size", "batch_size"), batch_size, 1, 4096)
    check_size(name("--height", "height"), height)
    check_size(name("--width", "width"), width)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise write_error(path, exc) from None


class OutputFolder:
    """One generation's folder: which images are done, and where new ones and their lines go."""

    def __init__(self, path: str | Path, *, overwrite: bool = False, resume: bool = False,
                 options: tuple[str, str] = ("--overwrite", "--resume")) -> None:
        if overwrite and resume:
            raise HsteerError(f"choose {options[0]} or {options[1]}, not both")
        self.options = options
        self.path = check_output_dir(path, "output folder")
        self.manifest = self.path / MANIFEST
        self.done: dict[str, dict[str, Any]] = {}
        entries = self._entries()
        if entries and not (overwrite or resume):
            raise HsteerError(f"output folder {self.path} is not empty; pass {options[0]} to replace its images, "
                              f"{options[1]} to finish an interrupted run, or choose a new folder")
        if overwrite:
            for entry in entries:
                if IMAGE_NAME.fullmatch(entry) or entry == MANIFEST or entry.startswith("."):
                    _remove(self.path / entry)
        elif resume:
            self._recover(entries)

    def _entries(self) -> list[str]:
        if not self.path.exists():
            return []
        try:
            return sorted(os.listdir(self.path))
        except OSError as exc:
            raise HsteerError(f"cannot read output folder {self.path}: {exc.strerror or exc}") from None

    def _recover(self, entries: list[str]) -> None:
        """Keep the lines whose image is present; remove images without a line, torn lines and temp files."""
        rows: list[str] = []
        if self.manifest.is_file():
            try:
                lines = self.manifest.read_text(encoding="utf-8").splitlines()
            except (UnicodeDecodeError, OSError):
                raise HsteerError(f"{self.manifest} is unreadable; pass {self.options[0]} to start over") from None
            for line in lines:
                with contextlib.suppress(ValueError):
                    row = json.loads(line)
                    if isinstance(row, dict) and isinstance(row.get("file"), str) \
                            and (self.path / row["file"]).is_file():
                        self.done[row["file"]] = row
                        rows.append(line)
        for entry in entries:
            if (IMAGE_NAME.fullmatch(entry) and entry not in self.done) or \
                    (entry.startswith(".") and entry.endswith((".tmp", ".png"))):
                _remove(self.path / entry)
        text = "".join(line + "\n" for line in rows)
        try:
            if not self.manifest.is_file() or self.manifest.read_text(encoding="utf-8") != text:
                from hsteer.fileio import atomic_write_text

                atomic_write_text(self.manifest, text)
        except OSError as exc:
            raise write_error(self.manifest, exc) from None

    def pending(self, jobs: Iterable[Any], record_of: Callable[[Any], dict[str, Any]]) -> Iterator[Any]:
        """The jobs whose image is not done yet; a done image made with other settings stops the run."""
        for job in jobs:
            row = self.done.get(job.file)
            if row is None:
                yield job
                continue
            record = json.loads(manifest_line(record_of(job)))
            changed = [k for k in SAME_KEYS if k in record and row.get(k) != record[k]]
            if changed:
                raise HsteerError(f"{self.path / job.file} was made with other settings ({', '.join(changed)}); "
                                  f"resume with the same settings, or pass {self.options[0]} to start over")

    def add(self, row: dict[str, Any], image) -> None:
        """Write one finished image, then its manifest line (flushed to disk)."""
        line = manifest_line(row)
        atomic_png(self.path / row["file"], image)  # creates the folder on the first image
        try:
            with open(self.manifest, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            _remove(self.path / row["file"])
            raise write_error(self.manifest, exc) from None


#: The largest |scale| a concept or group may be applied with.
SCALE_MAX = 1000.0


def check_policy(groups: Sequence[str], scales: dict[str, float],
                 concepts: Sequence[tuple[str, float]] = ()) -> None:
    """A policy's groups, group scales and concepts: valid names, no repeats, finite scales for steered groups."""
    from hsteer.checks import check_name, check_unique

    for group in groups:
        check_name("group", group, "--fair")
    check_unique("--fair", groups)
    for group, scale in dict(scales).items():
        check_float(f"the scale of group {group!r} (--group-scale)", scale, -SCALE_MAX, maximum=SCALE_MAX)
        if group not in groups:
            steered = ", ".join(groups) or "none"
            raise HsteerError(f"--group-scale {group}=...: group {group!r} is not steered (steered: {steered})")
    for name, scale in concepts:
        check_name("concept", name, "--concept")
        check_float(f"the scale of concept {name!r} (--concept NAME=SCALE)", scale, -SCALE_MAX, maximum=SCALE_MAX)
    check_unique("--concept", [name for name, _ in concepts])


def check_images_finite(images, jobs: Sequence[Any], guidance: float) -> None:
    """Refuse a batch whose images (floats in [0, 1]) hold NaN or infinity, naming what steered them."""
    import numpy as np

    finite = np.isfinite(np.asarray(images, dtype=np.float32)).reshape(len(jobs), -1).all(axis=1)
    for job, ok in zip(jobs, finite):
        if ok:
            continue
        scales = ", ".join(f"{n}={s:g}" for n, s in job.concepts)
        cause = f"the concept scales ({scales}) or --guidance {guidance:g}" if scales else f"--guidance {guidance:g}"
        raise HsteerError(f"image {job.index} of {job.prompt!r} (seed {job.seed}) came out NaN or infinite; lower "
                          f"{cause}. Nothing was written for it")
