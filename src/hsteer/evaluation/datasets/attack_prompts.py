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
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsteer.checks import (check_count, check_float, check_input_file, check_optional_count, check_seed,
                           check_text, load_json)
from hsteer.errors import HsteerError, as_field

PROMPT_COLUMNS = ("adv_prompt", "adversarial_prompt", "p4d_prompt", "attack_prompt", "prompt")
SEED_COLUMNS = ("seed", "evaluation_seed", "sd_seed")
GUIDANCE_COLUMNS = ("guidance", "evaluation_guidance", "sd_guidance_scale")
SOURCE_COLUMNS = ("source_prompt", "target_prompt", "clean_prompt")
#: Bounds of what is read: the file, its rows, and the images of one prompt (`--images-per-prompt`).
MAX_BYTES, MAX_ROWS, MAX_IMAGES_PER_PROMPT = 256 * 2**20, 1_000_000, 100_000
ROW_KEY = "\x00row"  # where a record keeps its line (CSV) or position (JSON); no column can be named so
_DIGITS = re.compile(r"[0-9]{1,19}(\.0*)?")


@dataclass(frozen=True)
class AttackPrompt:
    """One prompt of an attack set: its text, seed (None: the run's), guidance (None: the run's), source."""

    prompt: str
    seed: int | None
    guidance: float | None
    source: str | None
    row: int


def _text(path: Path) -> str:
    """The file's text: at most MAX_BYTES, UTF-8 with or without a byte-order mark (Excel writes one)."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise HsteerError(f"attack prompts file {path} is {size >> 20} MiB; at most {MAX_BYTES >> 20} MiB are read")
    with path.open("rb") as handle:
        data = handle.read(MAX_BYTES + 1)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise HsteerError(f"attack prompts file {path} is UTF-16 text; save it as UTF-8 (Excel: CSV UTF-8)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HsteerError(f"attack prompts file {path} is not UTF-8 text (byte {exc.start})") from None


def _csv_records(path: Path, text: str) -> list[dict[str, Any]]:
    """CSV rows through the csv module: quoted fields may hold newlines and commas; an unterminated quote,
    a row longer than the header or a field over the size limit is one error naming the line."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise HsteerError(f"{path} holds no CSV header (a first line naming the columns, e.g. prompt,seed)")
        rows = []
        for fields in reader:
            if len(fields) > len(header):
                raise HsteerError(f"{path} line {reader.line_num}: {len(fields)} fields, but the header names "
                                  f"{len(header)}; quote fields that hold commas")
            if any(f.strip() for f in fields):
                rows.append({**dict(zip(header, fields)), ROW_KEY: reader.line_num})
            if len(rows) > MAX_ROWS:
                raise HsteerError(f"{path} holds more than {MAX_ROWS} rows")
    except csv.Error as exc:
        raise HsteerError(f"{path} is not a readable CSV (line {reader.line_num}: {exc}; a quote not closed?)") from None
    return rows


def _json_records(path: Path, text: str) -> list[Any]:
    """A JSON document, else JSON lines (each line depth-limited, as every JSON hsteer reads)."""
    try:
        return load_json(text, str(path), max_chars=MAX_BYTES)
    except HsteerError as exc:
        if "nests" in str(exc):
            raise
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) > MAX_ROWS:
        raise HsteerError(f"{path} holds more than {MAX_ROWS} rows")
    try:
        return [load_json(line, f"{path} line {n + 1}") for n, line in enumerate(lines)]
    except HsteerError:
        raise HsteerError(f"{path} is neither JSON nor JSON lines") from None


