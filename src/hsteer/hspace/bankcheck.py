"""Checks of a bank file's contents before any concept is built from them, and of concepts before a save.

A bank header must be a JSON object of the documented structure, every tensor it names must exist,
be float32 (what `ConceptBank.save` writes; fp16, integer and boolean tensors are refused) and have
the bank's h-space shape. Non-finite values are allowed in a loaded bank, so that `hsteer bank show`
can point at them, but never written (`check_finite_concepts`) nor used for steering
(`nonfinite_tensors` in generation).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from hsteer.checks import check_name
from hsteer.errors import BankError, HsteerError


def _corrupt(path: Path, what: str) -> BankError:
    return BankError(f"bank file {path} is corrupt: {what}")


def check_header(path: Path, header: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse a header or tensors that do not have the documented structure and types."""
    if not isinstance(header, dict):
        raise _corrupt(path, f"its 'hsteer' header is a {type(header).__name__}, not an object")
    shape = header.get("hspace_shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                              for n in shape) or len(shape) not in (0, 3):
        raise _corrupt(path, "'hspace_shape' is not a list of three positive integers")
    fingerprint = header.get("unet_fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise _corrupt(path, "'unet_fingerprint' is not a string")
    concepts = header.get("concepts")
    if not isinstance(concepts, dict):
        raise _corrupt(path, f"'concepts' is a {type(concepts).__name__}, not an object of name -> entry")
    for name, entry in concepts.items():
        try:
            check_name("concept", name)
        except HsteerError as exc:
            raise _corrupt(path, str(exc)) from None
        if not isinstance(entry, dict):
            raise _corrupt(path, f"the entry of concept {name!r} is not an object")
        for key in ("group", "objective"):
            if not isinstance(entry.get(key), str):
                raise _corrupt(path, f"concept {name!r} has no {key} string")
        parts = entry.get("tensors")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
            raise _corrupt(path, f"concept {name!r} lists no tensors")
        if not isinstance(entry.get("meta", {}), dict):
            raise _corrupt(path, f"the meta of concept {name!r} is not an object")
        for part in parts:
            key = f"{name}/{part}"
            if key not in tensors:
                raise _corrupt(path, f"tensor {key!r} is missing")
            if tensors[key].dtype != torch.float32:
                raise _corrupt(path, f"tensor {key!r} is {str(tensors[key].dtype).removeprefix('torch.')}, "
                                     "banks hold float32 tensors")
            if shape and list(tensors[key].shape) != shape:
                raise _corrupt(path, f"tensor {key!r} has shape {tuple(tensors[key].shape)}, the bank's h-space "
                                     f"is {tuple(shape)}")


def nonfinite_tensors(concept) -> list[str]:
    """The names of a concept's tensors that hold NaN or infinite values."""
    return [k for k, v in concept.tensors.items() if not bool(torch.isfinite(v.detach()).all())]


def check_finite_concepts(concepts: Iterable[Any], doing: str = "save") -> None:
    """Refuse to `doing` concepts with NaN or infinite values (a diverged run, a damaged checkpoint)."""
    for concept in concepts:
        bad = nonfinite_tensors(concept)
        if bad:
            raise BankError(f"concept {concept.name!r} has NaN or infinite values in {', '.join(bad)}; refusing to "
                            f"{doing} it (retrain it, e.g. with a lower learning rate, or delete its checkpoint)")


def flag_nonfinite(bank) -> dict[str, Any]:
    """`bank.describe()` with `nonfinite: [tensor, ...]` on each concept that holds NaN or infinite values."""
    info = bank.describe()
    for entry, concept in zip(info["concepts"], bank):
        bad = nonfinite_tensors(concept)
        if bad:
            entry["nonfinite"] = bad
    return info
