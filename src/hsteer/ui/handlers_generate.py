"""The Generate tab's handler: plain and steered images of the same seeds, captioned and zipped.

The page decides which policy runs here only, and only through the library's policy objects: a kind
typed into the page is looked up in the registry (`POLICIES[kind]`), the page builds the policies of
`PAGE_POLICIES` from its form, and what a policy needs (`needs_bank`) and how it reads (`describe()`) is
asked of the policy. `default_policy` is the one place that says which policy a page opens on, so the
radio's first value and every page load agree with what the handler runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hsteer.ui._lib as _lib
from hsteer.ui._lib import ConceptBank, Policy
from hsteer.ui.forms import MAX_SLIDERS, SAFETY_GROUP, GenerateForm, UserError, number
from hsteer.ui.render import concepts_caption, learned_windows, plain, slug, span, view_copy, zip_folder
from hsteer.ui.server import HsteerUI
from hsteer.ui.session import Session

Gallery = list[tuple[str, str]]
PolicyBuilder = Callable[[GenerateForm, ConceptBank, Sequence[str]], Policy]


def _plain(form: GenerateForm, bank: ConceptBank, slider_names: Sequence[str]) -> Policy:
    return _lib.PlainPolicy()


def _fair(form: GenerateForm, bank: ConceptBank, slider_names: Sequence[str]) -> Policy:
    if not form.fair_groups:
        raise UserError("choose at least one group to be fair over")
    for group in form.fair_groups:
        bank.group(group)  # unknown groups: a clear message with the bank's groups
    return _lib.FairPolicy(form.fair_groups, {g: form.strength for g in form.fair_groups})


def _safe(form: GenerateForm, bank: ConceptBank, slider_names: Sequence[str]) -> Policy:
    bank.group(SAFETY_GROUP)
    return _lib.SafePolicy(group=SAFETY_GROUP, scale=form.strength)


def _concepts(form: GenerateForm, bank: ConceptBank, slider_names: Sequence[str]) -> Policy:
    pairs = []
    for name, scale in zip(slider_names, form.scales):
        value = number(scale, f"the scale of {name}", -10.0, 10.0)
        if value != 0.0 and name in bank:
            pairs.append((name, value))
    if not pairs:
        raise UserError("every concept slider is at 0: move at least one to steer")
    return _lib.ConceptPolicy(tuple(pairs))


#: The policies the page offers, in the order of its radio, each built from the Generate form. SLD, the
#: registry's other policy, swaps the pipeline for diffusers' safe one: `hsteer eval` runs it, not the page.
PAGE_POLICIES: dict[type, PolicyBuilder] = {_lib.PlainPolicy: _plain, _lib.FairPolicy: _fair,
                                            _lib.SafePolicy: _safe, _lib.ConceptPolicy: _concepts}
POLICY_CHOICES: tuple[str, ...] = tuple(cls.kind for cls in PAGE_POLICIES)


def default_policy(bank: ConceptBank | None) -> str:
    """The policy a page opens on for `bank`: fair when it has groups besides safety, safe when it has only
    that one, plain when it is empty (so an empty bank never opens on a policy that needs concepts)."""
    groups = set(bank.groups()) if bank is not None else set()
    cls = _lib.FairPolicy if groups - {SAFETY_GROUP} else _lib.SafePolicy if groups else _lib.PlainPolicy
    return cls.kind


def policy_for(form: GenerateForm, bank: ConceptBank, slider_names: Sequence[str]) -> Policy:
    """The policy the form chose, built over the session's bank; refused, with the reason, if it cannot run."""
    cls = _lib.POLICIES.get(form.policy)
    build = PAGE_POLICIES.get(cls)
    if build is None:
        raise UserError(f"unknown policy {form.policy!r}; choose one of {', '.join(POLICY_CHOICES)}")
    if cls.needs_bank and not len(bank):
        raise UserError(f"the {cls.kind} policy needs concepts, and this session's bank is empty: learn concepts "
                        "in the Learn tab or load a bank in the Bank tab (or choose the plain policy)")
    return build(form, bank, slider_names)


