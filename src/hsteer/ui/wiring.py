"""The page's events: which handler each button runs, on which components, and how its errors show.

Gradio passes an event's input values by position; `endpoint` is the one place they are matched to
their names (the page's API parameter names, `forms.GENERATE_FIELDS` and the like), so handlers read
their form by name. `guard` turns every error into a message: a handled one (`HsteerError`) shows its
own text, in a toast and, through each event's `.failure` handler, in the tab's status line, where it
stays; the outputs are cleared rather than left showing a bare "Error".
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import gradio as gr

import hsteer.ui.handlers_bank as bank_handlers
import hsteer.ui.handlers_evaluate as evaluate_handlers
import hsteer.ui.handlers_generate as generate_handlers
import hsteer.ui.handlers_learn as learn_handlers
from hsteer.ui._lib import HsteerError
from hsteer.ui.forms import GENERATE_FIELDS, LEARN_FIELDS, GenerateForm
from hsteer.ui.server import HsteerUI
from hsteer.ui.session import Session

log = logging.getLogger("hsteer.ui")


def page_error(exc: BaseException, where: str) -> gr.Error:
    """The message the page shows for `exc`: its own text when it is a handled error, else its type and
    text, with the traceback in the server log."""
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, HsteerError):
        return gr.Error(str(exc))
    log.exception("unexpected error in %s", where)
    return gr.Error(f"unexpected error ({type(exc).__name__}: {exc}); the server log has the details")


def guard(fn: Callable) -> Callable:
    """Every handler: errors become a message in the page (kept on the session for the tab's status line,
    see `failure_text`); nothing kills the server."""

    def fail(args: Sequence[Any], exc: Exception) -> gr.Error:
        error = page_error(exc, fn.__name__)
        if args and isinstance(args[0], Session):
            args[0].last_error = str(error.message)
        return error

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - shown in the page, logged with its traceback
                raise fail(args, exc) from None

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise fail(args, exc) from None

    return call


def failure_text(sess: Any) -> str:
    """The status line after a failed event: the session's last error, which `guard` kept."""
    message = sess.last_error if isinstance(sess, Session) and sess.last_error else (
        "that did not work; the message is at the top right, the details in the server log")
    return f"**Error:** {message}"


