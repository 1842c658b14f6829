"""The page's events: which handler each button runs, on which components, and how its errors show.

Gradio passes an event's input values by position; `endpoint` is the one place they are matched to
their names (the page's API parameter names, `forms.GENERATE_FIELDS` and the like), so handlers read
their form by name. Every action first replaces its tab's status line (`action`: an old message never
outlives the next click), then runs. `guard` turns every error into a message: a handled one
(`HsteerError`) reads as its own text, which API clients get as the error and the page shows, as plain
text, in the tab's status line (`on_failure`), with no pop-up; only the status line and the outputs that
failure resets show progress, so a failed event never leaves an error badge on another control.
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
from hsteer.ui.render import error_line
from hsteer.ui.server import HsteerUI
from hsteer.ui.session import Session

log = logging.getLogger("hsteer.ui")

#: The status line after a failure that no handler saw (Gradio refused an input before the handler ran).
UNSEEN_FAILURE = "the page could not read one of the values; check the form and try again"


def page_error(exc: BaseException, where: str) -> gr.Error:
    """The error `exc` becomes: its own text when it is a handled error, else its type and text, with the
    traceback in the server log. Not shown as a pop-up: the tab's status line shows it."""
    if isinstance(exc, gr.Error):
        message = exc.message
    elif isinstance(exc, HsteerError):
        message = str(exc)
    else:
        log.exception("unexpected error in %s", where)
        message = f"unexpected error ({type(exc).__name__}: {exc}); the server log has the details"
    return gr.Error(message, visible=False, print_exception=False)


def guard(fn: Callable) -> Callable:
    """Every handler: errors become a message (kept on the session, under the handler's name, for the
    tab's status line: `failure_text`); nothing kills the server."""

    def fail(args: Sequence[Any], exc: Exception) -> gr.Error:
        error = page_error(exc, fn.__name__)
        if args and isinstance(args[0], Session):
            args[0].errors[fn.__name__] = str(error.message)
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


def failure_text(sess: Any, where: str) -> str:
    """The status line after the event `where` failed: its message, which `guard` kept (and which is then
    forgotten, so that a later failure never shows it again), as plain text."""
    message = sess.errors.pop(where, None) if isinstance(sess, Session) else None
    return error_line(message or UNSEEN_FAILURE)


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


def on_failure(event: Any, state: gr.State, cleared: Mapping[Any, Any], status: Any, where: str) -> None:
    """After `event` (handler `where`) fails: its error in `status`, and `cleared` outputs reset. Writing
    them also clears the error badge Gradio puts on an event's progress components."""

    def show(sess):
        return {status: failure_text(sess, where), **cleared}

    event.failure(show, inputs=state, outputs=[status, *cleared], api_name=False, queue=False)