def generate(ui: HsteerUI, sess: Session, form: GenerateForm,
             progress: Callable[..., Any]) -> tuple[Gallery, Gallery, str, str]:
    """The plain column, and the steered one when the policy steers: (plain, steered, zip path, status)."""
    bank = sess.snapshot()
    policy = policy_for(form, bank, sess.slider_names or bank.names[:MAX_SLIDERS])
    folder = sess.next_dir("generate")
    (folder / "view").mkdir()
    began = time.perf_counter()
    columns = {"plain": _lib.PlainPolicy(), **({"steered": policy} if policy.needs_bank else {})}
    galleries: dict[str, Gallery] = {"plain": [], "steered": []}
    used: list[str] = []
    notes: list[str] = []
    for n, (column, column_policy) in enumerate(columns.items()):
        progress(n / len(columns), desc=f"{column} images")
        galleries[column], names, gated = _draw_column(ui, form, folder, column, column_policy, bank)
        used.extend(names)
        notes.extend(gated)
    progress(1.0, desc="packing")
    archive = zip_folder(folder, folder / f"hsteer-{slug(form.prompt)}-seed{form.seed}.zip")
    status = _status(form, policy, bank, used, time.perf_counter() - began) + _gate_line(notes, form)
    return galleries["plain"], galleries["steered"], str(archive), status


def _draw_column(ui: HsteerUI, form: GenerateForm, folder: Path, column: str, policy: Policy,
                 bank: ConceptBank) -> tuple[Gallery, list[str], list[str]]:
    """One column's images under `policy` (written to `folder/column`), captioned; the concepts used, and
    the gate's reasons where it changed an image's concepts."""
    steers = policy.needs_bank
    window = form.window if steers else None
    guard = _guard(form, bank) if steers else None
    with ui.pool.acquire() as pipe:
        out = _lib.generate(pipe, form.prompt, num_images_per_prompt=form.num_images, seed=form.seed,
                            bank=bank if steers else None, policy=policy, steps=form.steps, guidance=form.guidance,
                            out_dir=folder / column, progress=False, window=window,
                            respect_prompt=form.respect_prompt, guard=guard)
    gallery: Gallery = []
    used: list[str] = []
    notes: list[str] = []
    for record in out.records:
        notes.extend(record.extra.get("gate", ()))
        view = view_copy(folder / column / record.file, folder / "view" / f"{column}-{record.file}")
        caption = concepts_caption(record.concepts)
        if window is not None and window != (0.0, 1.0):  # learned windows are named in the status instead
            caption += f"; steps {span(window)}"
        if "guard" in record.extra:
            decided = record.extra["guard"]
            caption += (f"; guard {decided['score']:.2f} at step {decided['step']}: "
                        + ("flagged, redrawn safe" if decided["flagged"] else "not flagged, plain"))
        gallery.append((str(view), f"seed {record.seed}: {caption}"))
        used.extend(c["name"] for c in record.concepts)
    return gallery, used, notes


def _guard(form: GenerateForm, bank: ConceptBank):
    """The guard the form asks for, refused with the fix when the bank has no detector for its safety group."""
    if not form.guard:
        return None
    if SAFETY_GROUP not in bank.detectors:
        raise UserError("the image-aware guard needs a harm detector in the bank: fit one with "
                          "`hsteer guard fit --bank BANK` and load that bank, or switch the guard off")
    return _lib.GuardConfig()


def _status(form: GenerateForm, policy: Policy, bank: ConceptBank, used: Sequence[str], seconds: float) -> str:
    """The line above the galleries: what was drawn, under which policy (its own description) and steps."""
    what = plain(policy.describe())
    if not policy.needs_bank:
        what += " only"
    elif form.window is None:
        learned = plain(learned_windows(used, bank))
        what += f" in each concept's learned step window ({learned})" if learned else " in every step"
    else:
        what += f" in steps {span(form.window)}"
    return (f"{form.num_images} image(s) per column of *{plain(form.prompt)}*, seeds {form.seed}–"
            f"{form.seed + form.num_images - 1}, {what}; {form.steps} steps, guidance {form.guidance:g}; "
            f"{seconds:.1f} s.")


def _gate_line(notes: Sequence[str], form: GenerateForm) -> str:
    """What the prompt-aware gate did, once per reason with its count (nothing when it changed nothing)."""
    if not form.respect_prompt:
        return " Steering ignores the prompt (respect the prompt is off)."
    counts = {note: notes.count(note) for note in dict.fromkeys(notes)}
    return "".join(f" Gate: {plain(note)} ({n} of {form.num_images} images)." for note, n in counts.items())
