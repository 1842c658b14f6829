"""Output folders of `generate`: one writer at a time, resumes checked before anything is touched, a manifest
true at any moment.

A folder holds PNGs named `NNNNN.png` and `manifest.jsonl`, one JSON line per image. Each image is
written atomically and its manifest line appended (and flushed to disk) right after, so at any kill
point the manifest lists exactly the finished images, except at most the one image whose PNG landed
in the instant before its line. A folder that already holds files is refused unless `overwrite` (its
images and manifest are replaced; other files are left alone) or `resume`.

- **One writer.** The folder is locked (`fileio.FolderLock`, an `flock` on the folder, released when
  the run ends, however it ends) from before its contents are read until the run ends; a second run
  on the same folder is refused with the reason, so two runs never interleave their lines.
- **Resume validates first.** Before any file is touched, `resume` reads the whole manifest: every
  line strict JSON (a torn last line, the mark of a kill, is dropped), every row's file an image name
  of this folder (never `../x`), no file listed twice, and seeds consistent with
  indices (`seed - index` is the same base seed on every row). Each listed image is decoded (PIL
  verify and load); a missing or corrupt one is made again. Damage that is not a kill's mark (a bad
  line in the middle, a row outside the folder, a manifest that is a folder or a link, an image name
  that is a folder or a link) is one error line that changes nothing.
- **Deletes nothing it did not write.** Images without a line are made again in place (replaced
  atomically); only hsteer's own temporary files (`.NNNNN.png.*.png`, `.manifest.jsonl.*.tmp`) are
  removed, and `overwrite` removes only images, the manifest and those.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hsteer.checks import (SCALE_MAX, SEED_LIMIT, check_count, check_float, check_output_dir, check_seed, check_size,
                           check_text, load_json)
from hsteer.errors import HsteerError, as_field, field_errors
from hsteer.fileio import FolderLock, atomic_png, atomic_write_text, write_error

MANIFEST = "manifest.jsonl"
IMAGE_NAME = re.compile(r"\d{5,}\.png")
#: The temporary files of hsteer's own atomic writes in an output folder (`fileio.atomic_path`).
TEMP_NAME = re.compile(r"\.(?:\d{5,}\.png|manifest\.jsonl)\.[^/]+\.(?:png|tmp)")
#: What must match between a manifest line and the job that would make the same file, to resume.
SAME_KEYS = ("prompt", "seed", "concepts", "policy", "steps", "guidance", "height", "width", "index")
#: The largest number of images one call may ask for (jobs are streamed, never listed).
MAX_IMAGES = 10**12
ELSEWHERE = "another out_dir"


def manifest_line(row: dict[str, Any]) -> str:
    """One manifest line: strict JSON (a NaN or infinity is refused, never written as bare NaN)."""
    try:
        return json.dumps(row, allow_nan=False)
    except ValueError:
        bad = sorted(k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v))
        raise HsteerError(f"refusing to write a manifest line with non-finite values ({', '.join(bad) or 'nested'})"
                          ) from None


def check_generate_settings(prompts: Sequence[str], num_images: int, seed: int, steps: int, guidance: float,
                            batch_size: int, height: int | None, width: int | None,
                            negative_prompt: str | None = None) -> None:
    """Every number and text of a generation, checked before any model work; errors name the keyword at
    fault as their field."""
    if not prompts:
        raise HsteerError("prompts is empty: give at least one prompt", field="prompts")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise HsteerError("prompts holds an empty prompt; give every prompt some text", field="prompts")
        as_field("prompts", check_text, p)
    if negative_prompt is not None:
        check_text("negative_prompt", negative_prompt)
    as_field("num_images_per_prompt", check_count, num_images, 1, MAX_IMAGES // len(prompts))
    as_field("seed", check_seed, seed, span=num_images)
    as_field("steps", check_count, steps, 1, 10_000)
    as_field("guidance", check_float, guidance, -1e4, maximum=1e4)
    as_field("batch_size", check_count, batch_size, 1, 4096)
    as_field("height", check_size, height)
    as_field("width", check_size, width)


def image_ok(path: Path) -> bool:
    """Whether `path` is a complete, decodable image (PIL verify, then a full load)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            img.load()
    except Exception:  # noqa: BLE001  (any decoding failure means: redo the image)
        return False
    return True


