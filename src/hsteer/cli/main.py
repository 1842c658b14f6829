"""The `hsteer` command line: a thin layer over the Python API, one module per command group."""

from __future__ import annotations

import click

import sys

from hsteer.cli.apps import compare, demo, world
from hsteer.cli.bank import bank
from hsteer.cli.common import EXIT_ERROR
from hsteer.cli.eval import eval_group, q16_group, score
from hsteer.cli.generate import generate
from hsteer.cli.train import train
from hsteer.cli.ui import ui


class OneLineGroup(click.Group):
    """Usage errors as one line too: `Error: <what> (see 'hsteer CMD -h')`, exit status EXIT_ERROR."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
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
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(0)


@click.group(cls=OneLineGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="hsteer")
def main() -> None:
    """hsteer: fair and safe text-to-image generation by steering the h-space of diffusers U-Nets.

    \b
    Exit status: 0 on success; 2 on any handled error (bad input, a missing or broken file, a failed
    check, a full or read-only disk), printed as one line `Error: ...` on stderr; 130 after Ctrl-C.
    """


for command in (train, generate, bank, demo, compare, world, eval_group, score, q16_group, ui):
    main.add_command(command)


if __name__ == "__main__":
    main()
