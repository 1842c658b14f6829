"""Merging bank files into one, under the output's lock so a concurrent writer's concept is not lost."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hsteer.checks import check_output_file
from hsteer.errors import field_errors
from hsteer.fileio import exclusive_lock
from hsteer.steering.bank import ConceptBank


def merge_bank_files(paths: Sequence[str | Path], out: str | Path, replace: bool = False) -> ConceptBank:
    """Load `paths` in order, merge them (later ones win a name clash only with `replace`) and save to `out`.

    The inputs are read and the output written while holding `out`'s lock, so a concurrent
    `hsteer train` into `out` (or into an input that is also the output) keeps its concept.
    """
    with field_errors("out"):
        out = check_output_file(out, "out")
    for path in paths:
        ConceptBank.load(path)  # a bad input fails before the lock is taken
    with exclusive_lock(out, f"bank {out}"):
        merged = ConceptBank.load(paths[0])
        for path in paths[1:]:
            merged = merged.merge(ConceptBank.load(path), replace=replace)
        merged.save(out)
    return merged
