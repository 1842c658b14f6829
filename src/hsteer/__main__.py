"""`python -m hsteer ...` (and `accelerate launch -m hsteer ...`)."""

from hsteer.cli import main

if __name__ == "__main__":
    main()
