"""The Bank tab's handlers, and the views of a session's bank that every tab shows.

Each action replaces or edits the session's bank and returns a status line; a refused one leaves the
bank as it was. `bank_views` brings every component that shows the bank up to date: the table, the
download, the groups to be fair over and the concept sliders.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

import hsteer.ui._lib as _lib
from hsteer.ui._lib import ConceptBank
from hsteer.ui.forms import MAX_SLIDERS, SAFETY_GROUP, UserError, text
from hsteer.ui.render import BANK_HEADERS, bank_label, bank_rows, plain, slug
from hsteer.ui.server import HsteerUI
from hsteer.ui.session import Session, copy_bank


def bank_views(sess: Session, views: dict[str, Any]) -> dict[Any, Any]:
    """Every component that shows the session's bank (`views`, by name), brought up to date."""
    bank = sess.snapshot()
    groups = sorted(bank.groups())
    fair_default = [g for g in groups if g != SAFETY_GROUP]
    path = None
    if len(bank):
        path = sess.dir / f"{slug(Path(sess.bank_label).stem or 'bank')}.safetensors"
        bank.save(path)
        summary = (f"**{plain(sess.bank_label)}**: {len(bank)} concept(s), groups "
                   + ", ".join(f"`{g}` ({plain(', '.join(bank.groups()[g]))})" for g in groups)
                   + f"; h-space {tuple(bank.hspace_shape or ())}, U-Net `{bank.unet_fingerprint}`")
    else:
        summary = f"**{plain(sess.bank_label)}**: no concepts yet. Learn one in the *Learn* tab, or load a bank above."
    out: dict[Any, Any] = {
        views["bank_summary"]: summary,
        views["bank_table"]: {"headers": BANK_HEADERS, "data": bank_rows(bank) or [[""] * len(BANK_HEADERS)]},
        views["bank_json"]: bank.describe(),
        views["bank_file"]: str(path) if path else None,
        views["learn_bank_file"]: str(path) if path else None,
        views["remove_choice"]: gr.update(choices=bank.names, value=None),
        views["fair_groups"]: gr.update(choices=groups, value=fair_default),
        views["eval_groups"]: gr.update(choices=groups, value=fair_default),
    }
    out.update(_slider_views(sess, bank, views))
    return out


def _slider_views(sess: Session, bank: ConceptBank, views: dict[str, Any]) -> dict[Any, Any]:
    """One concept slider per concept (the first `MAX_SLIDERS`), each named after its concept."""
    names = bank.names[:MAX_SLIDERS]
    sess.slider_names = names
    out: dict[Any, Any] = {}
    for n, slider in enumerate(views["sliders"]):
        if n < len(names):
            concept = bank[names[n]]
            out[slider] = gr.update(visible=True, value=0.0, label=f"{concept.name} ({concept.group})")
        else:
            out[slider] = gr.update(visible=False, value=0.0, label=f"concept {n + 1}")
    more = len(bank) - len(names)
    out[views["slider_note"]] = ("Load or learn concepts to get one slider each." if not names else
                                 "Scale of each concept added to every image (0: off; negative: away from it)."
                                 + (f" The first {MAX_SLIDERS} concepts have sliders; {more} more are not shown."
                                    if more > 0 else ""))
    return out


def hub_note() -> str:
    """Where a bank typed as a Hub repo id comes from on this server."""
    from huggingface_hub import constants

    return ("offline (HF_HUB_OFFLINE=1): read from this machine's Hub cache" if constants.HF_HUB_OFFLINE
            else "downloaded into this machine's Hub cache")


def load_bank_hub(ui: HsteerUI, sess: Session, repo_id: Any) -> str:
    """A bank by Hub repo id (`user/repo[:FILE][@REVISION]`): never a path on this server, whatever is typed."""
    if not ui.hub:
        raise UserError("this server loads no banks from the Hub (started with --no-hub)")
    spec = text(repo_id, "the Hub repo id", limit=400)
    source = _lib.parse_hub_spec(spec)
    if source is None:
        raise UserError(f"{spec!r} is not a Hub repo id: write user/repo, user/repo:FILE or user/repo@REVISION "
                        "(files on this server: upload them, or load them by path from an allowed folder)")
    return ui.load_bank_file(sess, _lib.hub_bank_file(source), spec)


def upload_bank(ui: HsteerUI, sess: Session, bank_file: str | os.PathLike | None) -> str:
    """A bank file uploaded from the browser. Its messages name the file the user chose, never the
    server's copy of it."""
    if not bank_file:
        return "No file."
    copy = Path(str(bank_file))
    try:
        return ui.load_bank_file(sess, copy, copy.name)
    except _lib.HsteerError as exc:
        message = str(exc)
        for where in dict.fromkeys((str(copy.resolve()), str(copy), str(copy.parent.resolve()), str(copy.parent))):
            message = message.replace(where, copy.name if where.endswith(copy.name) else "the upload")
        raise UserError(message) from None


def choose_bank(ui: HsteerUI, sess: Session, bank: Any) -> str:
    """One of the banks given on the command line."""
    if bank not in ui.cli_banks:
        raise UserError("choose one of the banks given on the command line")
    sess.set_bank(copy_bank(ui.cli_banks[bank]), bank_label(bank))
    return f"Loaded **{plain(bank_label(bank))}** from the command line's banks."


def load_bank_path(ui: HsteerUI, sess: Session, path: Any) -> str:
    """A bank file by its path on the server, inside the allowed folders only."""
    real = ui.allowed.resolve(text(path, "the bank path", limit=4096), kind="file")
    return ui.load_bank_file(sess, real, real.name)


def remove_concept(ui: HsteerUI, sess: Session, concept: Any) -> str:
    """The session's bank without one concept."""
    if not concept:
        raise UserError("choose a concept to remove")
    bank = sess.snapshot()
    bank.remove(concept)
    sess.set_bank(bank, sess.bank_label)
    return f"Removed {plain(concept)}."


def new_bank(ui: HsteerUI, sess: Session) -> str:
    """A new, empty bank for the session."""
    sess.set_bank(ConceptBank(), "new bank")
    return "Started a new, empty bank."


#: The Bank tab's actions: API name -> (action, the names of its inputs after the session).
BANK_ACTIONS: dict[str, tuple[Callable[..., str], tuple[str, ...]]] = {
    "load_bank_hub": (load_bank_hub, ("repo_id",)), "upload_bank": (upload_bank, ("bank_file",)),
    "choose_bank": (choose_bank, ("bank",)), "load_bank_path": (load_bank_path, ("path",)),
    "remove_concept": (remove_concept, ("concept",)), "new_bank": (new_bank, ()),
}