def action(trigger: Callable, status: Any, begin: str, fn: Callable, inputs: list[Any], outputs: list[Any],
           progress_on: Sequence[Any] = (), **kwargs: Any) -> Any:
    """`trigger` (e.g. a button's `.click`): at once `begin` in the tab's status line (whatever it said
    before is gone), then `fn`. Progress shows on the status line and `progress_on` only."""
    first = trigger(lambda: begin, outputs=status, queue=False, show_progress="hidden", api_name=False)
    return first.then(fn, inputs=inputs, outputs=outputs, show_progress_on=[status, *progress_on], **kwargs)


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
              "respect_prompt": gen.respect_prompt, "guard": gen.guard}
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
        event = action(trigger, gen.gen_status, "Generating…", on_generate, inputs, outputs,
                       progress_on=[gen.plain_gallery, gen.steered_gallery], api_name=api_name,
                       concurrency_id="generate", concurrency_limit=concurrency)
        on_failure(event, state, cleared, gen.gen_status, "generate")


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
            values = learn_handlers.preset_values(choice, int(ui.defaults["steps"]),
                                                  learn_handlers.family_of_ui(ui))
            return list(values) if values is not None else [gr.skip()] * len(preset_outputs)

        learn.preset.change(on_preset, inputs=learn.preset, outputs=preset_outputs, api_name=False, queue=False)

    out = {"state": state, "status": learn.learn_status, "plot": learn.loss_plot}

    def learn_concept(sess, values, progress):
        yield from learn_handlers.learn(ui, ui.session(sess), values, out, views)

    # the status line counts iterations and seconds itself: no progress overlay, the loss curve stays in view
    event = action(learn.learn_btn.click, learn.learn_status, "Starting…", endpoint(learn_concept, LEARN_FIELDS),
                   [state, *fields.values()], [state, learn.learn_status, learn.loss_plot, *bank_outputs],
                   show_progress="hidden", api_name="learn", concurrency_id="learn",
                   concurrency_limit=max(1, concurrency // 2))
    on_failure(event, state, {}, learn.learn_status, "learn_concept")
    learn.cancel_btn.click(guard(learn_handlers.cancel), inputs=state, outputs=learn.learn_status, api_name="cancel",
                           concurrency_limit=None, concurrency_id="cancel", show_progress="hidden")


def wire_bank(ui: HsteerUI, state: gr.State, bank: SimpleNamespace, views: dict[str, Any],
              bank_outputs: list[Any]) -> None:
    """The Bank tab's buttons: each replaces or edits the session's bank, or says why it did not."""
    sources = {"load_bank_hub": (bank.hub_load.click, [bank.hub_box]),
               "upload_bank": (bank.upload.upload, [bank.upload]),
               "choose_bank": (bank.cli_load.click, [bank.cli_choice]),
               "load_bank_path": (bank.path_load.click, [bank.path_box]),
               "remove_concept": (bank.remove_btn.click, [bank.remove_choice]), "new_bank": (bank.new_btn.click, [])}
    for api_name, (act, names) in bank_handlers.BANK_ACTIONS.items():
        trigger, inputs = sources[api_name]
        box = bank.upload if api_name == "upload_bank" else None

        def run(sess, values, progress, act=act, box=box):
            sess = ui.session(sess)
            try:
                status = act(ui, sess, **values)
            except HsteerError as exc:  # the bank stays as it was; the reason is shown in the page
                refused = {state: sess, bank.bank_status: error_line(str(exc))}
                return {**refused, box: None} if box is not None else refused  # a refused upload leaves the box
            return {state: sess, bank.bank_status: status, **bank_handlers.bank_views(sess, views)}

        run.__name__ = api_name
        outputs = [state, bank.bank_status, *bank_outputs, *([box] if box is not None else [])]
        event = action(trigger, bank.bank_status, "Working…", endpoint(run, names), [state, *inputs], outputs,
                       api_name=api_name)
        on_failure(event, state, {}, bank.bank_status, api_name)


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

        event = action(ev.eval_btn.click, ev.eval_summary_md, "Evaluating…", on_evaluate,
                       [state, ev.eval_groups, ev.eval_professions, ev.eval_images, ev.eval_steps, ev.eval_safety],
                       [state, ev.eval_summary_md, ev.eval_df, ev.eval_leak, ev.eval_plot], api_name="evaluate",
                       concurrency_id="evaluate", concurrency_limit=max(1, concurrency // 2))
        on_failure(event, state, {}, ev.eval_summary_md, "on_evaluate")

    @guard
    def on_open_report(sess, found_folder, run_folder):
        sess = ui.session(sess)
        body, images = evaluate_handlers.open_report(ui, sess, (run_folder or "").strip() or found_folder or "")
        return sess, body, images

    event = action(ev.report_open.click, ev.report_md, "Opening…", on_open_report,
                   [state, ev.report_choice, ev.report_path], [state, ev.report_md, ev.report_gallery],
                   progress_on=[ev.report_gallery], api_name="open_report")
    on_failure(event, state, {ev.report_gallery: []}, ev.report_md, "on_open_report")
    ev.report_refresh.click(lambda: gr.update(choices=ui.report_folders()), outputs=ev.report_choice,
                            api_name=False)