def check_own_file(path: Path, what: str, fix: str, *, parent_file_absent: bool = False) -> bool:
    """Whether a file hsteer writes in a folder it owns is there; refused if it is a link (writing through
    it would write outside the folder) or not a regular file (a folder, a FIFO): nothing is touched.

    `parent_file_absent`: a path below a file (NotADirectoryError) counts as absent too, for a caller that
    refuses such a parent itself (the attack run folder); otherwise it is an error that cannot read `path`.
    """
    try:
        info = path.lstat()
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or (parent_file_absent and isinstance(exc, NotADirectoryError)):
            return False
        raise HsteerError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        raise HsteerError(f"{path} is a symbolic link, not {what}; {fix}")
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise HsteerError(f"{path} is {kind}, not {what}; {fix}")
    return True


def remove_file(path: Path) -> None:
    """Remove a file hsteer wrote; one already gone is fine, any other failure is one line (`write_error`)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise write_error(path, exc) from None


class OutputFolder:
    """One generation's folder: which images are done, and where new ones and their lines go.

    It holds the folder's lock from construction (for a folder that does not exist yet: from its first
    image, when it is created) until `close()`, the end of a `with` block, its collection or the
    process's end.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False, resume: bool = False) -> None:
        if overwrite and resume:
            raise HsteerError("choose overwrite=True or resume=True, not both", field=("overwrite", "resume"))
        self.path = check_output_dir(path, "output folder")
        self.manifest = self.path / MANIFEST
        self.done: dict[str, dict[str, Any]] = {}
        self.redone = 0  # listed images found missing or corrupt, to be made again
        self._written: set[str] = set()
        self._lock: FolderLock | None = None
        self._fresh = not self.path.exists()
        if self._fresh:
            return
        self._hold()
        try:
            entries = self._entries()
            if entries and not (overwrite or resume):
                raise HsteerError(f"output folder {self.path} is not empty; pass overwrite=True to replace its "
                                  "images, resume=True to finish an interrupted run, or choose a new folder",
                                  field=("overwrite", "resume"))
            if overwrite:
                self._clear(entries)
            elif resume:
                self._recover(entries)
        except BaseException:
            self.close()
            raise

    # --- the lock -------------------------------------------------------------------------------------
    def _hold(self) -> None:
        """Take the folder's lock (creating the folder). A folder that did not exist at construction and
        was filled by another run before this one's first image is refused."""
        if self._lock is not None:
            if not self._lock.held:
                raise HsteerError(f"output folder {self.path} was closed; open it again to add images")
            return
        with field_errors(("resume", "out_dir")):
            self._lock = FolderLock(self.path, f"output folder {self.path} is being written by another hsteer "
                                               "run; wait until it has finished (then pass resume=True if it "
                                               "stopped early), or choose another out_dir")
        if self._fresh and self._entries():
            self.close()
            raise HsteerError(f"output folder {self.path} was filled by another run meanwhile; pass "
                              "resume=True to finish it, or choose a new folder", field="resume")

    def close(self) -> None:
        """Release the folder's lock (the process's end does too)."""
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what is there ----------------------------------------------------------------------------------
    def _entries(self) -> list[str]:
        if not self.path.exists():
            return []
        try:
            return sorted(os.listdir(self.path))
        except OSError as exc:
            raise HsteerError(f"cannot read output folder {self.path}: {exc.strerror or exc}") from None

    def _check_entries(self, entries: list[str]) -> None:
        """The names hsteer writes (images, the manifest) are regular files, not links or folders."""
        fix = "move it away, or choose a new folder; nothing was changed"
        for entry in entries:
            if entry == MANIFEST:
                check_own_file(self.path / entry, "hsteer's manifest", fix)
            elif IMAGE_NAME.fullmatch(entry):
                check_own_file(self.path / entry, "an image hsteer wrote", fix)

    def _clear(self, entries: list[str]) -> None:
        """`overwrite`: remove the images, the manifest and hsteer's temporary files, after checking them all."""
        self._check_entries(entries)
        for entry in entries:
            if IMAGE_NAME.fullmatch(entry) or entry == MANIFEST or TEMP_NAME.fullmatch(entry):
                remove_file(self.path / entry)

    def _recover(self, entries: list[str]) -> None:
        """`resume`: validate the manifest and decode every listed image, then (only then) drop hsteer's
        temporary files and rewrite the manifest with the rows whose image is good."""
        self._check_entries(entries)
        with field_errors("overwrite"):  # a damaged manifest's fix: start over
            rows, text = self._read_manifest()
        kept = []
        for row in rows:
            if image_ok(self.path / row["file"]):
                self.done[row["file"]] = row
                kept.append(row)
            else:
                self.redone += 1  # missing or corrupt: made again (and replaced) like an unlisted image
        for entry in entries:
            if TEMP_NAME.fullmatch(entry):
                remove_file(self.path / entry)
        new_text = "".join(manifest_line(row) + "\n" for row in kept)
        if text is not None and new_text != text:
            with field_errors("out_dir"):
                atomic_write_text(self.manifest, new_text, elsewhere=ELSEWHERE)

    def _read_manifest(self) -> tuple[list[dict[str, Any]], str | None]:
        """The manifest's rows, validated (`check_manifest_rows`), and its text (None: no manifest)."""
        fix = "pass overwrite=True to start over, or choose a new folder"
        if not check_own_file(self.manifest, "hsteer's manifest", fix):
            return [], None
        try:
            text = self.manifest.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise HsteerError(f"{self.manifest} is not UTF-8 text, so not hsteer's manifest; it is damaged: "
                              f"{fix}") from None
        except OSError as exc:
            raise HsteerError(f"cannot read {self.manifest}: {exc.strerror or exc}") from None
        return check_manifest_rows(self.manifest, text), text

    # --- the run ------------------------------------------------------------------------------------
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
                self.close()  # the run ends here: free the folder at once, not when this object is collected
                raise HsteerError(f"{self.path / job.file} was made with other settings ({', '.join(changed)}); "
                                  "resume with the same settings, or pass overwrite=True to start over",
                                  field="overwrite")

    def add(self, row: dict[str, Any], image) -> None:
        """Write one finished image, then its manifest line (flushed to disk)."""
        line = manifest_line(row)
        file = row.get("file")
        if not isinstance(file, str) or not IMAGE_NAME.fullmatch(file):
            raise HsteerError(f"an image of an output folder needs a file name NNNNN.png, got {file!r}")
        if file in self._written or file in self.done:
            raise HsteerError(f"{self.path / file} was already written by this run; each image is made once")
        self._hold()
        try:
            with field_errors("out_dir"):
                atomic_png(self.path / file, image, elsewhere=ELSEWHERE)
                try:
                    with open(self.manifest, "a", encoding="utf-8") as handle:
                        handle.write(line + "\n")
                        handle.flush()
                        os.fsync(handle.fileno())
                except OSError as exc:
                    remove_file(self.path / file)
                    raise write_error(self.manifest, exc, ELSEWHERE) from None
        except BaseException:
            self.close()  # a failed write ends the run
            raise
        self._written.add(file)


