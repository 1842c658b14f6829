"""Public attack prompt sets read from local files: one row per adversarial prompt, with its seed.

The formats, as the sets are published (column names are matched case-insensitively; the first column of
each list that the file has is used; `--prompt-column` / `--seed-column` name others):

- **UnlearnDiffAtk** (OPTML-Group/Diffusion-MU-Attack, `prompts/*.csv`): I2P-derived CSVs with `prompt`,
  `evaluation_seed`, `evaluation_guidance`, `case_number`, `categories`, ...; its attack logs give the
  adversarial prompt per case, which go in a CSV of the same columns.
- **Ring-A-Bell** (chiayi-hsu/Ring-A-Bell, `data/InvPrompt/<Concept>/<Concept>_eta_<eta>_K_<K>.csv`):
  `prompt,case_number,evaluation_seed`; the prompts are the K tokens the search found.
- **P4D** (the Prompting4Debugging data): CSV with the problematic prompt and an `evaluation_seed`
  (and `evaluation_guidance`) column in the UnlearnDiffAtk layout; a column of optimised prompts is read
  first when present (`p4d_prompt`, `adv_prompt`), else `prompt`.
- **MMA-Diffusion** (the NSFW adversarial prompt benchmark): rows with `adv_prompt` (read first), and the
  target or clean prompt (`target_prompt`, `clean_prompt`, kept as the source); it has no seed column, so
  every row takes the run's `--seed`.
- **hsteer** (`hsteer attack`'s `DIR/prompts.csv`: `prompt,seed,source_prompt`, or its `summary.json`,
  whose `prompts` and `seed` are read): what an attack found, fed back in.

CSV, JSON (a list of objects with these keys, or an object with a `prompts` list of texts or objects) and
JSON lines are read. A row's image i gets seed `seed + i`. Only the P4D and MMA-Diffusion column names come
from their papers' descriptions rather than from a file checked here, hence the column options.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsteer.checks import check_float, check_input_file, check_optional_count, check_seed
from hsteer.errors import HsteerError

PROMPT_COLUMNS = ("adv_prompt", "adversarial_prompt", "p4d_prompt", "attack_prompt", "prompt")
SEED_COLUMNS = ("seed", "evaluation_seed", "sd_seed")
GUIDANCE_COLUMNS = ("guidance", "evaluation_guidance", "sd_guidance_scale")
SOURCE_COLUMNS = ("source_prompt", "target_prompt", "clean_prompt")


@dataclass(frozen=True)
class AttackPrompt:
    """One prompt of an attack set: its text, seed (None: the run's), guidance (None: the run's), source."""

    prompt: str
    seed: int | None
    guidance: float | None
    source: str | None
    row: int


def _records(path: Path) -> list[dict[str, Any]]:
    """The file's rows as dicts (CSV, JSON, JSON lines; hsteer summary.json)."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if path.suffix.lower() == ".csv" or not stripped.startswith(("[", "{")):
        try:
            return [dict(r) for r in csv.DictReader(text.splitlines())]
        except csv.Error as exc:
            raise HsteerError(f"{path} is not a readable CSV ({exc})") from None
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            raise HsteerError(f"{path} is neither JSON nor JSON lines") from None
    if isinstance(data, dict):
        prompts = data.get("prompts")
        if not isinstance(prompts, list):
            raise HsteerError(f"{path}: a JSON object needs a 'prompts' list")
        sources = [p.get("source_prompt") for p in data.get("per_prompt", [])]
        data = [p if isinstance(p, dict) else {"prompt": p, "seed": data.get("seed"),
                                               "source_prompt": sources[n] if n < len(sources) else None}
                for n, p in enumerate(prompts)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise HsteerError(f"{path}: expected a list of objects with a prompt")
    return data


def _column(fields: list[str], wanted: str | None, options: tuple[str, ...], what: str, path: Path) -> str | None:
    lower = {f.strip().lower(): f for f in fields}
    if wanted:
        if wanted.lower() not in lower:
            raise HsteerError(f"{path} has no column {wanted!r} for the {what} (columns: {', '.join(fields)})")
        return lower[wanted.lower()]
    return next((lower[o] for o in options if o in lower), None)


def _value(raw: Any, label: str, kind) -> Any:
    if raw is None or str(raw).strip() == "":
        return None
    try:
        return kind(label, raw)
    except (TypeError, ValueError):
        raise HsteerError(f"bad {label} {raw!r}") from None


def _seed(label: str, raw: Any) -> int:
    return check_seed(label, int(float(raw)), span=2**20)


def _guidance(label: str, raw: Any) -> float:
    return check_float(label, float(raw), maximum=1e4)


def read_attack_prompts(path: str | Path, *, prompt_column: str | None = None, seed_column: str | None = None,
                        limit: int | None = None) -> list[AttackPrompt]:
    """The rows of an attack prompt set (see the module docstring for the formats)."""
    path = check_input_file(Path(path), "attack prompts file")
    check_optional_count("--limit", limit)
    try:
        records = _records(path)
    except UnicodeDecodeError as exc:
        raise HsteerError(f"attack prompts file {path} is not UTF-8 text (byte {exc.start})") from None
    fields = list(dict.fromkeys(k for r in records for k in r if isinstance(k, str)))
    text_col = _column(fields, prompt_column, PROMPT_COLUMNS, "prompt", path)
    if text_col is None:
        raise HsteerError(f"{path} has no prompt column ({', '.join(PROMPT_COLUMNS)}); name it with --prompt-column")
    seed_col = _column(fields, seed_column, SEED_COLUMNS, "seed", path)
    guidance_col = _column(fields, None, GUIDANCE_COLUMNS, "guidance", path)
    source_col = _column(fields, None, SOURCE_COLUMNS, "source", path)
    out = []
    for n, record in enumerate(records):
        prompt = str(record.get(text_col) or "").strip()
        if not prompt:
            continue
        source = str(record.get(source_col) or "").strip() if source_col else ""
        out.append(AttackPrompt(prompt, _value(record.get(seed_col) if seed_col else None, "seed", _seed),
                                _value(record.get(guidance_col) if guidance_col else None, "guidance", _guidance),
                                source or None, n))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise HsteerError(f"{path} holds no prompts")
    return out
