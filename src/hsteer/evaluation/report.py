"""report.md for an evaluation folder: a common header, then the task's section (tables, plots, grids)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hsteer.evaluation.images import distribution_plot
from hsteer.evaluation.published import PUBLISHED, PUBLISHED_NOTE, PUBLISHED_SDXL
from hsteer.evaluation.tasks import get_task
from hsteer.fileio import atomic_write_text

__all__ = ["PUBLISHED", "PUBLISHED_NOTE", "PUBLISHED_SDXL", "distribution_plot", "write_report"]


def write_report(run_dir: str | Path, summary: dict[str, Any], per_image: Sequence[dict],
                 grid_images: int = 16) -> Path:
    """Write `report.md` in `run_dir`: the run's model, policy, image count, gate and guard, then the
    task's own section with image grids; returns its path."""
    run_dir = Path(run_dir)
    lines = [f"# hsteer evaluation: {summary['task']}", "",
             f"- model: `{summary.get('model') or 'bundled world model'}`",
             f"- policy: `{summary['policy']}`", f"- images: {summary['images']}", *_gate_line(summary),
             *_guard_line(summary), ""]
    lines += get_task(summary["task"]).report_section(summary, per_image, run_dir, grid_images)
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _gate_line(summary: dict[str, Any]) -> list[str]:
    """The prompt-aware gate's setting and what it changed (older summaries have none)."""
    effect = summary.get("gate_effect")
    if not effect:
        return []
    if not effect["respect_prompt"]:
        return ["- prompt-aware gate: off (the papers' blind steering)"]
    reasons = ", ".join(f"{why} {n}" for why, n in effect["reasons"].items()) or "none"
    strength = (f"; mean safety strength {effect['mean_safety_strength']:.2f}"
                if "mean_safety_strength" in effect else "")
    return [f"- prompt-aware gate: `{effect['gate']}`, changed {effect['images_changed']} of {summary['images']} "
            f"images ({reasons}){strength}"]


def _guard_line(summary: dict[str, Any]) -> list[str]:
    """The image-aware guard's detector and how many images it flagged (runs without a guard: none)."""
    effect = summary.get("guard_effect")
    if not effect:
        return []
    lo, hi = effect["share_flagged_ci"]
    return [f"- image-aware guard: `{effect['detector']}` ({effect['design']}), flagged {effect['flagged']} of "
            f"{effect['images']} images ({effect['share_flagged']:.2f} [{lo:.2f}, {hi:.2f}]), "
            f"redrawn {effect['redrawn']}"]
