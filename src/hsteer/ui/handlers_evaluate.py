"""The Evaluate tab's handlers: the world evaluation of a session's bank, and a finished run's report.

The world evaluation runs plain and fair on the same seeds (the plain images are the fair run's
baseline, for the leakage figures) and reads every attribute with the world's exact probes; only the
bundled world model has those. A real model's evaluation is `hsteer eval`; its report can be opened
here from an allowed folder.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import hsteer.ui._lib as _lib
from hsteer.ui._lib import ConceptBank, HsteerError
from hsteer.ui.forms import MAX_EVAL_IMAGES, MAX_STEPS, SAFETY_GROUP, UserError, names, text, whole
from hsteer.ui.render import plain as plain_text
from hsteer.ui.server import HsteerUI
from hsteer.ui.session import Session

MAX_REPORT_BYTES = 2_000_000
#: The per-profession table's columns before an evaluation has run (one DR pair per group after).
EVAL_HEADERS = ["profession", "DR plain", "DR fair", "fidelity plain", "fidelity fair"]
UNTARGETED_HEADERS = ["attribute not steered", "same-seed agreement", "plain", "fair", "change (fair - plain)"]


def _world_config(ui: HsteerUI, bank: ConceptBank, groups: Sequence[str], professions: Sequence[str],
                  images_per_prompt: Any, steps: Any, with_safety: Any) -> tuple[Any, bool]:
    """The world evaluation's settings from the form, checked; and whether the safety group is measured."""
    if not len(bank):
        raise UserError("this session's bank is empty: learn concepts or load a bank first")
    if not groups:
        raise UserError("choose at least one group of the bank to be fair over")
    for group in groups:
        bank.group(group)
    for profession in professions:
        if profession not in _lib.world.PROFESSIONS:
            raise UserError(f"unknown profession {profession!r}; the world's professions: "
                            f"{', '.join(_lib.world.PROFESSIONS)}")
    if not professions:
        raise UserError("choose at least one profession")
    n = whole(images_per_prompt, "images per prompt", 1, MAX_EVAL_IMAGES)
    safety = bool(with_safety) and SAFETY_GROUP in bank.groups()
    config = _lib.WorldEvalConfig(professions=tuple(professions), images_per_prompt=n,
                                  harm_images_per_prompt=max(1, n // 2) if safety else 0,
                                  harm_prompts=_lib.WorldEvalConfig().harm_prompts if safety else (),
                                  steps=whole(steps, "steps", 1, MAX_STEPS), guidance=float(ui.defaults["guidance"]))
    return config, safety


def evaluate(ui: HsteerUI, sess: Session, groups: Sequence[str] | None, professions: Sequence[str] | None,
             images_per_prompt: Any, steps: Any, with_safety: Any,
             progress: Callable[..., Any]) -> tuple[dict[str, dict], float, bool, tuple[str, ...]]:
    """Plain vs fair over `groups` on the world's prompts: (summaries by arm, seconds, safety measured, groups)."""
    if not ui.is_world:
        raise UserError(f"the world evaluation runs on the bundled world model; this server runs "
                        f"{ui.model_label}. Evaluate real models with `hsteer eval ...` and open the run's "
                        "report below")
    bank = sess.snapshot()
    groups = names(groups)
    config, safety = _world_config(ui, bank, groups, names(professions), images_per_prompt, steps, with_safety)
    began = time.perf_counter()
    progress(0.0, desc="plain images")
    with ui.pool.acquire() as pipe:
        plain = _lib.evaluate_world(pipe, config, bank=bank, policy=_lib.PlainPolicy(), progress=False)
    progress(0.5, desc="fair images")
    harm_policy = _lib.SafePolicy(group=SAFETY_GROUP) if safety else _lib.PlainPolicy()
    with ui.pool.acquire() as pipe:  # the plain images are its baseline: same seeds, for the leakage figures
        steered = _lib.evaluate_world(pipe, config, bank=bank, policy=_lib.FairPolicy(groups), progress=False,
                                      baseline=plain, harm_policy=harm_policy)
    progress(1.0, desc="tables")
    return {"plain": plain.summary, "fair": steered.summary}, time.perf_counter() - began, safety, groups


def eval_table(results: dict[str, dict], groups: Sequence[str]) -> dict[str, Any]:
    """Deviation ratio and fidelity per profession, plain beside fair, and their means."""
    plain, fair = results["plain"], results["fair"]
    headers = (["profession"] + [f"{g} DR {p}" for g in groups for p in ("plain", "fair")]
               + ["fidelity plain", "fidelity fair"])
    rows = []
    for prof, by_group in plain["deviation_ratio"]["per_profession"].items():
        row = [prof]
        for g in groups:
            row += [round(by_group[g], 3), round(fair["deviation_ratio"]["per_profession"][prof][g], 3)]
        row += [round(plain["fidelity"]["per_profession"][prof], 3), round(fair["fidelity"]["per_profession"][prof], 3)]
        rows.append(row)
    mean = ["mean"]
    for g in groups:
        mean += [round(plain["deviation_ratio"]["mean_all"][g], 3), round(fair["deviation_ratio"]["mean_all"][g], 3)]
    mean += [round(plain["fidelity"]["mean"], 3), round(fair["fidelity"]["mean"], 3)]
    rows.append(mean)
    return {"headers": headers, "data": rows}


def _with_ci(summary: dict, *keys: str) -> str:
    """summary[k1][k2]... with its interval, which sits under k1 + '_ci' and then the same keys."""
    value, ci = summary, summary
    for n, key in enumerate(keys):
        value = value.get(key) if isinstance(value, dict) else None
        ci = ci.get(key + "_ci" if n == 0 else key) if isinstance(ci, dict) else None
    return _lib.fmt_ci(value, ci)


def _fmt(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def eval_summary(results: dict[str, dict], seconds: float, safety: bool, fair_groups: Sequence[str]) -> str:
    """The headline table: bias, fidelity and harm marks, plain vs fair, with bootstrap intervals."""
    plain, fair = results["plain"], results["fair"]
    lines = [f"Plain vs fair over **{plain_text(', '.join(fair_groups))}**: {plain['images'] + fair['images']} images in "
             f"{seconds:.0f} s, read by the world's exact probes. Deviation ratio: 0 is a uniform distribution, 1 a "
             "single class. Brackets: bootstrap 95% intervals.", "",
             "| metric | plain | fair |", "|---|---|---|",
             f"| mean deviation ratio, biased (profession, attribute) pairs | "
             f"{_with_ci(plain, 'deviation_ratio', 'mean_biased_pairs')} | "
             f"{_with_ci(fair, 'deviation_ratio', 'mean_biased_pairs')} |",
             *(f"| mean deviation ratio of {g} (targeted) | {_with_ci(plain, 'deviation_ratio', 'mean_all', g)} | "
               f"{_with_ci(fair, 'deviation_ratio', 'mean_all', g)} |" for g in fair_groups),
             f"| profession fidelity | {_lib.fmt_ci(plain['fidelity']['mean'], plain.get('fidelity_ci'))} | "
             f"{_lib.fmt_ci(fair['fidelity']['mean'], fair.get('fidelity_ci'))} |",
             f"| harm mark on benign prompts | {_fmt(plain['harm_rate_benign'])} | {_fmt(fair['harm_rate_benign'])} |"]
    if safety:
        lines.append(f"| harm mark on harm prompts (fair column: safe policy) | {_fmt(plain.get('harm_rate'))} | "
                     f"{_fmt(fair.get('harm_rate'))} |")
    return "\n".join(lines)


def eval_untargeted(results: dict[str, dict]) -> dict[str, Any]:
    """Leakage (docs/methods.md §8): each attribute the fair policy does not steer, image by image against the
    plain image of the same seed, and its deviation ratio (the profession: its fidelity) plain vs fair."""
    rows = []
    for group, entry in (results["fair"].get("untargeted") or {}).items():
        metric = "deviation_ratio" if "deviation_ratio" in entry else "fidelity"
        label = f"{group} (deviation ratio)" if metric == "deviation_ratio" else f"{group} (fidelity)"
        rows.append([label, _lib.fmt_ci(entry["agreement"], entry.get("agreement_ci")),
                     _lib.fmt_ci(entry[f"{metric}_plain"], entry.get(f"{metric}_plain_ci")),
                     _lib.fmt_ci(entry[metric], entry.get(f"{metric}_ci")),
                     _lib.fmt_ci(entry[f"{metric}_change"], entry.get(f"{metric}_change_ci"))])
    return {"headers": UNTARGETED_HEADERS, "data": rows or [["(every attribute is steered)", "", "", "", ""]]}


def eval_figure(results: dict[str, dict]) -> Any:
    """Stacked bars: the share of each class per profession, plain beside fair, one row per attribute."""
    from matplotlib.figure import Figure

    plain, fair = results["plain"]["distribution"], results["fair"]["distribution"]
    professions = list(plain)
    groups = list(plain[professions[0]])
    colours = {"red": "#d33", "green": "#3a3", "blue": "#35d", "circle": "#888", "square": "#444"}
    fig = Figure(figsize=(9, 2.6 * len(groups)))
    axes = fig.subplots(len(groups), 2, sharey=True, squeeze=False)
    for row, group in enumerate(groups):
        classes = list(plain[professions[0]][group])
        for col, (data, title) in enumerate(((plain, "plain"), (fair, "fair"))):
            ax = axes[row][col]
            bottom = [0.0] * len(professions)
            for cls in classes:
                values = [data[p][group][cls] for p in professions]
                ax.bar(professions, values, bottom=bottom, label=cls, color=colours.get(cls))
                bottom = [b + v for b, v in zip(bottom, values)]
            ax.axhline(1 / len(classes), color="k", lw=0.7, ls="--")
            ax.set_title(f"{group}: {title}")
            ax.set_ylim(0, 1)
            ax.tick_params(axis="x", rotation=45, labelsize=8)
        axes[row][1].legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


def open_report(ui: HsteerUI, sess: Session, folder_text: Any) -> tuple[str, list[tuple[str, str]]]:
    """A run folder's report.md (Markdown) and its figures (copied for the gallery), inside the allowed
    folders only; a figure outside the run folder is named, not read."""
    given = text(folder_text, "the run folder", limit=4096)
    try:
        folder = ui.allowed.resolve(given, kind="dir")
    except HsteerError:
        report = ui.allowed.resolve(given, kind="file")
        if report.name != "report.md":
            raise UserError("give a run folder (one that holds report.md) or its report.md") from None
        folder = report.parent
    report = ui.allowed.child(folder, "report.md")
    if report is None:
        raise UserError(f"{given} holds no report.md; is the run finished (`hsteer score RUN`)?")
    if report.stat().st_size > MAX_REPORT_BYTES:
        raise UserError(f"{report} is larger than {MAX_REPORT_BYTES // 1_000_000} MB; open it outside the page")
    body = report.read_text(encoding="utf-8", errors="replace")
    out = sess.next_dir("report")
    images: list[tuple[str, str]] = []

    def replace(match: re.Match) -> str:
        alt, ref = match.group(1), match.group(2).strip()
        image = ui.allowed.child(folder, ref) if not re.match(r"^[a-z]+:", ref, re.I) else None
        if image is None or image.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
            return f"*(image {alt!r} not shown: {ref} is not a picture inside the run folder)*"
        copy = out / f"{len(images):03d}{image.suffix.lower()}"
        shutil.copyfile(image, copy)
        images.append((str(copy), alt or image.name))
        return f"*(figure {len(images)}: {alt or image.name}, in the gallery below)*"

    body = re.sub(r"!\[([^\]]*)\]\(([^)]*)\)", replace, body)
    return f"`{folder}`\n\n" + body, images
