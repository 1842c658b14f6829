"""The I2P benchmark (docs/methods.md §5): its CSV, and inappropriateness rates per category."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hsteer.checks import check_float, check_input_file, check_optional_count, check_seed
from hsteer.errors import HsteerError, as_field

CATEGORIES = ("hate", "harassment", "violence", "self-harm", "sexual", "shocking", "illegal activity")


@dataclass(frozen=True)
class I2PPrompt:
    prompt: str
    categories: tuple[str, ...]
    hard: bool
    seed: int
    guidance: float | None
    row: int  # position in the file (0-based, header excluded)


def _bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "1.0")


def read_i2p(path: str | Path, *, categories: Sequence[str] | None = None, hard_only: bool = False,
             limit: int | None = None) -> list[I2PPrompt]:
    """Read the I2P CSV. Categories are comma-separated in one field; sd_seed seeds the prompt's images.

    `categories`: keep prompts in any of these; `hard_only`: keep the `hard` ones; `limit`: the first N kept.
    """
    path = Path(path)
    as_field("limit", check_optional_count, limit)
    if not path.exists():
        raise HsteerError(f"I2P prompts file {path} not found (download i2p_benchmark.csv from the "
                          "AIML-TUDA/i2p dataset and pass its path)")
    check_input_file(path, "I2P prompts file")
    try:
        return _read_rows(path, categories, hard_only, limit)
    except UnicodeDecodeError as exc:
        raise HsteerError(f"I2P prompts file {path} is not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise HsteerError(f"I2P prompts file {path} is not a readable CSV ({exc})") from None


def _read_rows(path: Path, categories: Sequence[str] | None, hard_only: bool, limit: int | None) -> list[I2PPrompt]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = {f.strip() for f in reader.fieldnames or []}
        missing = {"prompt", "categories", "sd_seed"} - fields
        if missing:
            raise HsteerError(f"{path} is not an I2P CSV: missing column(s) {sorted(missing)}")
        wanted = {c.strip().lower() for c in categories} if categories else None
        out: list[I2PPrompt] = []
        for n, raw in enumerate(reader):
            row = {(k or "").strip(): (v or "") for k, v in raw.items()}
            prompt = row["prompt"].strip()
            if not prompt:
                continue
            cats = tuple(c.strip().lower() for c in row["categories"].split(",") if c.strip())
            column = "sd_seed"
            try:
                seed = check_seed("sd_seed", int(float(row["sd_seed"])), span=2**20)
                column = "sd_guidance_scale"
                guidance = row.get("sd_guidance_scale", "").strip()
                scale = check_float("sd_guidance_scale", guidance, maximum=1e4) if guidance else None
            except (ValueError, OverflowError, HsteerError) as exc:
                raise HsteerError(f"{path}: row {n + 2} has a bad {column} ({exc})") from None
            item = I2PPrompt(prompt, cats, _bool(row.get("hard", "0")), seed, scale, n)
            if wanted is not None and not wanted.intersection(cats):
                continue
            if hard_only and not item.hard:
                continue
            out.append(item)
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise HsteerError(f"no prompts selected from {path}")
    return out


def inappropriate_rates(flags: Sequence[bool], categories: Sequence[Sequence[str]]) -> dict:
    """Overall and per-category share of flagged images (an image counts in every category of its prompt)."""
    if len(flags) != len(categories):
        raise ValueError("one category list per image")
    per: dict[str, list[bool]] = {}
    for flag, cats in zip(flags, categories):
        for c in cats:
            per.setdefault(c, []).append(bool(flag))
    ordered = [c for c in CATEGORIES if c in per] + sorted(c for c in per if c not in CATEGORIES)
    return {"overall": sum(map(bool, flags)) / len(flags) if flags else float("nan"), "n": len(flags),
            "per_category": {c: {"rate": sum(per[c]) / len(per[c]), "n": len(per[c])} for c in ordered}}


def combine_flags(*detectors: Mapping[str, Sequence[bool]] | Sequence[bool]) -> list[bool]:
    """OR of several detectors' per-image flags."""
    lists = [list(d) for d in detectors]
    if not lists:
        raise ValueError("no detector")
    if len({len(x) for x in lists}) != 1:
        raise ValueError("detectors disagree on the number of images")
    return [any(col) for col in zip(*lists)]
