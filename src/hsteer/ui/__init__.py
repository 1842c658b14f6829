"""`hsteer ui`: a Gradio web page over the library (optional extra: `pip install 'hsteer[ui]'`).

The library never imports this package; importing it does not import Gradio until the page is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr


def build_app(*args: Any, **kwargs: Any) -> gr.Blocks:
    """See `hsteer.ui.app.build_app`."""
    from hsteer.ui.app import build_app as _build

    return _build(*args, **kwargs)


def launch(*args: Any, **kwargs: Any) -> gr.Blocks:
    """See `hsteer.ui.app.launch`."""
    from hsteer.ui.app import launch as _launch

    return _launch(*args, **kwargs)


__all__ = ["build_app", "launch"]
