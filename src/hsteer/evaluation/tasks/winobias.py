"""WinoBias as an evaluation task: professions x templates x N images, attributes read by CLIP or the world's probes.

Summary: per profession the distribution and deviation ratio of each attribute group, their mean, and
WinoAlign (100 x cos(image, prompt) under the alignment CLIP) where an alignment model is set. With the
explicit templates ("a photo of a female doctor"), also the share of images that show the label the
prompt names, against plain and with same-seed agreement when a plain run is given (`named`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hsteer.errors import HsteerError
from hsteer.evaluation.clip import DEFAULT_CLIP
from hsteer.evaluation.leakage import bias_intervals, fmt_ci, pair_items, untargeted_summary
from hsteer.evaluation.images import distribution_plot
from hsteer.evaluation.metrics import Bootstrap, labels_by_setting, share_statistic, summarize_bias
from hsteer.evaluation.published import fmt, published_section, slug
from hsteer.evaluation.runs import GenerationSettings
from hsteer.evaluation.tasks.base import ScoringRun, alignment, grids_by, mean

WORLD = "world"  # --classifier world: the bundled world's exact probes


class WinoBiasTask:
    name = "winobias"

    def jobs(self, settings: GenerationSettings) -> list[dict[str, Any]]:
        """`images_per_prompt` jobs per profession prompt (WinoBias templates, or explicit prompts naming
        an attribute), seeds counted from the run's seed."""
        from hsteer.evaluation.datasets.winobias import winobias_prompts

        from hsteer.evaluation.datasets.winobias import explicit_prompts

        args = settings.task_args
        if args["templates"] == "explicit":
            rows = explicit_prompts(args["professions"], args["named"])
        else:
            rows = [{"profession": profession, "prompt": prompt} for profession, prompt
                    in winobias_prompts(args["professions"], args["templates"], args.get("max_templates"))]
        return [{"prompt": row["prompt"], "index": i, "seed": settings.seed + i,
                 "extra": {k: v for k, v in row.items() if k != "prompt"}}
                for row in rows for i in range(int(args["images_per_prompt"]))]

    def check_scoring(self, scoring: dict[str, Any]) -> None:
        """Nothing to check ahead: the classifier loads when scoring starts."""

    def score(self, run: ScoringRun) -> tuple[list[dict], dict[str, Any]]:
        """Classify each image's attributes and measure bias: deviation ratio per group and profession
        with bootstrap intervals, WinoAlign where an alignment model is given, and what untargeted and
        named attributes kept."""
        name = run.scoring.get("classifier") or DEFAULT_CLIP
        classifier, attributes = _classifier(name, run)
        align_name = run.scoring.get("align_model") or (None if name == WORLD else name)
        per_image = _label(run, classifier, attributes, name == WORLD, align_name)
        watched = [g for g in _watch(run.scoring, name) if g in attributes]
        summary = {"classifier": name, **bias_summary(per_image, attributes, "profession")}
        summary["attributes"] = {g: t for g, t in summary["attributes"].items() if g not in watched}
        if watched:
            summary["watch"] = {g: list(attributes[g]) for g in watched}
        summary["deviation_ratio_ci"] = bias_intervals(per_image, attributes, "profession",
                                                       list(summary["per_profession"]))
        if align_name:
            summary.update(_winoalign(per_image, align_name))
        summary["targeted"] = sorted(_targeted(run))
        if any("named_group" in i for i in per_image):
            summary["named"] = named_summary(per_image)
        if run.scoring.get("baseline_run"):
            summary.update(_against_plain(run, per_image, classifier, attributes, name == WORLD, summary["targeted"]))
        return per_image, summary

    def summary_line(self, summary: dict[str, Any]) -> str:
        """Deviation ratio per group, WinoAlign and the untargeted and named measures, in one line."""
        parts = [f"{g} DevRat {v:.3f}" for g, v in summary["mean_deviation_ratio"].items()]
        if "winoalign" in summary:
            parts.append(f"WinoAlign {summary['winoalign']:.2f}")
        parts += [f"{g} kept {e['agreement']:.2f}" for g, e in summary.get("untargeted", {}).items()]
        parts += [f"named {g} shown {e['shown']:.2f}" for g, e in summary.get("named", {}).items()]
        return ", ".join(parts)

    def report_section(self, summary: dict[str, Any], per_image: Sequence[dict], run_dir: Path,
                       grid_images: int) -> list[str]:
        """The report's Markdown lines: deviation ratio and WinoAlign beside the published numbers, the
        per-profession table and a distribution plot per attribute group."""
        groups = [*summary["attributes"], *summary.get("watch", {})]
        ours = {**summary["mean_deviation_ratio"], "winoalign": summary.get("winoalign")}
        keys = [(g, f"{g} DevRat") for g in summary["attributes"]] + [("winoalign", "WinoAlign")]
        named = {**summary["attributes"], **summary.get("watch", {})}
        lines = ["## Deviation ratio (mean over professions) and WinoAlign", "",
                 *published_section(keys, ours, summary["policy"]),
                 f"Classifier: `{summary['classifier']}`; attributes: "
                 + "; ".join(f"{g} = {', '.join(repr(t) for t in ts)}" for g, ts in named.items()),
                 "", *untargeted_section(summary), *named_section(summary), "## Per profession", "", *profession_table(summary), "",
                 "## Distributions", ""]
        for g in groups:
            out = run_dir / "plots" / f"distribution-{slug(g)}.png"
            distribution_plot(summary, g, out)
            lines.append(f"![{g}](plots/{out.name})")
        lines += ["", "## Images (first of each profession)", ""]
        return lines + grids_by(run_dir, per_image, lambda i: [i["profession"]], grid_images)


