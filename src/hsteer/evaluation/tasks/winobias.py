"""WinoBias as an evaluation task: professions x templates x N images, attributes read by CLIP or the world's probes.

Summary: per profession the distribution and deviation ratio of each attribute group, their mean, and
WinoAlign (100 x cos(image, prompt) under the alignment CLIP) where an alignment model is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hsteer.evaluation.clip import DEFAULT_CLIP
from hsteer.evaluation.images import distribution_plot
from hsteer.evaluation.metrics import labels_by_setting, summarize_bias
from hsteer.evaluation.published import fmt, published_section, slug
from hsteer.evaluation.runs import GenerationSettings
from hsteer.evaluation.tasks.base import ScoringRun, alignment, grids_by, mean

WORLD = "world"  # --classifier world: the bundled world's exact probes


class WinoBiasTask:
    name = "winobias"

    def jobs(self, settings: GenerationSettings) -> list[dict[str, Any]]:
        from hsteer.evaluation.winobias import winobias_prompts

        args = settings.task_args
        pairs = winobias_prompts(args["professions"], args["templates"], args.get("max_templates"))
        return [{"prompt": prompt, "index": i, "seed": settings.seed + i, "extra": {"profession": profession}}
                for profession, prompt in pairs for i in range(int(args["images_per_prompt"]))]

    def check_scoring(self, scoring: dict[str, Any]) -> None:
        """Nothing to check ahead: the classifier loads when scoring starts."""

    def score(self, run: ScoringRun) -> tuple[list[dict], dict[str, Any]]:
        name = run.scoring.get("classifier") or DEFAULT_CLIP
        classifier, attributes = _classifier(name, run)
        align_name = run.scoring.get("align_model") or (None if name == WORLD else name)
        text_cache: dict[str, Any] = {}
        per_image: list[dict] = []
        for chunk in run.chunks():
            images = run.open(chunk)
            if name == WORLD:
                embeds, labels = None, classifier.classify(images)
            else:
                embeds = classifier.scorer.image_embeds(images)
                labels = classifier.classify(images, embeds=embeds)
            align = None
            if align_name:
                scorer = run.scorers.get(align_name)
                if embeds is None or scorer is not getattr(classifier, "scorer", None):
                    embeds = scorer.image_embeds(images)
                align = alignment(scorer, embeds, [r["prompt"] for r in chunk], text_cache)
            per_image += [_item(row, {g: labels[g][n] for g in attributes}, align, n) for n, row in enumerate(chunk)]
        summary = {"classifier": name, **bias_summary(per_image, attributes, "profession")}
        if align_name:
            summary.update(_winoalign(per_image, align_name))
        return per_image, summary

    def summary_line(self, summary: dict[str, Any]) -> str:
        parts = [f"{g} DevRat {v:.3f}" for g, v in summary["mean_deviation_ratio"].items()]
        if "winoalign" in summary:
            parts.append(f"WinoAlign {summary['winoalign']:.2f}")
        return ", ".join(parts)

    def report_section(self, summary: dict[str, Any], per_image: Sequence[dict], run_dir: Path,
                       grid_images: int) -> list[str]:
        groups = list(summary["attributes"])
        ours = {**summary["mean_deviation_ratio"], "winoalign": summary.get("winoalign")}
        keys = [(g, f"{g} DevRat") for g in groups] + [("winoalign", "WinoAlign")]
        lines = ["## Deviation ratio (mean over professions) and WinoAlign", "",
                 *published_section(keys, ours, summary["policy"]),
                 f"Classifier: `{summary['classifier']}`; attributes: "
                 + "; ".join(f"{g} = {', '.join(repr(t) for t in ts)}" for g, ts in summary["attributes"].items()),
                 "", "## Per profession", "", *profession_table(summary), "", "## Distributions", ""]
        for g in groups:
            out = run_dir / "plots" / f"distribution-{slug(g)}.png"
            distribution_plot(summary, g, out)
            lines.append(f"![{g}](plots/{out.name})")
        lines += ["", "## Images (first of each profession)", ""]
        return lines + grids_by(run_dir, per_image, lambda i: [i["profession"]], grid_images)


def _classifier(name: str, run: ScoringRun):
    """(the attribute classifier, group -> labels) for a classifier name (`world` or a CLIP)."""
    if name == WORLD:
        from hsteer.world.scene import WorldProbe

        probe = WorldProbe()
        groups = run.scoring.get("groups") or list(probe.attributes)
        return probe, {g: tuple(probe.attributes[g]) for g in groups}
    from hsteer.evaluation.clip import ClipZeroShot

    attributes = {g: tuple(t) for g, t in run.scoring["attributes"].items()}
    return ClipZeroShot(run.scorers.get(name), attributes), attributes


def _item(row: dict, labels: dict[str, str], align: list[float] | None, n: int) -> dict:
    item = {"file": row["file"], "prompt": row["prompt"], "profession": row["profession"],
            "concepts": row.get("concepts", []), **labels}
    if align is not None:
        item["winoalign"] = align[n]
    return item


def bias_summary(per_image: Sequence[dict], attributes: dict[str, tuple[str, ...]], setting_key: str,
                 settings: Sequence[str] = ()) -> dict[str, Any]:
    """attributes, mean_deviation_ratio and per_profession (per `setting_key`) of labelled images.

    Shared by WinoBias and the bundled world's evaluation: the same grouping, the same metrics.
    """
    bias = summarize_bias(labels_by_setting(per_image, setting_key, list(attributes), settings), attributes)
    return {"attributes": {g: list(t) for g, t in attributes.items()},
            "mean_deviation_ratio": bias["mean_deviation_ratio"], "per_profession": bias["per_setting"]}


def _winoalign(per_image: Sequence[dict], align_name: str) -> dict[str, Any]:
    per_prof: dict[str, list[float]] = {}
    for i in per_image:
        per_prof.setdefault(i["profession"], []).append(i["winoalign"])
    return {"winoalign": mean([i["winoalign"] for i in per_image]), "align_model": align_name,
            "winoalign_per_profession": {p: mean(v) for p, v in per_prof.items()}}


def profession_table(summary: dict[str, Any]) -> list[str]:
    """Markdown: per profession, each group's deviation ratio and distribution (and WinoAlign)."""
    groups = list(summary["attributes"])
    align = summary.get("winoalign_per_profession")
    head = "| profession | " + " | ".join(f"{g} DevRat | {g} distribution" for g in groups)
    if align is not None:
        head += " | WinoAlign"
    lines = [head + " |", "|" + "---|" * (1 + 2 * len(groups) + (align is not None))]
    for prof, entry in summary["per_profession"].items():
        cells = []
        for g in groups:
            dist = ", ".join(f"{c} {v:.2f}" for c, v in entry[g]["distribution"].items())
            cells += [fmt(entry[g]["deviation_ratio"]), dist]
        if align is not None:
            cells.append(fmt(align[prof], 2))
        lines.append(f"| {prof} | " + " | ".join(cells) + " |")
    return lines
