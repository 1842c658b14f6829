"""The `hsteer` command line: a thin layer over the Python API, one module per command group."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator

import click

from hsteer.cli.apps import compare, demo, world
from hsteer.cli.attack import attack
from hsteer.cli.bank import bank
from hsteer.cli.common import EXIT_ERROR
from hsteer.cli.eval import eval_group, q16_group, score
from hsteer.cli.generate import generate
from hsteer.cli.guard import guard
from hsteer.cli.settle import settle
from hsteer.cli.sites import sites
from hsteer.cli.train import train
from hsteer.cli.ui import ui
from hsteer.errors import TerminatedError


def _terminate(signum, frame) -> None:
    raise TerminatedError("terminated (SIGTERM)")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises TerminatedError where the process is, so a run stops as after Ctrl-C: temporary
    files are removed, locks released, and one line says what to rerun (exit 143). The previous
    handler comes back afterwards (the CLI also runs in-process, in tests and notebooks)."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class OneLineGroup(click.Group):
    """Usage errors as one line too: `Error: <what> (see 'hsteer CMD -h')`, exit status EXIT_ERROR;
    SIGTERM as one line too (see `sigterm_as_interrupt`)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        with sigterm_as_interrupt():
            self._main_one_line(args, prog_name, complete_var, **extra)

    def _main_one_line(self, args, prog_name, complete_var, **extra) -> None:
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
            click.echo(f"Error: {' '.join(exc.format_message().split())}{where}", err=True)
            sys.exit(EXIT_ERROR)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__context__, TerminatedError):  # outside a command's one_line_errors
                click.echo("terminated (SIGTERM)", err=True)
                sys.exit(TerminatedError.exit_code)
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except TerminatedError:
            click.echo("terminated (SIGTERM)", err=True)
            sys.exit(TerminatedError.exit_code)
        sys.exit(0)


@click.group(cls=OneLineGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="hsteer")
def main() -> None:
    """hsteer: fair and safe text-to-image generation by steering diffusers models:
    the U-Net's h-space, a transformer block or the text representation.

    \b
    Exit status: 0 on success; 2 on any handled error (bad input, a missing or broken file, a failed
    check, a full or read-only disk), printed as one line `Error: ...` on stderr; 130 after Ctrl-C;
    143 after SIGTERM (also one line).
    """


def summary(help_text: str | None) -> str:
    """A command's one-line summary for its group's list: the first sentence of its help, whole (click
    would cut it at about 45 characters with '...')."""
    paragraph = " ".join((help_text or "").strip().split("\n\n")[0].replace("\b", " ").split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[:end + 1]


def full_summaries(group: click.Group) -> None:
    """Give every command under `group` (sub-groups too) its whole first sentence as its short help."""
    for command in group.commands.values():
        if not command.short_help:
            command.short_help = summary(command.help)
        if isinstance(command, click.Group):
            full_summaries(command)


for command in (train, generate, guard, bank, demo, compare, world, eval_group, score, q16_group, ui, attack, sites,
                settle):
    main.add_command(command)
full_summaries(main)


if __name__ == "__main__":
    main()