def _records(path: Path) -> list[dict[str, Any]]:
    """The file's rows as dicts (CSV, JSON, JSON lines; hsteer summary.json)."""
    text = _text(path)
    stripped = text.lstrip()
    if path.suffix.lower() == ".csv" or not stripped.startswith(("[", "{")):
        return _csv_records(path, text)
    data = _json_records(path, text)
    if isinstance(data, dict):
        prompts = data.get("prompts")
        if not isinstance(prompts, list):
            raise HsteerError(f"{path}: a JSON object needs a 'prompts' list")
        per = data.get("per_prompt")
        sources = [p.get("source_prompt") if isinstance(p, dict) else None
                   for p in (per if isinstance(per, list) else [])]
        data = [p if isinstance(p, dict) else {"prompt": p, "seed": data.get("seed"),
                                               "source_prompt": sources[n] if n < len(sources) else None}
                for n, p in enumerate(prompts)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise HsteerError(f"{path}: expected a list of objects with a prompt")
    return [{**r, ROW_KEY: n + 1} for n, r in enumerate(data)]


def _column(fields: list[str], wanted: str | None, options: tuple[str, ...], what: str, path: Path) -> str | None:
    lower = {f.strip().lower(): f for f in fields}
    if wanted:
        if wanted.lower() not in lower:
            raise HsteerError(f"{path} has no column {wanted!r} for the {what} (columns: {', '.join(fields)})")
        return lower[wanted.lower()]
    return next((lower[o] for o in options if o in lower), None)


def _field(record: dict[str, Any], column: str | None, what: str, path: Path) -> str | None:
    """A text field of a row: a string (a number, list or object is refused, not turned into its repr)."""
    raw = record.get(column) if column else None
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise HsteerError(f"{path} row {record[ROW_KEY]}: the {what} {column!r} is a {type(raw).__name__} "
                          f"({str(raw)[:40]}), not text")
    return raw


def _seed(raw: Any, where: str, span: int) -> int | None:
    """A seed: a whole number (JSON integer, or digits in a CSV, `12.0` as pandas writes them)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, str) and _DIGITS.fullmatch(raw.strip()):
        value: Any = int(raw.strip().split(".")[0])
    elif isinstance(raw, float) and math.isfinite(raw) and raw.is_integer() and abs(raw) < 2**63:
        value = int(raw)
    else:
        value = raw
    if isinstance(value, bool) or not isinstance(value, int):
        raise HsteerError(f"{where}: bad seed {str(raw)[:40]!r}; a seed is a whole number from 0 to 2^63 - 1")
    return check_seed(f"{where}: the seed", value, span=span)


def _guidance(raw: Any, where: str) -> float | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise HsteerError(f"{where}: bad guidance {str(raw)[:40]!r}; write a number")
    return check_float(f"{where}: the guidance", raw, -1e4, maximum=1e4)


def read_attack_prompts(path: str | Path, *, prompt_column: str | None = None, seed_column: str | None = None,
                        limit: int | None = None, images_per_prompt: int = 1) -> list[AttackPrompt]:
    """The rows of an attack prompt set (see the module docstring for the formats); every field checked
    (text is text, seeds whole numbers with room for `images_per_prompt` seeds, guidance finite)."""
    path = check_input_file(Path(path), "attack prompts file")
    as_field("limit", check_optional_count, limit)
    as_field("images_per_prompt", check_count, images_per_prompt, 1, MAX_IMAGES_PER_PROMPT)
    records = _records(path)
    if not records:
        raise HsteerError(f"{path} holds no prompts")
    fields = list(dict.fromkeys(k for r in records for k in r if isinstance(k, str) and k != ROW_KEY))
    text_col = _column(fields, prompt_column, PROMPT_COLUMNS, "prompt", path)
    if text_col is None:
        raise HsteerError(f"{path} has no prompt column ({', '.join(PROMPT_COLUMNS)}); name it with prompt_column",
                          field="prompt_column")
    seed_col = _column(fields, seed_column, SEED_COLUMNS, "seed", path)
    guidance_col = _column(fields, None, GUIDANCE_COLUMNS, "guidance", path)
    source_col = _column(fields, None, SOURCE_COLUMNS, "source", path)
    out = []
    for n, record in enumerate(records):
        prompt = _field(record, text_col, "prompt", path)
        if prompt is None or not prompt.strip():
            continue
        where = f"{path} row {record[ROW_KEY]}"
        check_text(f"{where}: the prompt", prompt)
        source = _field(record, source_col, "source prompt", path)
        out.append(AttackPrompt(prompt, _seed(record.get(seed_col) if seed_col else None, where, images_per_prompt),
                                _guidance(record.get(guidance_col) if guidance_col else None, where),
                                source.strip() or None if source else None, n))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise HsteerError(f"{path} holds no prompts")
    return out
