"""A run folder: its layout, its settings (config.json), and the JSON-lines files it keeps.

    config.json          what to generate ("generation") and how to score it ("scoring")
    images/NNNNNN.png    image of job NNNNNN (its position in the full job list)
    manifests/shard-R-of-N.jsonl   finished images of process R of N, rewritten atomically
    manifest.jsonl       all finished images, merged when every job is done
    generation.log       one line per image generated (file, process, pid): nothing is made twice
    scores.jsonl, summary.json, report.md, plots/, grids/   written by scoring
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hsteer.errors import HsteerError
from hsteer.fileio import atomic_write_text

CONFIG = "config.json"
MANIFEST = "manifest.jsonl"
LOG = "generation.log"
IMAGES = "images"
SHARDS = "manifests"

# Settings that decide the images: a rerun into the same folder must repeat them.
IDENTITY_KEYS = ("task", "model", "policy", "bank", "steps", "guidance", "height", "width", "seed",
                 "steer_unconditional", "task_args", "dtype")


# --- settings -----------------------------------------------------------------------------------------


@dataclass
class GenerationSettings:
    """What to generate: the "generation" object of config.json, key for key.

    `task_args` belong to the task (its `jobs` reads them); `policy` is a policy spec
    ({"kind": "plain" | "sld" | "fair" | "safe" | "concepts", ...}, see `evaluation.baselines`).
    """

    task: str
    model: str | None = None
    dtype: str = "float32"
    policy: dict[str, Any] = field(default_factory=lambda: {"kind": "plain"})
    bank: str | None = None
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
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return json.loads(json.dumps({**data, **self.extra}))  # a deep copy, JSON types only

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSettings:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    def identity(self) -> dict[str, Any]:
        """The settings that decide the images (IDENTITY_KEYS)."""
        data = self.to_dict()
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
        return {"generation": self.generation.to_dict(), "scoring": dict(self.scoring)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        return cls(GenerationSettings.from_dict(data["generation"]), data.get("scoring", {}))


RunSpec = RunSettings  # the earlier name


def read_config(run_dir: str | Path) -> RunSettings:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise HsteerError(f"{run_dir} holds no {CONFIG}; it is not an hsteer evaluation folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HsteerError(f"{path} is not valid UTF-8 JSON ({type(exc).__name__}); it is damaged: restore it, "
                          "or start the run over in another --out") from None
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
                              "use another --out, or repeat the original settings to resume it")
    for stale in (run_dir / IMAGES).glob(".*.png"):  # temporary files of a killed writer
        stale.unlink(missing_ok=True)
    (run_dir / IMAGES).mkdir(parents=True, exist_ok=True)
    (run_dir / SHARDS).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, settings.to_json())


# --- JSON lines and images --------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a torn last line (killed writer of a non-atomic file) is ignored."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Rewrite `path` atomically with one JSON object a line."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def append_log(path: Path, rows: Iterable[dict]) -> None:
    """Append rows to a log in one write, synced (a kill leaves whole lines or a torn last one)."""
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


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


def load_records(run_dir: Path) -> dict[str, dict]:
    """file -> record from the merged manifest and every shard manifest (whatever process count made them)."""
    records: dict[str, dict] = {}
    for row in read_jsonl(run_dir / MANIFEST):
        records[row["file"]] = row
    for path in sorted((run_dir / SHARDS).glob("shard-*.jsonl")):
        for row in read_jsonl(path):
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