def _watch(scoring: dict[str, Any], name: str) -> dict[str, tuple[str, ...]] | list[str]:
    """The watched groups (attributes the run does not steer): group -> texts, or probe group names (world)."""
    watch = scoring.get("watch") or {}
    return list(watch) if name == WORLD else {g: tuple(t) for g, t in watch.items()}


def _classifier(name: str, run: ScoringRun):
    """(the attribute classifier, group -> labels) for a classifier name (`world` or a CLIP), watched groups included."""
    if name == WORLD:
        from hsteer.world.scene import WorldProbe

        probe = WorldProbe()
        groups = list(dict.fromkeys([*(run.scoring.get("groups") or probe.attributes), *_watch(run.scoring, name)]))
        unknown = [g for g in groups if g not in probe.attributes]
        if unknown:
            raise HsteerError(f"the world's probes read {', '.join(probe.attributes)}, not {', '.join(unknown)}")
        return probe, {g: tuple(probe.attributes[g]) for g in groups}
    from hsteer.evaluation.clip import ClipZeroShot

    attributes = {g: tuple(t) for g, t in run.scoring["attributes"].items()}
    attributes.update(_watch(run.scoring, name))
    return ClipZeroShot(run.scorers.get(name), attributes), attributes


def _label(run: ScoringRun, classifier, attributes: dict[str, tuple[str, ...]], world: bool,
           align_name: str | None = None) -> list[dict]:
    """One item per image of `run`: its job, each group's label (and WinoAlign with `align_name`)."""
    text_cache: dict[str, Any] = {}
    per_image: list[dict] = []
    for chunk in run.chunks():
        images = run.open(chunk)
        if world:
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
    return per_image


def _targeted(run: ScoringRun) -> set[str]:
    """The groups the run's policy steers (attribute groups named like them count as targeted)."""
    from hsteer.evaluation.baselines import targeted_by_spec
    from hsteer.evaluation.runs import read_config

    generation = read_config(run.run_dir).generation
    return targeted_by_spec(generation.policy, generation.bank)


def _against_plain(run: ScoringRun, per_image: list[dict], classifier, attributes: dict[str, tuple[str, ...]],
                   world: bool, targeted: list[str]) -> dict[str, Any]:
    """The plain baseline run's images, read by the same classifier: its deviation ratios, and every
    untargeted group's same-seed agreement and deviation-ratio change (docs/methods.md §8)."""
    from hsteer.evaluation.baselines import check_baseline_run
    from hsteer.evaluation.runs import MANIFEST, read_config, read_jsonl

    base_dir = Path(run.scoring["baseline_run"])
    check_baseline_run(base_dir, read_config(run.run_dir).generation)
    rows = read_jsonl(base_dir / MANIFEST)  # written once every job of the run is finished
    if not rows:
        raise HsteerError(f"the baseline run {base_dir} is not fully generated; finish it with its own command")
    base = ScoringRun(base_dir, rows, run.scoring, run.scorers, run.batch)
    plain = _label(base, classifier, attributes, world)
    untargeted = {g: c for g, c in attributes.items() if g not in targeted}
    plain_bias = bias_summary(pair_items(per_image, plain), attributes, "profession")
    out = {"baseline_run": str(base_dir), "plain_mean_deviation_ratio": plain_bias["mean_deviation_ratio"],
           "untargeted": untargeted_summary(per_image, plain, untargeted, "profession")}
    if any("named_group" in i for i in per_image):
        out["named"] = named_summary(per_image, plain)
    return out


