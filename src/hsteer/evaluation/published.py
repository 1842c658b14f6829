"""The published numbers a report sets a run beside, and the small formatting helpers of report tables."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

# docs/methods.md §6 (SD v1.4 unless said; lower is better except CLIP / WinoAlign). None: not published.
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
PUBLISHED_NOTE = ("Published numbers: docs/methods.md §6 (SD v1.4; FID-30k of SDisc/CoDSMa/RespoDiff for the "
                  "gender concept). Compare only like with like: same model, classifier, prompts and image count.")


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a report table: `digits` decimals for floats, `-` for None or NaN, other values as
    text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def slug(text: str) -> str:
    """A file-name-safe form of `text`: lower case, runs of other characters turned into `-` (`x` when
    nothing is left)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def published_table(metric_keys: Sequence[tuple[str, str]], ours: dict[str, Any], label: str) -> list[str]:
    """Markdown rows: this run, then every published method with at least one of the metrics."""
    head = "| method | " + " | ".join(title for _, title in metric_keys) + " |"
    lines = [head, "|" + "---|" * (len(metric_keys) + 1)]
    lines.append(f"| **this run ({label})** | " + " | ".join(fmt(ours.get(k)) for k, _ in metric_keys) + " |")
    for method, numbers in {**PUBLISHED, **PUBLISHED_SDXL}.items():
        if any(numbers.get(k) is not None for k, _ in metric_keys):
            lines.append(f"| {method} (published) | " + " | ".join(fmt(numbers.get(k), 2) for k, _ in metric_keys)
                         + " |")
    return lines


def published_section(metric_keys: Sequence[tuple[str, str]], ours: dict[str, Any], label: str) -> list[str]:
    """The table above, then the note on comparing like with like."""
    return [*published_table(metric_keys, ours, label), "", PUBLISHED_NOTE, ""]