def check_manifest_rows(manifest: Path, text: str) -> list[dict[str, Any]]:
    """The rows of a manifest's `text`: a torn last line (a kill's mark) is dropped; any other damage is
    one error naming the line (a line that is not a JSON object, a file that is not an image name of
    the folder, a file listed twice, a seed inconsistent with the index: image i of every prompt has
    seed base + i)."""
    lines = text.split("\n")
    last = lines.pop()  # after the last newline: "" unless a kill tore the last line
    fix = ("the manifest is damaged: correct or delete that line (its image is then made again), or pass "
           "overwrite=True to start over")
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate([*lines, last], 1):
        if not line.strip():
            continue
        try:
            row = load_json(line, f"{manifest} line {number}")
        except HsteerError as exc:
            if number == len(lines) + 1:
                continue  # torn by a kill: the image is made again
            raise HsteerError(f"{exc}; {fix}") from None
        rows.append((number, row))
    files: dict[str, int] = {}
    base: tuple[int, int] | None = None  # (seed - index, the line that set it)
    for number, row in rows:
        where = f"{manifest} line {number}"
        _check_row(row, where, fix)
        if row["file"] in files:
            raise HsteerError(f"{where} lists {row['file']} again (as line {files[row['file']]} does); {fix}")
        files[row["file"]] = number
        offset = row["seed"] - row["index"]
        if base is None:
            base = (offset, number)
        elif offset != base[0]:
            raise HsteerError(f"{where}: image {row['index']} of {row['prompt']!r} has seed {row['seed']}, but image i "
                              f"of every prompt has seed {base[0]} + i (line {base[1]}); {fix}")
    return [row for _, row in rows]


