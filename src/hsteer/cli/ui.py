"""`hsteer ui`: the web page (optional extra `hsteer[ui]`)."""

from __future__ import annotations

import click

from hsteer.cli.common import HandledError, one_line_errors, resolve_device
from hsteer.model import quiet_libraries


@click.command()
@click.option("--model", default=None, help="Hub id or local diffusers folder. Default: the bundled world model.")
@click.option("--device", default="auto", show_default=True,
              help="torch device, e.g. cuda, cuda:1, cpu; auto: cuda, then mps, then cpu.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]),
              help="Weights' precision.")
@click.option("--bank", "banks", multiple=True,
              help="A bank the page may load: a file, a folder or a Hub repo id (repeatable); the first is every "
                   "session's starting bank.")
@click.option("--allow-dir", "allowed_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A folder whose files (banks, eval runs) may be opened by path from the page (repeatable).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", default=None, type=int, help="Port.  [default: 7860, or the next free one]")
@click.option("--share", is_flag=True, help="Also open a public Gradio share link.")
@click.option("--no-hub", is_flag=True, help="The page may not load banks by Hub repo id.")
@one_line_errors
def ui(model, device, dtype, banks, allowed_dirs, host, port, share, no_hub) -> None:
    """Open the web page: plain vs responsible images, learn concepts, inspect banks, evaluate."""
    from hsteer.checks import check_device

    device = check_device(resolve_device(device), "--device")
    try:
        from hsteer.ui.app import launch
    except ImportError as exc:
        raise HandledError(f"the web page needs the ui extra: pip install 'hsteer[ui]' ({exc})") from None
    quiet_libraries()
    launch(model=model, bank=banks, host=host, port=port, share=share, allowed_dirs=allowed_dirs, device=device,
           dtype=dtype, hub=not no_hub)
