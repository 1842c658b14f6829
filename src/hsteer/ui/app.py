"""`hsteer ui`: a Gradio page to generate plain and responsible images side by side, learn concepts,
inspect banks and evaluate.

    from hsteer.ui.app import launch
    launch()                      # the bundled world model on the CPU, http://127.0.0.1:7860

Tabs: Generate (plain vs steered images of the same seeds, captioned with the concepts applied,
downloadable with `manifest.jsonl`), Learn (a concept into the session's bank, with a live loss curve
and a cancel button), Bank (upload or choose a bank; its concepts and training settings), Evaluate (the
world evaluation on the bundled model; the report of a finished run folder for real models).

The page is built in three parts: `views` lays out each tab, the `handlers_*` modules do what its
buttons ask, and `wiring` connects the two. Each browser session has its own bank, files and training
run (`gr.State`, `session.Session`); jobs run concurrently on pipelines that share the model's weights
(`session.PipelinePool`). Files typed into the page are read only under the folders allowed on the
command line (`paths.AllowedDirs`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402

import hsteer.ui.views as views  # noqa: E402
import hsteer.ui.wiring as wiring  # noqa: E402
from hsteer.ui.server import HsteerUI  # noqa: E402
from hsteer.ui.session import Session  # noqa: E402

CSS = """
.hsteer-status p { margin: 0.2em 0; }
#plain-gallery .grid-wrap, #steered-gallery .grid-wrap { height: auto !important; max-height: none !important; }
#plain-gallery .caption-label, #steered-gallery .caption-label {
    white-space: normal !important; overflow: visible !important; text-overflow: clip !important; max-width: 94%;
}
"""


def build_app(model: Any = None, banks: Sequence[str | os.PathLike] = (), allowed_dirs: Sequence[str | os.PathLike] = (),
              device: str = "cpu", dtype: str = "float32", concurrency: int = 4, hub: bool = True) -> gr.Blocks:
    """The page, over `model` (None: the bundled world model; a hub id, a folder or a loaded pipeline).

    `banks`: bank files a session may load (the first is every new session's starting bank).
    `allowed_dirs`: the only folders under which paths typed into the page are read.
    `hub`: whether the page may load banks by Hub repo id (into, or offline from, the Hub cache).
    """
    ui = HsteerUI(model, banks, allowed_dirs, device=device, dtype=dtype, hub=hub)
    with gr.Blocks(title="hsteer", analytics_enabled=False, delete_cache=(3600, 24 * 3600), fill_width=True) as app:
        state = gr.State(None, delete_callback=lambda s: s.close() if isinstance(s, Session) else None)
        gr.Markdown(f"## hsteer: plain and responsible images side by side\n"
                    f"Model: **{ui.model_label}** ({ui.resolution} px, {device}). Concepts are constant tensors "
                    "added to the U-Net's mid-block output (h-space); each browser session has its own bank.")
        # the components of all four tabs first, then the events (in this order: the page's API and its
        # dependency list stay as they were; the bank views that several events update span every tab)
        gen, learn = views.generate_tab(ui), views.learn_tab(ui)
        bank, ev = views.bank_tab(ui), views.evaluate_tab(ui)
        bank_views: dict[str, Any] = dict(
            bank_summary=bank.bank_summary, bank_table=bank.bank_table, bank_json=bank.bank_json,
            bank_file=bank.bank_file, learn_bank_file=learn.learn_bank_file, remove_choice=bank.remove_choice,
            fair_groups=gen.fair_groups, eval_groups=ev.eval_groups, sliders=gen.sliders,
            slider_note=gen.slider_note)
        bank_outputs = [bank.bank_summary, bank.bank_table, bank.bank_json, bank.bank_file, learn.learn_bank_file,
                        bank.remove_choice, gen.fair_groups, ev.eval_groups, *gen.sliders, gen.slider_note]
        wiring.wire_load(app, ui, state, gen.policy, bank_views, bank_outputs)
        wiring.wire_generate(ui, state, gen, concurrency)
        wiring.wire_learn(ui, state, learn, bank_views, bank_outputs, concurrency)
        wiring.wire_bank(ui, state, bank, bank_views, bank_outputs)
        wiring.wire_evaluate(ui, state, ev, concurrency)

    app.queue(default_concurrency_limit=concurrency, max_size=64)
    app.hsteer = ui  # for tests and embedding
    return app


def _theme() -> Any:
    """Gradio's default look with the system's fonts: the page loads nothing from the internet."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def launch(model: Any = None, bank: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
           host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           allowed_dirs: Sequence[str | os.PathLike] = (), device: str = "cpu", dtype: str = "float32",
           threads: int | None = None, concurrency: int = 4, prevent_thread_lock: bool = False,
           quiet: bool = False, max_file_size: str = "256mb", hub: bool = True) -> gr.Blocks:
    """Build the page and serve it (on 127.0.0.1, without a share link, unless told otherwise).

    Unless `quiet`, prints one line with the page's address. With `prevent_thread_lock`, returns at
    once with the server running (`app.close()` stops it); otherwise serves until Ctrl-C.
    """
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    banks = [bank] if isinstance(bank, (str, os.PathLike)) else list(bank or ())
    app = build_app(model, banks=banks, allowed_dirs=allowed_dirs, device=device, dtype=dtype,
                    concurrency=concurrency, hub=hub)
    # Gradio's own start-up lines are not printed: they advise a public share link
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True,
               show_error=False, max_file_size=max_file_size, theme=_theme(), css=CSS,
               footer_links=["gradio", "settings"], inbrowser=False)
    if not quiet:
        public = f"; public link: {app.share_url}" if app.share_url else ""
        print(f"hsteer ui: {app.local_url}{public} (Ctrl-C stops it)", flush=True)
    if not prevent_thread_lock:
        app.block_thread()
    return app
