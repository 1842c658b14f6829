"""Helpers of the hostile-input suite (tests/test_hostile*.py): the CLI in-process, banks of any shape."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from click.testing import CliRunner
from safetensors.torch import save_file

HSPACE = (64, 4, 4)  # the bundled world model's h-space at its native 32 px


def cli(*args, cwd: Path | None = None):
    """`hsteer ARGS` in-process; returns click's Result (exit_code, stdout, stderr, output)."""
    from hsteer.cli.main import main

    runner = CliRunner()
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=True)
    finally:
        os.chdir(old)


def error_lines(result) -> list[str]:
    """The `Error: ...` lines of stderr (a progress bar may precede one on its terminal line)."""
    text = result.stderr.replace("\r", "\n")
    return ["Error: " + part.split("\n", 1)[0] for part in text.split("Error: ")[1:]]


def assert_handled(result, *fragments: str) -> str:
    """Exit status 2, exactly one `Error: ...` line holding every fragment, no traceback."""
    from hsteer.cli.common import EXIT_ERROR

    detail = f"exit {result.exit_code}\n{result.output}\n{result.exc_info!r}"
    assert result.exit_code == EXIT_ERROR, detail
    assert isinstance(result.exception, SystemExit), detail
    assert "Traceback" not in result.output, detail
    lines = error_lines(result)
    assert len(lines) == 1, detail
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def make_bank(path: Path, names=("square", "circle"), group="shape", fingerprint=None, value=0.01) -> Path:
    from hsteer import ConceptBank
    from hsteer.steering.bank import Concept

    concepts = [Concept(n, group, "codsma", {"c": torch.full(HSPACE, value * (k + 1))},
                        {"unet_fingerprint": fingerprint} if fingerprint else {}) for k, n in enumerate(names)]
    ConceptBank(HSPACE, fingerprint, concepts).save(path)
    return path


def raw_bank(path: Path, header, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """A safetensors file with an arbitrary 'hsteer' header (any JSON) and tensors, for damaged-bank cases."""
    tensors = tensors if tensors is not None else {"square/c": torch.zeros(HSPACE)}
    text = header if isinstance(header, str) else json.dumps(header)
    save_file(tensors, str(path), metadata={"hsteer": text})
    return path


def good_header(**changes):
    header = {"format": 1, "hsteer_version": "x", "hspace_shape": list(HSPACE), "unet_fingerprint": None,
              "concepts": {"square": {"group": "shape", "objective": "codsma", "tensors": ["c"], "meta": {}}}}
    header.update(changes)
    return header


def random_detector(size: int, step: int = 4, steps: int = 20, **kw):
    """A learned harm detector over `size` features with fixed random weights (seed 0): what it flags does not
    matter to the tests that take it, only that it is stored, read and run like a fitted one."""
    from hsteer.steering.detectors import LinearDetector

    g = torch.Generator().manual_seed(0)
    return LinearDetector(torch.randn(size, generator=g), torch.zeros(1), torch.zeros(size), torch.ones(size),
                          step=step, steps=steps, **kw)


def safety_bank(folder: Path, meta: dict | None = None):
    """A bank (in memory; its shape group also saved as `folder/plain.safetensors`) of the world model's shape
    group {circle, square} and a 'safety' concept `anti_harm` with `meta`."""
    from hsteer import ConceptBank
    from hsteer.steering.bank import Concept

    make_bank(folder / "plain.safetensors", names=("circle", "square"))
    bank = ConceptBank.load(folder / "plain.safetensors")
    bank.add(Concept("anti_harm", "safety", "codsma", {"c": torch.full(HSPACE, 0.02)}, meta or {}))
    return bank
