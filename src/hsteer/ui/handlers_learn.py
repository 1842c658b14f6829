"""The Learn tab's handlers: train a concept in the background, stream its loss curve, cancel it.

Training runs in a thread of its own on a pipeline borrowed from the pool; the handler reads its events
from a queue and streams them to the page, so the page stays live and a cancel takes effect at the next
U-Net call. The world presets fill the form with `hsteer demo`'s recipes (apps.recipes).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import hsteer.ui._lib as _lib
from hsteer.ui._lib import HsteerError
from hsteer.ui.forms import UserError, counts_iterations, pairs_text, train_config, window_text
from hsteer.ui.handlers_bank import bank_views
from hsteer.ui.render import error_line, plain
from hsteer.ui.server import HsteerUI
from hsteer.ui.session import Cancelled, Session

log = logging.getLogger("hsteer.ui")

#: Learn-tab presets on the bundled model: label -> concept; each fills the tab with `hsteer demo`'s recipe
#: (conditioned prompt pairs and a step window, docs/methods.md §9).
WORLD_PRESETS: dict[str, str] = {f"{name} ({group})": name for name, group, *_ in _lib.WORLD_CONCEPTS}
PRESET_ITERATIONS = 150  # the demo's
#: The Learn form's fields a preset fills, in this order (`preset_values`).
PRESET_FIELDS = ("name", "group", "neutral", "target", "negative", "pairs", "window", "objective", "lr",
                 "iterations", "batch_size", "denoising_steps", "target_guidance", "stored_scale", "lr_sam", "lam")


def family_of_ui(ui: HsteerUI) -> str:
    """The family of the page's model (its presets follow that family's recipe)."""
    return _lib.family_of(ui.pool.base)


def preset_values(choice: str, denoising_steps: int, family: str = "unet") -> tuple[Any, ...] | None:
    """The `PRESET_FIELDS` values of a world preset (the page's own step count, the recipe of the model's
    `family`: `hsteer.apps.recipes.family_recipe`); None for no preset."""
    if choice not in WORLD_PRESETS:
        return None
    c = _lib.world_train_config(WORLD_PRESETS[choice], PRESET_ITERATIONS, family=family)
    return (c.concept, c.group, c.neutral, c.target or "", c.negative or "", pairs_text(c.pairs),
            window_text(c.window), c.objective, c.lr, c.iterations, c.batch_size, denoising_steps,
            c.target_guidance, c.stored_scale, getattr(c, "lr_sam", _lib.RespoDiffConfig.lr_sam),
            getattr(c, "lam", _lib.RespoDiffConfig.lam))


def training_events(ui: HsteerUI, sess: Session, config: Any) -> Iterator[tuple[str, Any]]:
    """Train `config` in a thread; yields ("row", (iteration, losses)), ("tick", None) while waiting, and
    last one of ("done", result), ("cancelled", iterations done) or ("error", message)."""
    events: queue.Queue = queue.Queue()
    with sess.lock:
        if sess.training:
            raise UserError("a training run is already going on in this session; wait for it or cancel it")
        sess.training = True
        sess.cancel.clear()
    thread = threading.Thread(target=_train, args=(ui, sess, config, events), name=f"hsteer-train-{sess.id}",
                              daemon=True)
    thread.start()
    try:
        while True:
            try:
                kind, payload = events.get(timeout=0.2)
            except queue.Empty:
                yield "tick", None
                continue
            yield kind, payload
            if kind in ("done", "cancelled", "error"):
                return
    finally:
        if thread.is_alive():  # the page went away or the job was stopped: stop the run too
            sess.cancel.set()


def _train(ui: HsteerUI, sess: Session, config: Any, events: queue.Queue) -> None:
    """The training thread: every outcome, even a crash, ends as one last event on `events`."""
    cancel = sess.cancel
    last = {"iteration": -1}

    def callback(iteration: int, row: dict[str, float]) -> None:
        last["iteration"] = iteration
        events.put(("row", (iteration, dict(row))))
        if cancel.is_set():
            raise Cancelled()

    def stop_hook(module, args):  # also stops SDisc, and the warm-up before the first iteration
        if cancel.is_set():
            raise Cancelled()

    try:
        with ui.pool.acquire() as pipe:
            handle = _lib.denoiser_of(pipe).register_forward_pre_hook(stop_hook)
            try:
                result = _lib.train_concept(pipe, config, progress=False, callback=callback)
            finally:
                handle.remove()
        events.put(("done", result))
    except Cancelled:
        events.put(("cancelled", last["iteration"] + 1))
    except HsteerError as exc:
        events.put(("error", str(exc)))
    except Exception as exc:  # noqa: BLE001 - reported in the page, logged here
        log.exception("training failed")
        events.put(("error", f"unexpected error ({type(exc).__name__}: {exc}); the server log has details"))
    finally:
        sess.training = False


def loss_frame(rows: list[dict[str, float]]) -> Any:
    """The loss history in long form (one row per iteration and loss term) for the LinePlot."""
    import pandas as pd

    records = [{"iteration": int(r["iteration"]) + 1, "loss": float(v), "series": k}
               for r in rows for k, v in r.items() if k.startswith("loss") and isinstance(v, (int, float))]
    if not records:  # None, not an empty frame: a LinePlot first drawn from an empty frame shows no lines later
        return None
    return pd.DataFrame.from_records(records, columns=["iteration", "loss", "series"])


def learn(ui: HsteerUI, sess: Session, values: Mapping[str, Any], out: Mapping[str, Any],
          views: dict[str, Any]) -> Iterator[dict[Any, Any]]:
    """The Learn button: validates the form, trains, and streams the status (iteration, loss and the
    seconds since the start, about once a second), the loss curve and, once learned, the bank's views.
    `out` names the components written: state, status and plot."""
    config = train_config(values)
    if len(sess.bank):
        sess.bank.check_compatible(ui.pool.base.unet)  # fail before training, not after
    total = config.iterations if counts_iterations(config.objective) else None
    label = plain(f"{config.group}/{config.concept} ({config.objective})")
    status, plot = out["status"], out["plot"]
    yield {out["state"]: sess, status: f"Starting {label}…", plot: loss_frame([])}
    rows: list[dict[str, float]] = []
    last_yield, began = 0.0, time.perf_counter()
    for kind, payload in training_events(ui, sess, config):
        now = time.perf_counter()
        if kind == "row":
            rows.append(payload[1])
            if now - last_yield < 0.5 and not (total and payload[0] + 1 == total):
                continue
        elif kind == "tick" and now - last_yield < 1.0:
            continue
        if kind in ("row", "tick"):
            last_yield = now
            yield {status: _progress_line(label, rows, total, now - began), plot: loss_frame(rows)}
        elif kind == "done":
            sess.add_concept(payload.concept)
            final = payload.losses[-1]["loss"] if payload.losses else float("nan")
            message = (f"Learned **{label}** in {now - began:.1f} s (final loss {final:.4g}); it is in this "
                       f"session's bank ({len(sess.bank)} concept(s)).")
            yield {out["state"]: sess, status: message, plot: loss_frame(payload.losses or rows),
                   **bank_views(sess, views)}
        elif kind == "cancelled":
            done = f" after {payload} iteration(s)" if total else ""
            yield {status: f"Cancelled {label}{done}; the bank is unchanged.", plot: loss_frame(rows)}
        elif kind == "error":
            yield {status: error_line(payload), plot: loss_frame(rows)}


def _progress_line(label: str, rows: list[dict[str, float]], total: int | None, seconds: float) -> str:
    """'Learning shape/circle (codsma): iteration 12/150, loss 0.0123; 9 s' (SDisc: its images first)."""
    if not rows:
        what = "generating its target images" if total is None else "warming up"
        return f"Learning {label}: {what}; {seconds:.0f} s"
    counter = f"{len(rows)}/{total}" if total else f"{len(rows)}"
    return f"Learning {label}: iteration {counter}, loss {rows[-1]['loss']:.4g}; {seconds:.0f} s"


def cancel(sess: Session | None) -> str:
    """The Cancel button: ask this session's training run to stop at its next step."""
    if isinstance(sess, Session) and sess.training:
        sess.cancel.set()
        return "Cancelling… (stops at the next step)"
    return "No training run is going on in this session."