def endpoint(run: Callable[[Any, dict[str, Any], Any], Any], names: Sequence[str],
             progress: bool = False) -> Callable:
    """A guarded event function over the inputs (state, *names): `run(state, values by name, progress)`.

    Its signature names every input, so the page's API has those parameter names; with `progress`, a last
    `gr.Progress` parameter that Gradio fills.
    """
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(name, kind) for name in ("state", *names)]
    if progress:
        params.append(inspect.Parameter("progress", kind, default=gr.Progress()))
    signature = inspect.Signature(params)

    def split(args: tuple, kwargs: dict) -> tuple[Any, dict[str, Any], Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        return values.pop("state"), values, values.pop("progress", None)

    if inspect.isgeneratorfunction(run):
        def event(*args, **kwargs):
            yield from run(*split(args, kwargs))
    else:
        def event(*args, **kwargs):
            return run(*split(args, kwargs))

    event.__signature__ = signature
    event.__name__ = event.__qualname__ = run.__name__
    return guard(event)


def on_failure(event: Any, state: gr.State, cleared: Mapping[Any, Any], status: Any) -> None:
    """After `event` fails: its error in `status` (where it stays), and `cleared` outputs reset."""

    def show(sess):
        return {status: failure_text(sess), **cleared}

    event.failure(show, inputs=state, outputs=[status, *cleared], api_name=False, queue=False)


def wire_load(app: gr.Blocks, ui: HsteerUI, state: gr.State, policy: gr.Radio, views: dict[str, Any],
              bank_outputs: list[Any]) -> None:
    """A page load: the session (new or kept), its bank's views and the policy that suits the bank."""

    @guard
    def on_load(sess):
        sess = ui.session(sess)
        start = generate_handlers.default_policy(sess.snapshot())
        return {state: sess, policy: start, **bank_handlers.bank_views(sess, views)}

    app.load(on_load, inputs=state, outputs=[state, policy, *bank_outputs], api_name=False)


def generate_inputs(gen: SimpleNamespace) -> dict[str, Any]:
    """The Generate tab's input components by form field (`GENERATE_FIELDS`)."""
    fields = {"prompt": gen.prompt, "seed": gen.seed, "num_images": gen.num_images, "guidance": gen.guidance,
              "steps": gen.steps, "policy": gen.policy, "fair_groups": gen.fair_groups, "strength": gen.strength,
              "step_window": gen.window_mode, "window_start": gen.window_start, "window_end": gen.window_end,
              **{f"scale_{n + 1}": slider for n, slider in enumerate(gen.sliders)},
              "respect_prompt": gen.respect_prompt}
    return {name: fields[name] for name in GENERATE_FIELDS}


def wire_generate(ui: HsteerUI, state: gr.State, gen: SimpleNamespace, concurrency: int) -> None:
    """Generate (the button, or Enter in the prompt): plain and steered images of the same seeds."""

    def generate(sess, values, progress):
        sess = ui.session(sess)
        return (sess, *generate_handlers.generate(ui, sess, GenerateForm.read(values), progress))

    on_generate = endpoint(generate, GENERATE_FIELDS, progress=True)
    inputs = [state, *generate_inputs(gen).values()]
    outputs = [state, gen.plain_gallery, gen.steered_gallery, gen.gen_file, gen.gen_status]
    cleared = {gen.plain_gallery: [], gen.steered_gallery: [], gen.gen_file: None}
    for trigger, api_name in ((gen.generate_btn.click, "generate"), (gen.prompt.submit, False)):
        event = trigger(on_generate, inputs=inputs, outputs=outputs, api_name=api_name, concurrency_id="generate",
                        concurrency_limit=concurrency)
        on_failure(event, state, cleared, gen.gen_status)


def learn_inputs(learn: SimpleNamespace) -> dict[str, Any]:
    """The Learn tab's input components by form field (`LEARN_FIELDS`)."""
    fields = {"name": learn.c_name, "group": learn.c_group, "neutral": learn.c_neutral, "target": learn.c_target,
              "negative": learn.c_negative, "objective": learn.c_objective, "iterations": learn.c_iterations,
              "lr": learn.c_lr, "batch_size": learn.c_batch, "denoising_steps": learn.c_steps,
              "target_guidance": learn.c_tg, "training_seed": learn.c_seed, "sdisc_images": learn.c_sd_images,
              "sdisc_epochs": learn.c_sd_epochs, "pairs": learn.c_pairs, "window": learn.c_window,
              "stored_scale": learn.c_stored, "lr_sam": learn.c_lr_sam, "lam": learn.c_lam}
    return {name: fields[name] for name in LEARN_FIELDS}


def wire_learn(ui: HsteerUI, state: gr.State, learn: SimpleNamespace, views: dict[str, Any],
               bank_outputs: list[Any], concurrency: int) -> None:
    """Learn: the world's presets, training into the session's bank, and cancelling it."""
    fields = learn_inputs(learn)
    if ui.is_world:
        preset_outputs = [fields[name] for name in learn_handlers.PRESET_FIELDS]

        def on_preset(choice):
            values = learn_handlers.preset_values(choice, int(ui.defaults["steps"]))
            return list(values) if values is not None else [gr.skip()] * len(preset_outputs)

        learn.preset.change(on_preset, inputs=learn.preset, outputs=preset_outputs, api_name=False, queue=False)

    out = {"state": state, "status": learn.learn_status, "plot": learn.loss_plot}

    def learn_concept(sess, values, progress):
        yield from learn_handlers.learn(ui, ui.session(sess), values, progress, out, views)

    event = learn.learn_btn.click(endpoint(learn_concept, LEARN_FIELDS, progress=True),
                                  inputs=[state, *fields.values()],
                                  outputs=[state, learn.learn_status, learn.loss_plot, *bank_outputs],
                                  api_name="learn", concurrency_id="learn", concurrency_limit=max(1, concurrency // 2))
    on_failure(event, state, {}, learn.learn_status)
    learn.cancel_btn.click(guard(learn_handlers.cancel), inputs=state, outputs=learn.learn_status, api_name="cancel",
                           concurrency_limit=None, concurrency_id="cancel")


def wire_bank(ui: HsteerUI, state: gr.State, bank: SimpleNamespace, views: dict[str, Any],
              bank_outputs: list[Any]) -> None:
    """The Bank tab's buttons: each replaces or edits the session's bank, or says why it did not."""
    sources = {"load_bank_hub": (bank.hub_load.click, [bank.hub_box]),
               "upload_bank": (bank.upload.upload, [bank.upload]),
               "choose_bank": (bank.cli_load.click, [bank.cli_choice]),
               "load_bank_path": (bank.path_load.click, [bank.path_box]),
               "remove_concept": (bank.remove_btn.click, [bank.remove_choice]), "new_bank": (bank.new_btn.click, [])}
    for api_name, (action, names) in bank_handlers.BANK_ACTIONS.items():
        trigger, inputs = sources[api_name]

        def run(sess, values, progress, action=action):
            sess = ui.session(sess)
            try:
                status = action(ui, sess, **values)
            except HsteerError as exc:  # the bank stays as it was; the reason is shown in the page
                gr.Warning(str(exc))
                return {state: sess, bank.bank_status: f"**Error:** {exc}"}
            return {state: sess, bank.bank_status: status, **bank_handlers.bank_views(sess, views)}

        run.__name__ = api_name
        trigger(endpoint(run, names), inputs=[state, *inputs], outputs=[state, bank.bank_status, *bank_outputs],
                api_name=api_name)


def wire_evaluate(ui: HsteerUI, state: gr.State, ev: SimpleNamespace, concurrency: int) -> None:
    """The Evaluate tab: the world evaluation (bundled model only) and a run folder's report."""
    if ui.is_world:
        @guard
        def on_evaluate(sess, groups, professions, images_per_prompt, steps, with_safety, progress=gr.Progress()):
            sess = ui.session(sess)
            results, seconds, safety, groups = evaluate_handlers.evaluate(
                ui, sess, groups, professions, images_per_prompt, steps, with_safety, progress)
            attrs = list(next(iter(results["plain"]["distribution"].values())))
            return (sess, evaluate_handlers.eval_summary(results, seconds, safety, groups),
                    evaluate_handlers.eval_table(results, attrs), evaluate_handlers.eval_untargeted(results),
                    evaluate_handlers.eval_figure(results))

        event = ev.eval_btn.click(on_evaluate, inputs=[state, ev.eval_groups, ev.eval_professions, ev.eval_images,
                                                       ev.eval_steps, ev.eval_safety],
                                  outputs=[state, ev.eval_summary_md, ev.eval_df, ev.eval_leak, ev.eval_plot],
                                  api_name="evaluate", concurrency_id="evaluate",
                                  concurrency_limit=max(1, concurrency // 2))
        on_failure(event, state, {}, ev.eval_summary_md)

    @guard
    def on_open_report(sess, found_folder, run_folder):
        sess = ui.session(sess)
        body, images = evaluate_handlers.open_report(ui, sess, (run_folder or "").strip() or found_folder or "")
        return sess, body, images

    event = ev.report_open.click(on_open_report, inputs=[state, ev.report_choice, ev.report_path],
                                 outputs=[state, ev.report_md, ev.report_gallery], api_name="open_report")
    on_failure(event, state, {ev.report_gallery: []}, ev.report_md)
    ev.report_refresh.click(lambda: gr.update(choices=ui.report_folders()), outputs=ev.report_choice,
                            api_name=False)
