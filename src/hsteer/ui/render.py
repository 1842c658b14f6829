"""How the page writes things: captions, step windows, bank tables, enlarged views and download archives.

Pure functions of library objects; the handlers call them and the tests read what they write.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hsteer.ui._lib as _lib
from hsteer.ui._lib import ConceptBank
from hsteer.ui.forms import counts_iterations

VIEW_PX = 192  # small images are shown enlarged (nearest neighbour) so that their pixels can be seen

BANK_HEADERS = ["concept", "group", "objective", "tensors", "neutral", "target / negative", "prompt pairs",
                "step window", "iterations", "lr", "batch", "steps", "mode", "seed"]


#: The characters Markdown would read as markup in a message (CommonMark escapes any ASCII punctuation).
_MARKUP = re.compile(r"([\\`*_\[\]<>|~#$])")


def plain(text: object) -> str:
    """`text` as it reads, inside a Markdown component: names like `only_a` and rules like "'_', '-'" keep
    their underscores and brackets; line breaks stay line breaks."""
    return _MARKUP.sub(r"\\\1", str(text)).replace("\n", "  \n")


def error_line(message: object) -> str:
    """Every error as the page's status lines write it: one label, the message as plain text."""
    return f"**Error:** {plain(message)}"


def slug(value: str) -> str:
    """A file-name-safe piece of `value` (for archive and bank names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-")[:60] or "x"


def bank_label(spec: str) -> str:
    """A command-line bank's name in the page: a file's name, or the Hub repo id as given."""
    return spec if _lib.parse_hub_spec(spec) is not None and not Path(spec).exists() else Path(spec).name


def concepts_caption(concepts: Sequence[dict[str, Any]]) -> str:
    """'circle + red' (scale 1 is not written), 'circle ×-1.5', or 'plain'; manifest.jsonl has the exact values."""
    if not concepts:
        return "plain"
    return " + ".join(c["name"] if float(c["scale"]) == 1.0 else f"{c['name']} ×{float(c['scale']):g}"
                      for c in concepts)


def span(window: Sequence[float]) -> str:
    """A step window as the page writes it everywhere: '40%–100%'."""
    return f"{window[0]:.0%}–{window[1]:.0%}"


def learned_windows(concept_names: Sequence[str], bank: ConceptBank) -> str:
    """'green, red: steps 0%–45%; circle: steps 40%–100%' for the concepts that have a window."""
    by_window: dict[tuple[float, float], list[str]] = {}
    for name in dict.fromkeys(concept_names):
        if name in bank and bank[name].window not in (None, (0.0, 1.0)):
            by_window.setdefault(bank[name].window, []).append(name)
    return "; ".join(f"{', '.join(n)}: steps {span(w)}" for w, n in by_window.items())


def view_copy(src: Path, dst: Path) -> Path:
    """A copy of an image enlarged (nearest neighbour) for display when it is small."""
    from PIL import Image

    with Image.open(src) as img:
        if max(img.size) < VIEW_PX:
            factor = max(1, VIEW_PX // max(img.size))
            img = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
        img.save(dst, format="PNG")
    return dst


def zip_folder(folder: Path, out: Path) -> Path:
    """The folder's files (not the enlarged `view` copies) as one download."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path != out and "view" not in path.relative_to(folder).parts:
                zf.write(path, path.relative_to(folder).as_posix())
    return out


def training_length(info: dict[str, Any]) -> Any:
    """How long a concept was trained, in its method's own terms (iterations, or epochs over images)."""
    if counts_iterations(info["objective"]):
        return info.get("iterations", "")
    return f"{info.get('sdisc_epochs', '?')} epochs x {info.get('sdisc_images', '?')} images"


def bank_rows(bank: ConceptBank) -> list[list[Any]]:
    """The Bank tab's table: one row per concept, `BANK_HEADERS` columns."""
    rows = []
    for concept, info in zip(bank, bank.describe()["concepts"]):
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in info["tensors"].items())
        prompt = info.get("target") or (f"not: {info['negative']}" if info.get("negative") else "")
        pairs = info.get("pairs") or []
        shown = "; ".join(f"{n} => {t}" for n, t in pairs[:3])
        if len(pairs) > 3:
            shown += f"; … ({len(pairs)} in all)"
        rows.append([info["name"], info["group"], info["objective"], shapes, info.get("neutral", ""), prompt,
                     shown, span(concept.window) if concept.window else "every step", training_length(info),
                     info.get("lr", ""), info.get("batch_size", ""), info.get("steps", ""), info.get("mode", ""),
                     info.get("seed", "")])
    return rows
