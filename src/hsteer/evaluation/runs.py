"""A run folder: its layout, its settings (config.json), and the JSON-lines files it keeps.

    config.json          what to generate ("generation") and how to score it ("scoring")
    images/NNNNNN.png    image of job NNNNNN (its position in the full job list)
    manifests/shard-R-of-N.jsonl   finished images of process R of N, rewritten atomically
    manifest.jsonl       all finished images, merged when every job is done
    generation.log       one line per image generated (file, process, pid): nothing is made twice
    scores.jsonl, summary.json, report.md, plots/, grids/   written by scoring

This module is hsteer's run-folder protocol for the layers above generation: the file names (`CONFIG`,
`MANIFEST`, `IMAGES`, `SUMMARY`), the refusal of a link or folder in place of a file the run writes
(`check_own_file`), atomic JSON and JSON-lines writers, the tolerant JSON-lines reader and `remove_file`.
The attack run folder (`hsteer.attacks.folder`) is built from these same pieces, so both kinds of run
name, refuse, write and remove their files one way; only what differs on purpose (an attack run is
refused unless resumed or overwritten, and overwrite removes the files its stored config names) is the
attack's own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hsteer.checks import load_json
from hsteer.errors import HsteerError, field_errors
from hsteer.fileio import atomic_write_text
# image_ok: the harness's name for the check; check_own_file, remove_file: shared with the attack run folder
from hsteer.outputs import check_own_file, image_ok, remove_file  # noqa: F401

CONFIG = "config.json"
MANIFEST = "manifest.jsonl"
LOG = "generation.log"
IMAGES = "images"
SHARDS = "manifests"
SUMMARY = "summary.json"

# Settings that decide the images: a rerun into the same folder must repeat them.
#: Settings added after the first run folders: written to config.json only when not their default.
DEFAULTED_KEYS: dict[str, Any] = {"window": None, "respect_prompt": True, "gate": "embedding", "guard": None}
IDENTITY_KEYS = ("task", "model", "policy", "bank", "steps", "guidance", "height", "width", "seed",
                 "steer_unconditional", "task_args", "dtype", "window", "respect_prompt", "gate", "guard")


# --- settings -----------------------------------------------------------------------------------------


@dataclass
class GenerationSettings:
    """What to generate: the "generation" object of config.json, key for key.

    `task_args` belong to the task (its `jobs` reads them); `policy` is a policy spec
    (`Policy.to_spec()`, read back by `hsteer.policies.policy_from_spec`).
    """

    task: str
    model: str | None = None
    dtype: str = "float32"
    policy: dict[str, Any] = field(default_factory=lambda: {"kind": "plain"})
    bank: str | None = None
    window: list[float] | None = None  # one step window for every concept; None: each concept's learned one
    respect_prompt: bool = True  # the prompt-aware gate (hsteer.gate); False: the papers' blind steering
    gate: str = "embedding"
    guard: dict[str, Any] | None = None  # the image-aware guard's spec (`guard_from_spec`); None: no guard
    steps: int = 50
    guidance: float = 7.5
    height: int | None = None
    width: int | None = None
    seed: int = 0
    steer_unconditional: bool = False
    allow_other_model: bool = False
    batch_size: int = 8
    task_args: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they are

    def to_dict(self) -> dict[str, Any]:
        """The config.json object; the keys added later (`DEFAULTED_KEYS`) only where they differ from their
        default, so an older run folder's config reads back and writes out unchanged."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        data = {k: v for k, v in data.items() if k not in DEFAULTED_KEYS or v != DEFAULTED_KEYS[k]}
        return json.loads(json.dumps({**data, **self.extra}))  # a deep copy, JSON types only

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSettings:
        """The settings stored in a run's config; keys this version does not know are kept in `extra`, not
        dropped."""
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    def identity(self) -> dict[str, Any]:
        """The settings that decide the images (IDENTITY_KEYS)."""
        data = {**DEFAULTED_KEYS, **self.to_dict()}
        return {k: data[k] for k in IDENTITY_KEYS}


@dataclass
class RunSettings:
    """Everything that defines a run: config.json's {"generation": {...}, "scoring": {...}}.

    `scoring` stays a plain mapping: its keys belong to the task that scores the run (each task's
    `check_scoring` validates its own), plus "device" and "batch_size" common to all.
    """

    generation: GenerationSettings
    scoring: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.generation, dict):
            self.generation = GenerationSettings.from_dict(self.generation)
        self.scoring = dict(self.scoring or {})

    def to_dict(self) -> dict[str, Any]:
        """The run's settings as stored in its config (generation and scoring)."""
        return {"generation": self.generation.to_dict(), "scoring": dict(self.scoring)}

    def to_json(self) -> str:
        """The run's settings as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        """The run's settings from a stored config (scoring empty where none was stored)."""
        return cls(GenerationSettings.from_dict(data["generation"]), data.get("scoring", {}))


