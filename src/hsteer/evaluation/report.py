"""report.md for an evaluation folder: tables beside the published numbers, distribution plots, image grids."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# METHODS.md section 6 (SD v1.4 unless said; lower is better except CLIP / WinoAlign). None: not published.
PUBLISHED: dict[str, dict[str, float | None]] = {
    "SD": {"gender": 0.68, "race": 0.56, "i2p": 0.27, "fid": 14.09, "clip": 31.33, "winoalign": 27.51},
    "SDisc": {"gender": 0.17, "race": 0.23, "i2p": 0.27, "fid": 23.59, "clip": 29.94, "winoalign": None},
    "FDF": {"gender": 0.40, "race": 0.32, "i2p": None, "fid": 15.22, "clip": 30.63, "winoalign": None},
    "SLD": {"gender": None, "race": None, "i2p": 0.20, "fid": 18.76, "clip": 29.75, "winoalign": None},
    "ESD": {"gender": None, "race": None, "i2p": 0.32, "fid": 13.68, "clip": 30.43, "winoalign": None},
    "CoDSMa": {"gender": 0.07, "race": 0.10, "i2p": None, "fid": 17.30, "clip": 29.96, "winoalign": None},
    "RespoDiff": {"gender": 0.14, "race": 0.16, "i2p": 0.16, "fid": 14.91, "clip": 30.67, "winoalign": 27.30},
}
PUBLISHED_SDXL = {"SDXL": {"gender": 0.72, "race": 0.57, "i2p": 0.34},
                  "SDXL + RespoDiff": {"gender": 0.26, "race": 0.23, "i2p": 0.17}}
PUBLISHED_NOTE = ("Published numbers: METHODS.md section 6 (SD v1.4; FID-30k of SDisc/CoDSMa/RespoDiff for the "
                  "gender concept). Compare only like with like: same model, classifier, prompts and image count.")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _grid(run_dir: Path, files: Sequence[str], out: Path, columns: int = 8, tile: int = 128) -> None:
    from PIL import Image

    images = []
    for f in files:
        with Image.open(run_dir / "images" / f) as img:
            images.append(img.convert("RGB").resize((tile, tile)))
    if not images:
        return
    rows = -(-len(images) // columns)
    cols = min(columns, len(images))
    grid = Image.new("RGB", (cols * tile, rows * tile), "white")
    for n, img in enumerate(images):
        grid.paste(img, ((n % columns) * tile, (n // columns) * tile))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)


def _published_table(metric_keys: Sequence[tuple[str, str]], ours: dict[str, Any], label: str) -> list[str]:
    head = "| method | " + " | ".join(title for _, title in metric_keys) + " |"
    lines = [head, "|" + "---|" * (len(metric_keys) + 1)]
    lines.append(f"| **this run ({label})** | " + " | ".join(_fmt(ours.get(k)) for k, _ in metric_keys) + " |")
    for method, numbers in {**PUBLISHED, **PUBLISHED_SDXL}.items():
        if any(numbers.get(k) is not None for k, _ in metric_keys):
            lines.append(f"| {method} (published) | " + " | ".join(_fmt(numbers.get(k), 2) for k, _ in metric_keys)
                         + " |")
    return lines


def distribution_plot(summary: dict, group: str, out: Path) -> None:
    """Stacked horizontal bars: one per profession, the share of each class of `group`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = summary["per_profession"]
    professions = list(per)
    classes = list(summary["attributes"][group])
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(professions) + 1.2))
    left = [0.0] * len(professions)
    for cls in classes:
        shares = [per[p][group]["distribution"][cls] for p in professions]
        ax.barh(professions, shares, left=left, label=cls)
        left = [a + b for a, b in zip(left, shares)]
    ax.axvline(1 / len(classes), color="black", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel(f"share of images ({group})")
    ax.set_title(f"{group}: mean deviation ratio {summary['mean_deviation_ratio'][group]:.3f}")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def write_report(run_dir: str | Path, summary: dict[str, Any], per_image: Sequence[dict],
                 grid_images: int = 16) -> Path:
    run_dir = Path(run_dir)
    task = summary["task"]
    lines = [f"# hsteer evaluation: {task}", "",
             f"- model: `{summary.get('model') or 'bundled world model'}`",
             f"- policy: `{summary['policy']}`", f"- images: {summary['images']}", ""]
    if task == "winobias":
        groups = list(summary["attributes"])
        ours = dict(summary["mean_deviation_ratio"])
        ours["winoalign"] = summary.get("winoalign")
        keys = [(g, f"{g} DevRat") for g in groups] + [("winoalign", "WinoAlign")]
        lines += ["## Deviation ratio (mean over professions) and WinoAlign", "",
                  *_published_table(keys, ours, summary["policy"]), "", PUBLISHED_NOTE, "",
                  f"Classifier: `{summary['classifier']}`; attributes: "
                  + "; ".join(f"{g} = {', '.join(repr(t) for t in ts)}" for g, ts in summary["attributes"].items()),
                  "", "## Per profession", ""]
        head = "| profession | " + " | ".join(f"{g} DevRat | {g} distribution" for g in groups)
        if "winoalign_per_profession" in summary:
            head += " | WinoAlign"
        lines += [head + " |", "|" + "---|" * (1 + 2 * len(groups) + ("winoalign_per_profession" in summary))]
        for prof, entry in summary["per_profession"].items():
            cells = []
            for g in groups:
                dist = ", ".join(f"{c} {v:.2f}" for c, v in entry[g]["distribution"].items())
                cells += [_fmt(entry[g]["deviation_ratio"]), dist]
            if "winoalign_per_profession" in summary:
                cells.append(_fmt(summary["winoalign_per_profession"][prof], 2))
            lines.append(f"| {prof} | " + " | ".join(cells) + " |")
        lines += ["", "## Distributions", ""]
        for g in groups:
            out = run_dir / "plots" / f"distribution-{_slug(g)}.png"
            distribution_plot(summary, g, out)
            lines.append(f"![{g}](plots/{out.name})")
        lines += ["", "## Images (first of each profession)", ""]
        by_prof: dict[str, list[str]] = {}
        for item in per_image:
            by_prof.setdefault(item["profession"], []).append(item["file"])
        for prof, files in by_prof.items():
            out = run_dir / "grids" / f"{_slug(prof)}.png"
            _grid(run_dir, files[:grid_images], out)
            lines.append(f"### {prof}\n\n![{prof}](grids/{out.name})\n")
    elif task == "i2p":
        rates = summary["inappropriate"]
        lines += ["## Inappropriate probability (Q16 OR NudeNet)", "",
                  *_published_table([("i2p", "I2P inappropriate")], {"i2p": rates["overall"]}, summary["policy"]),
                  "", PUBLISHED_NOTE, "", f"Detectors: {', '.join(summary['detectors'])}"
                  + "".join(f"; {d} alone {_fmt(summary[f'{d}_rate'])}" for d in summary["detectors"]), "",
                  "| category | inappropriate | images |", "|---|---|---|"]
        for cat, entry in rates["per_category"].items():
            lines.append(f"| {cat} | {_fmt(entry['rate'])} | {entry['n']} |")
        lines.append(f"| **all** | {_fmt(rates['overall'])} | {rates['n']} |")
        lines += ["", "## Images", ""]
        by_cat: dict[str, list[str]] = {}
        for item in per_image:
            for cat in item["categories"] or ["(none)"]:
                by_cat.setdefault(cat, []).append(item["file"])
        for cat, files in by_cat.items():
            out = run_dir / "grids" / f"{_slug(cat)}.png"
            _grid(run_dir, files[:grid_images], out)
            lines.append(f"### {cat}\n\n![{cat}](grids/{out.name})\n")
    elif task == "coco":
        ours = {"clip": summary["clip_score"], "fid": summary.get("fid")}
        lines += ["## COCO", "", *_published_table([("fid", "FID-30k"), ("clip", "CLIP score")], ours,
                                                   summary["policy"]), "", PUBLISHED_NOTE, "",
                  f"CLIP model: `{summary['clip_model']}`."]
        if summary.get("fid") is None:
            lines += ["", f"FID not computed: {summary.get('fid_skipped')}"]
        out = run_dir / "grids" / "coco.png"
        _grid(run_dir, [i["file"] for i in per_image[:grid_images]], out)
        lines += ["", f"![samples](grids/{out.name})"]
    path = run_dir / "report.md"
    from hsteer.fileio import atomic_write_text

    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
