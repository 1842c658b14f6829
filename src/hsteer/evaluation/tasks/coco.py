"""COCO captions as an evaluation task: CLIP score against each caption, and FID where its parts are installed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hsteer.evaluation.clip import DEFAULT_CLIP
from hsteer.evaluation.images import save_run_grid
from hsteer.evaluation.published import published_section
from hsteer.evaluation.runs import IMAGES, GenerationSettings
from hsteer.evaluation.tasks.base import ScoringRun, alignment, mean


class CocoTask:
    name = "coco"

    def jobs(self, settings: GenerationSettings) -> list[dict[str, Any]]:
        """One job per COCO caption (up to `limit`), each with its own seed and caption id."""
        from hsteer.evaluation.datasets.coco import read_captions

        args = settings.task_args
        return [{"prompt": caption, "index": 0, "seed": settings.seed + n, "extra": {"caption_id": caption_id}}
                for n, (caption_id, caption) in enumerate(read_captions(args["captions"], args.get("limit")))]

    def check_scoring(self, scoring: dict[str, Any]) -> None:
        """Nothing to check ahead: FID is optional and reports why it was skipped."""

    def score(self, run: ScoringRun) -> tuple[list[dict], dict[str, Any]]:
        """Each image's CLIP score against its caption, and the run's mean CLIP score and FID against the
        reference (FID skipped, with the reason, where it cannot be computed)."""
        from hsteer.evaluation.datasets.coco import clip_scores, compute_fid

        name = run.scoring.get("clip") or DEFAULT_CLIP
        scorer = run.scorers.get(name)
        text_cache: dict[str, Any] = {}
        per_image: list[dict] = []
        for chunk in run.chunks():
            embeds = scorer.image_embeds(run.open(chunk))
            scores = clip_scores(alignment(scorer, embeds, [r["prompt"] for r in chunk], text_cache))
            per_image += [{"file": row["file"], "prompt": row["prompt"], "caption_id": row.get("caption_id"),
                           "clip_score": s} for row, s in zip(chunk, scores)]
        summary = {"clip_model": name, "clip_score": mean([i["clip_score"] for i in per_image])}
        summary.update(compute_fid(run.run_dir / IMAGES, run.scoring.get("reference"), run.scoring.get("fid_weights")))
        return per_image, summary

    def summary_line(self, summary: dict[str, Any]) -> str:
        """The CLIP score and FID (or that FID was skipped), in one line."""
        fid = f"FID {summary['fid']:.2f}" if summary.get("fid") is not None else "FID skipped"
        return f"CLIP score {summary['clip_score']:.2f}, {fid}"

    def report_section(self, summary: dict[str, Any], per_image: Sequence[dict], run_dir: Path,
                       grid_images: int) -> list[str]:
        """The report's Markdown lines: CLIP score and FID beside the published numbers, and a grid of
        samples."""
        ours = {"clip": summary["clip_score"], "fid": summary.get("fid")}
        lines = ["## COCO", "", *published_section([("fid", "FID-30k"), ("clip", "CLIP score")], ours,
                                                   summary["policy"]),
                 f"CLIP model: `{summary['clip_model']}`."]
        if summary.get("fid") is None:
            lines += ["", f"FID not computed: {summary.get('fid_skipped')}"]
        out = run_dir / "grids" / "coco.png"
        save_run_grid(run_dir, [i["file"] for i in per_image[:grid_images]], out)
        return lines + ["", f"![samples](grids/{out.name})"]