def read_config(run_dir: str | Path) -> RunSettings:
    """The settings of the evaluation run in `run_dir`; a missing, damaged or foreign config is refused
    with a message that says what to do."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise HsteerError(f"{run_dir} holds no {CONFIG}; it is not an hsteer evaluation folder")
    try:
        data = load_json(path.read_text(encoding="utf-8"), str(path))  # bounded depth: no RecursionError
    except (UnicodeDecodeError, HsteerError) as exc:
        raise HsteerError(f"{path} is not valid UTF-8 JSON ({type(exc).__name__}); it is damaged: restore it, "
                          "or start the run over in another run_dir", field="run_dir") from None
    if not (isinstance(data, dict) and isinstance(data.get("generation"), dict)
            and isinstance(data.get("scoring", {}), dict)):
        raise HsteerError(f"{path} does not have an hsteer run's layout (generation, scoring); it is damaged")
    return RunSettings.from_dict(data)


def prepare_run_dir(run_dir: str | Path, settings: RunSettings) -> None:
    """Create the folder and its config; a folder of another run (other generation settings) is refused."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if path.is_file():
        old, new = read_config(run_dir).generation.identity(), settings.generation.identity()
        diff = [k for k in IDENTITY_KEYS if old[k] != new[k]]
        if diff:
            raise HsteerError(f"{run_dir} holds a run with other settings ({', '.join(diff)} differ); "
                              "use another run_dir, or repeat the original settings to resume it", field="run_dir")
    check_run_layout(run_dir)  # before anything is written; a killed writer's temporary files are removed
    (run_dir / IMAGES).mkdir(parents=True, exist_ok=True)  # by each process for its own jobs, under its lock
    (run_dir / SHARDS).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, settings.to_json())


# --- JSON lines and images --------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a torn last line (killed writer of a non-atomic file) is ignored, and so
    is any line that is not a JSON object of bounded depth (the rows are checked against the jobs)."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = load_json(line, str(path))
        except HsteerError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def write_jsonl(path: Path, rows: Iterable[dict], *, allow_nan: bool = True) -> None:
    """Rewrite `path` atomically with one JSON object a line; `allow_nan=False`: strict JSON, a NaN or an
    infinity is a ValueError before anything is written."""
    atomic_write_text(path, "".join(json.dumps(r, allow_nan=allow_nan) + "\n" for r in rows))


def write_json(path: Path, value: Any, *, allow_nan: bool = True) -> None:
    """Rewrite `path` (a run's summary.json) atomically with `value` as indented JSON; `allow_nan` as in
    `write_jsonl`."""
    atomic_write_text(path, json.dumps(value, indent=2, allow_nan=allow_nan))


def append_log(path: Path, rows: Iterable[dict]) -> None:
    """Append rows to a log in one write, synced (a kill leaves whole lines or a torn last one)."""
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def check_run_layout(run_dir: str | Path) -> None:
    """Before a run touches its folder: the files it writes are regular files, not links (a write would
    land outside the folder) nor folders (a manifest.jsonl folder would stop the merge after the images
    were made), and its subfolders are folders; one error line that changes nothing (its field: run_dir)."""
    run_dir = Path(run_dir)
    fix = "move it away, or use another run_dir; nothing was changed"
    with field_errors("run_dir"):
        for name in (CONFIG, MANIFEST, LOG):
            check_own_file(run_dir / name, f"the run's {name}", fix)
        for name in (IMAGES, SHARDS):
            if (run_dir / name).exists() and not (run_dir / name).is_dir():
                raise HsteerError(f"{run_dir / name} is not a folder; {fix}")
        if (run_dir / SHARDS).is_dir():
            for path in (run_dir / SHARDS).glob("shard-*.jsonl"):
                check_own_file(path, "a shard manifest", fix)


def load_records(run_dir: Path) -> dict[str, dict]:
    """file -> record from the merged manifest and every shard manifest (whatever process count made them).

    Rows without a file name string are skipped; a record is used only where it agrees with its job
    (`sharding.Shard.sort_out`), so a damaged or edited row can never be merged as it is.
    """
    records: dict[str, dict] = {}
    for path in [run_dir / MANIFEST, *sorted((run_dir / SHARDS).glob("shard-*.jsonl"))]:
        for row in read_jsonl(path):
            if isinstance(row.get("file"), str):
                records[row["file"]] = row
    return records


def generated_counts(run_dir: str | Path, event: str = "generated") -> dict[str, int]:
    """file -> how many times generation.log records `event` for it ("generated": 1 everywhere, nothing made
    twice; "recovered": images a killed run wrote but could not log, kept by the next run)."""
    counts: dict[str, int] = {}
    for row in read_jsonl(Path(run_dir) / LOG):
        if row.get("event", "generated") == event:
            counts[row["file"]] = counts.get(row["file"], 0) + 1
    return counts