def _check_row(row: Any, where: str, fix: str) -> None:
    """One row's shape: an object with a file name NNNNN.png, a prompt, an index and a seed."""
    if not isinstance(row, dict):
        raise HsteerError(f"{where} is not a JSON object; {fix}")
    file = row.get("file")
    if not isinstance(file, str) or not IMAGE_NAME.fullmatch(file):
        raise HsteerError(f"{where} names the file {file!r}, not an image of this folder (NNNNN.png); {fix}")
    if not isinstance(row.get("prompt"), str):
        raise HsteerError(f"{where} has no prompt; {fix}")
    for key, top in (("index", MAX_IMAGES), ("seed", SEED_LIMIT)):
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < top:
            raise HsteerError(f"{where} has {key} {value!r}, not a whole number from 0; {fix}")


def check_policy(groups: Sequence[str], scales: dict[str, float],
                 concepts: Sequence[tuple[str, float]] = (), ratios: dict[str, float] | None = None) -> None:
    """A policy's groups, group scales, concepts and ratios: valid names, no repeats, finite scales for
    steered groups, ratio weights that stay finite when summed (`checks.check_ratios`)."""
    from hsteer.checks import check_name, check_ratios, check_unique

    if ratios:
        as_field("ratios", check_ratios, ratios)
    with field_errors("groups"):
        for group in groups:
            check_name("group", group, "groups")
        check_unique("groups", groups)
    for group, scale in dict(scales).items():
        with field_errors("scales"):
            check_float(f"the scale of group {group!r} (scales)", scale, -SCALE_MAX, maximum=SCALE_MAX)
        if group not in groups:
            steered = ", ".join(groups) or "none"
            raise HsteerError(f"scales names group {group!r}, which is not steered (steered: {steered})",
                              field="scales")
    with field_errors("concepts"):
        for name, scale in concepts:
            check_name("concept", name, "concepts")
            check_float(f"the scale of concept {name!r} (concepts)", scale, -SCALE_MAX, maximum=SCALE_MAX)
        check_unique("concepts", [name for name, _ in concepts])


def check_images_finite(images, jobs: Sequence[Any], guidance: float) -> None:
    """Refuse a batch whose images (floats in [0, 1]) hold NaN or infinity, naming what steered them."""
    import numpy as np

    finite = np.isfinite(np.asarray(images, dtype=np.float32)).reshape(len(jobs), -1).all(axis=1)
    for job, ok in zip(jobs, finite):
        if ok:
            continue
        scales = ", ".join(f"{n}={s:g}" for n, s in job.concepts)
        cause = f"the concept scales ({scales}) or guidance {guidance:g}" if scales else f"guidance {guidance:g}"
        raise HsteerError(f"image {job.index} of {job.prompt!r} (seed {job.seed}) came out NaN or infinite; lower "
                          f"{cause}. Nothing was written for it", field="guidance")
