"""The protocol every evaluation task implements, and what scoring hands it.

A task turns generation settings into a job list, checks its scoring settings before anything is
generated, scores a finished run folder, and writes its summary line and its report section. Adding a
task means adding one module with a class that has these members, and one entry in `TASKS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hsteer.evaluation.runs import IMAGES, GenerationSettings


@dataclass
class ScoringRun:
    """A finished run as scoring sees it: its records, its scoring settings, shared CLIP models, progress."""

    run_dir: Path
    rows: list[dict]
    scoring: dict[str, Any]
    scorers: Scorers
    batch: int = 32
    advance: Callable[[int], Any] = lambda n: None  # progress: n more images scored

    def image_path(self, row: dict) -> Path:
        """The file of a manifest row's image in the run folder."""
        return self.run_dir / IMAGES / row["file"]

    def chunks(self) -> Iterator[list[dict]]:
        """The rows in batches; each batch counts as scored once the caller asks for the next."""
        for start in range(0, len(self.rows), self.batch):
            chunk = self.rows[start:start + self.batch]
            yield chunk
            self.advance(len(chunk))

    def open(self, rows: Sequence[dict]) -> list:
        """The rows' images; a link (out of the run folder or not), a special file, a bomb or a damaged image
        is one error naming the file (`fileio.read_image`)."""
        from hsteer.fileio import read_image

        return [read_image(self.image_path(row), "run image", no_links=True) for row in rows]


class EvalTask(Protocol):
    """One evaluation task (WinoBias, I2P, COCO, the bundled world)."""

    name: str

    def jobs(self, settings: GenerationSettings) -> Iterable[dict[str, Any]]:
        """The run's jobs in order: dicts with prompt, index, seed, extra (and optionally guidance)."""
        ...

    def check_scoring(self, scoring: dict[str, Any]) -> None:
        """Raise HsteerError when scoring could not run, before anything is generated."""
        ...

    def score(self, run: ScoringRun) -> tuple[list[dict], dict[str, Any]]:
        """(one dict per image for scores.jsonl, the task's entries of summary.json)."""
        ...

    def summary_line(self, summary: dict[str, Any]) -> str:
        """The headline numbers, e.g. "gender DevRat 0.512, WinoAlign 27.10"."""
        ...

    def report_section(self, summary: dict[str, Any], per_image: Sequence[dict], run_dir: Path,
                       grid_images: int) -> list[str]:
        """report.md's lines after the common header (may write plots/ and grids/ under run_dir)."""
        ...


class Scorers:
    """CLIP models by name, loaded once per scoring run."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._cache: dict[str, Any] = {}

    def get(self, name: str):
        """The CLIP scorer named `name`, loaded once per run and shared by every use."""
        from hsteer.evaluation.clip import ClipScorer

        if name not in self._cache:
            self._cache[name] = ClipScorer(name, device=self.device)
        return self._cache[name]


def alignment(scorer, embeds, prompts: Sequence[str], cache: dict[str, Any]) -> list[float]:
    """100 x cos(image, prompt) per image; prompt embeddings are computed once and kept in `cache`."""
    import torch

    missing = [p for p in dict.fromkeys(prompts) if p not in cache]
    if missing:
        for p, e in zip(missing, scorer.text_embeds(missing)):
            cache[p] = e
    text = torch.stack([cache[p] for p in prompts])
    return (100.0 * (embeds * text).sum(-1)).tolist()


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean (ZeroDivisionError on an empty sequence)."""
    return sum(values) / len(values)


def grids_by(run_dir: Path, per_image: Sequence[dict], key: Callable[[dict], Iterable[str]],
             grid_images: int) -> list[str]:
    """One grid per value of `key` (the first `grid_images` images of each), as report lines."""
    from hsteer.evaluation.images import save_run_grid
    from hsteer.evaluation.published import slug

    groups: dict[str, list[str]] = {}
    for item in per_image:
        for value in key(item):
            groups.setdefault(value, []).append(item["file"])
    lines = []
    for value, files in groups.items():
        out = run_dir / "grids" / f"{slug(value)}.png"
        save_run_grid(run_dir, files[:grid_images], out)
        lines.append(f"### {value}\n\n![{value}](grids/{out.name})\n")
    return lines
