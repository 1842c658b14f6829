"""Attack prompt sets as an evaluation task: each adversarial prompt's images, flagged by the run's scorer.

The prompts come from a local file in one of the published formats (`evaluation.datasets.attack_prompts`: P4D,
Ring-A-Bell, MMA-Diffusion, UnlearnDiffAtk, or what `hsteer attack` found). The scorer is the world's harm
probe (`detectors: ["world"]`, for the bundled model) or Q16 and/or NudeNet, OR-ed as in I2P; the attack
success rate (ASR) is the share of flagged images, with its 95% interval, and per prompt
(`hsteer.evaluation.harm`, which `hsteer attack` scores with too).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hsteer.evaluation.harm import HarmFlagger, asr_summary, check_harm_detectors
from hsteer.evaluation.published import fmt
from hsteer.evaluation.runs import GenerationSettings
from hsteer.evaluation.tasks.base import ScoringRun, grids_by


class AttackTask:
    name = "attack"

    def jobs(self, settings: GenerationSettings) -> list[dict[str, Any]]:
        """One job per image of each attack prompt: the row's own seed (else the run's) plus the image
        index, and the row's guidance where `csv_guidance` asks for it."""
        from hsteer.evaluation.datasets.attack_prompts import read_attack_prompts

        args = settings.task_args
        rows = read_attack_prompts(args["prompts"], prompt_column=args.get("prompt_column"),
                                   seed_column=args.get("seed_column"), limit=args.get("limit"),
                                   images_per_prompt=int(args.get("images_per_prompt", 1)))
        jobs = []
        for row in rows:
            base = settings.seed if row.seed is None else row.seed
            for i in range(int(args.get("images_per_prompt", 1))):
                job = {"prompt": row.prompt, "index": i, "seed": base + i,
                       "extra": {"attack_row": row.row, "source_prompt": row.source}}
                if args.get("csv_guidance") and row.guidance is not None:
                    job["guidance"] = row.guidance
                jobs.append(job)
        return jobs

    def check_scoring(self, scoring: dict[str, Any]) -> None:
        """Refuse unknown or unavailable harm detectors before any image is generated."""
        check_harm_detectors(scoring, before_generation=True)

    def score(self, run: ScoringRun) -> tuple[list[dict], dict[str, Any]]:
        """Flag each image with every harm detector; an image is attacked when any flags it. Returns the
        per-image rows and the attack success rate with its interval and per prompt."""
        detectors = check_harm_detectors(run.scoring)
        flagger = HarmFlagger(detectors, run.scoring, run.scorers.get)
        per_image: list[dict] = []
        for chunk in run.chunks():
            for row, flags in zip(chunk, flagger.flags(run.open(chunk), [run.image_path(r) for r in chunk])):
                per_image.append({"file": row["file"], "prompt": row["prompt"], "seed": row["seed"],
                                  "source": row.get("source_prompt"), **flags, "attacked": any(flags.values())})
        return per_image, {"detectors": detectors, **asr_summary(per_image)}

    def summary_line(self, summary: dict[str, Any]) -> str:
        """The attack success rate with its 95% interval, in one line."""
        lo, hi = summary["asr_ci"]
        return f"ASR {summary['asr']:.3f} [{lo:.3f}, {hi:.3f}] over {summary['prompts']} prompts"

    def report_section(self, summary: dict[str, Any], per_image: Sequence[dict], run_dir: Path,
                       grid_images: int) -> list[str]:
        """The report's Markdown lines: the success rate, a per-prompt table and image grids (attacked,
        not attacked)."""
        lo, hi = summary["asr_ci"]
        lines = ["## Attack success rate", "",
                 f"ASR {fmt(summary['asr'])} (95% interval {fmt(lo)} to {fmt(hi)}), scored by "
                 f"{' OR '.join(summary['detectors'])}, over {summary['prompts']} prompts.", "",
                 "| prompt | ASR | images |", "|---|---|---|"]
        for prompt, entry in summary["per_prompt"].items():
            shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
            lines.append(f"| {shown.replace('|', '/')} | {fmt(entry['asr'])} | {entry['images']} |")
        lines += ["", "## Images", ""]
        return lines + grids_by(run_dir, per_image, lambda i: ["attacked" if i["attacked"] else "not attacked"],
                                grid_images)
