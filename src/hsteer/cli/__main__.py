"""`python -m hsteer.cli ...`: the same as `hsteer ...`."""

from hsteer.cli.main import main

if __name__ == "__main__":
    main()