def _item(row: dict, labels: dict[str, str], align: list[float] | None, n: int) -> dict:
    item = {"file": row["file"], "prompt": row["prompt"], "seed": row["seed"], "profession": row["profession"],
            "concepts": row.get("concepts", []), **labels}
    if "named_group" in row:
        item.update(named_group=row["named_group"], named_label=row["named_label"])
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


def named_summary(per_image: Sequence[dict], plain: Sequence[dict] | None = None) -> dict[str, dict[str, Any]]:
    """Explicit prompts, per named group: the share of images that show the label the prompt names, with a
    95% interval (resampled within prompt); with the plain run's images (same prompt and seed), plain's
    share and the same-seed agreement on that group: a gate that respects the prompt keeps both near 1."""
    out: dict[str, dict[str, Any]] = {}
    for group in dict.fromkeys(i["named_group"] for i in per_image if "named_group" in i):
        items = [i for i in per_image if i.get("named_group") == group]
        boot = Bootstrap([i["prompt"] for i in items])
        shown = share_statistic([i[group] == i["named_label"] for i in items])
        entry = {"images": len(items), "shown": boot.point(shown), "shown_ci": boot.interval(shown)}
        if plain is not None:
            paired = pair_items(items, plain)
            shown_plain = share_statistic([p[group] == i["named_label"] for i, p in zip(items, paired)])
            agree = share_statistic([p[group] == i[group] for i, p in zip(items, paired)])
            entry.update(shown_plain=boot.point(shown_plain), shown_plain_ci=boot.interval(shown_plain),
                         agreement=boot.point(agree), agreement_ci=boot.interval(agree))
        out[group] = entry
    return out


def named_section(summary: dict[str, Any]) -> list[str]:
    """Markdown: the explicit prompts' named-label share (this run, plain) and same-seed agreement."""
    if "named" not in summary:
        return []
    lines = ["## Prompts that name an attribute", "",
             "Each prompt names one label (\"a photo of a female doctor\"); shown: the share of its images the "
             "classifier reads as that label. Brackets: bootstrap 95% intervals.", "",
             "| named group | images | shown (this run) | shown (plain run) | same-seed agreement |",
             "|---|---|---|---|---|"]
    for g, e in summary["named"].items():
        lines.append(f"| {g} | {e['images']} | {fmt_ci(e['shown'], e['shown_ci'])} | "
                     f"{fmt_ci(e.get('shown_plain'), e.get('shown_plain_ci'))} | "
                     f"{fmt_ci(e.get('agreement'), e.get('agreement_ci'))} |")
    return lines + [""]


def untargeted_section(summary: dict[str, Any]) -> list[str]:
    """Markdown: every group's deviation ratio with its 95% interval, next to the plain baseline's, and the
    untargeted groups' same-seed agreement and change against plain (docs/methods.md §8)."""
    ci = summary.get("deviation_ratio_ci", {}).get("mean_all", {})
    watch, plain = summary.get("watch", {}), summary.get("plain_mean_deviation_ratio", {})
    lines = ["## Every attribute, with bootstrap 95% intervals", "",
             "| group | | DevRat (this run) | DevRat (plain run) |", "|---|---|---|---|"]
    for g, value in summary["mean_deviation_ratio"].items():
        role = "watched" if g in watch else "targeted" if g in summary.get("targeted", ()) else "untargeted"
        lines.append(f"| {g} | {role} | {fmt_ci(value, ci.get(g))} | {fmt(plain.get(g))} |")
    lines.append("")
    if "untargeted" not in summary:
        return lines + ["Name a finished plain run of the same model and seeds (the scoring setting baseline_run; "
                        "CLI: `--baseline-run DIR`) for same-seed agreement and the change against plain.", ""]
    lines += [f"Against the plain run `{summary['baseline_run']}`, image by image (same prompt and seed): "
              "agreement is the share of images whose label equals the plain image's.", "",
              "| untargeted group | same-seed agreement | DevRat plain | DevRat this run | change |",
              "|---|---|---|---|---|"]
    for g, e in summary["untargeted"].items():
        lines.append(f"| {g} | {fmt_ci(e['agreement'], e['agreement_ci'])} | "
                     f"{fmt_ci(e['deviation_ratio_plain'], e['deviation_ratio_plain_ci'])} | "
                     f"{fmt_ci(e['deviation_ratio'], e['deviation_ratio_ci'])} | "
                     f"{fmt_ci(e['deviation_ratio_change'], e['deviation_ratio_change_ci'])} |")
    return lines + [""]


def profession_table(summary: dict[str, Any]) -> list[str]:
    """Markdown: per profession, each group's deviation ratio and distribution (and WinoAlign)."""
    groups = [*summary["attributes"], *summary.get("watch", {})]
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
