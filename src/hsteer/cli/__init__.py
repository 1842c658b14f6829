"""The command line (the top layer): `hsteer.cli.main` is the `hsteer` entry point."""

from hsteer.cli.main import main

__all__ = ["main"]
