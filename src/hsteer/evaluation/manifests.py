"""A run's manifest: merged from the shard manifests when every job has a record that agrees with it (prompt,
index, seed) and an image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hsteer.errors import HsteerError
from hsteer.evaluation.runs import IMAGES, MANIFEST, load_records, read_config, read_jsonl, write_jsonl
from hsteer.evaluation.tasks import task_jobs


def merge_manifests(run_dir: str | Path, all_jobs: Sequence[dict] | None = None) -> bool:
    """Write manifest.jsonl (job order) when every job has a record and a valid image; True if complete."""
    run_dir = Path(run_dir)
    if all_jobs is None:
        all_jobs = task_jobs(read_config(run_dir).generation)
    records = load_records(run_dir)
    rows = []
    for job in all_jobs:
        rec = records.get(job["file"])
        if rec is None or not (run_dir / IMAGES / job["file"]).is_file() or not _agrees(rec, job):
            return False  # a record that disagrees with its job is never merged: the next run redoes it
        rows.append(rec)
    write_jsonl(run_dir / MANIFEST, rows)
    return True


def _agrees(record: dict, job: dict) -> bool:
    """Whether a record is its job's: same prompt, index and seed (a damaged or edited row is not)."""
    return all(record.get(key) == job[key] for key in ("prompt", "index", "seed"))


def finished_records(run_dir: str | Path) -> list[dict]:
    """The merged manifest of a complete run (scoring's input)."""
    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / MANIFEST)
    expected = len(task_jobs(read_config(run_dir).generation))
    if len(rows) != expected:
        raise HsteerError(f"{run_dir} is not fully generated ({len(rows)} of {expected} images in {MANIFEST}); "
                          "rerun the same `hsteer eval` command to finish it")
    return rows
