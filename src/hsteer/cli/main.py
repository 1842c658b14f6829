"""The `hsteer` command line: a thin layer over the Python API, one module per command group."""

from __future__ import annotations

import click

from hsteer.cli.apps import compare, demo, world
from hsteer.cli.bank import bank
from hsteer.cli.eval import eval_group, q16_group, score
from hsteer.cli.generate import generate
from hsteer.cli.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="hsteer")
def main() -> None:
    """hsteer: fair and safe text-to-image generation by steering the h-space of diffusers U-Nets."""


for command in (train, generate, bank, demo, compare, world, eval_group, score, q16_group):
    main.add_command(command)


if __name__ == "__main__":
    main()
