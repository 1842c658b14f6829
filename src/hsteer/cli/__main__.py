"""`python -m hsteer.cli`: the same command line as `hsteer` (kept for scripts written before the cli package)."""

from hsteer.cli.main import main

if __name__ == "__main__":
    main(prog_name="hsteer")
