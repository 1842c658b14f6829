"""Checks of a bank file's contents before any concept is built from them, and of concepts before a save.

A bank header must be JSON of bounded size and depth (`parse_header`) and an object of the documented
structure; every concept and group name follows the name rule, every stored step window is two finite
numbers with 0 <= start < end <= 1 (`check_concept_meta`, which `Concept` runs too), and every tensor
it names must exist, be float32 (what `ConceptBank.save` writes; fp16, integer and boolean tensors are
refused) and have the bank's h-space shape. Each message names the bank file and the concept, so a
damaged bank is never blamed on an option the user did not pass. Non-finite values are allowed in a
loaded bank, so that `hsteer bank show` can point at them, but never written (`check_finite_concepts`)
nor used for steering (`nonfinite_tensors` in generation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from hsteer.checks import check_name, check_window_covers_steps, check_window_value, load_json
from hsteer.errors import BankError, HsteerError, ShapeMismatchError, field_errors
from hsteer.steering.detectors import PREFIX as DETECTOR_PREFIX

#: The largest 'hsteer' metadata read from a bank, in characters (thousands of concepts fit).
HEADER_MAX_CHARS = 32 * 2**20


def _corrupt(path: Path, what: str) -> BankError:
    return BankError(f"bank file {path} is corrupt: {what}")


def parse_header(path: Path, text: object) -> Any:
    """The 'hsteer' metadata of a bank file as JSON, refused (naming the bank) when not JSON, too large
    or nested deeper than `checks.JSON_MAX_DEPTH` (no RecursionError on 100,000 levels of `[`)."""
    if not isinstance(text, str):
        raise _corrupt(path, "its 'hsteer' metadata is not text")
    try:
        return load_json(text, "its 'hsteer' metadata", max_chars=HEADER_MAX_CHARS)
    except HsteerError as exc:
        raise _corrupt(path, str(exc)) from None


def check_concept_meta(meta: Any, where: str) -> None:
    """A concept's meta: an object whose stored step window, if any, is a valid window and whose
    U-Net fingerprint, if any, is a string. `where` names the concept (and the bank file on load)."""
    if not isinstance(meta, dict):
        raise BankError(f"{where}: its meta is a {type(meta).__name__}, not an object")
    if "window" in meta and meta["window"] is not None:
        try:
            check_window_value(meta["window"], f"{where}: the stored step window",
                               fix="the concept is damaged: retrain it, or remove its stored window")
        except HsteerError as exc:
            raise BankError(str(exc)) from None
    fingerprint = meta.get("unet_fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise BankError(f"{where}: its stored unet_fingerprint is not a string")
    for key in ("neutral", "target", "negative", "site"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise BankError(f"{where}: its stored {key} is a {type(meta[key]).__name__}, not text")
    pairs = meta.get("pairs")
    if pairs is not None and (not isinstance(pairs, (list, tuple)) or not all(  # tuples: a config's, in memory
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs)):
        raise BankError(f"{where}: its stored pairs are not a list of [text, text] prompt pairs; the concept is "
                        "damaged: retrain it, or remove its stored pairs")


def check_shape(shape: Any, where: str, flat: bool = False) -> tuple[int, ...]:
    """A concept's (or a bank's h-space) shape: two or three positive whole numbers ([tokens, width] at a
    transformer or text site, [C, h, w] at a U-Net's mid-block), what a bank file can hold; with `flat`,
    also one number (a set of sites: their tensors flattened and concatenated)."""
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or len(dims) not in ((1, 2, 3) if flat else (2, 3)) or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 2**31 for n in dims):
        raise ShapeMismatchError(f"{where}: the shape {str(shape)[:60]} is not two or three positive whole numbers")
    return dims


def check_site_shapes(site_shapes: Any, site: Any, shape: tuple[int, ...], where: str,
                      family: Any = None) -> dict[str, tuple[int, ...]]:
    """A concept at a set of sites: its `site_shapes` meta is an object of two or more sites -> shape, in
    the order of its `site` spec, each a site of its family (when recorded), none twice, in the order a set
    keeps its sites (`model.sites.check_site_set`), and its flat tensors hold exactly their values."""
    from hsteer.model.sites import check_site_set

    if not isinstance(site_shapes, dict) or len(site_shapes) < 2:
        raise ShapeMismatchError(f"{where}: its site_shapes is not an object of two or more sites -> shape")
    shapes = {str(spec): check_shape(dims, f"{where}: site {spec}") for spec, dims in site_shapes.items()}
    if site != ",".join(shapes):
        raise ShapeMismatchError(f"{where}: its site {str(site)[:80]!r} is not the sites of its site_shapes "
                                 f"({','.join(shapes)[:80]})")
    try:
        check_site_set(list(shapes), family if isinstance(family, str) else None)
    except HsteerError as exc:
        raise ShapeMismatchError(f"{where}: {exc}") from None
    size = sum(math.prod(dims) for dims in shapes.values())
    if tuple(shape) != (size,):
        raise ShapeMismatchError(f"{where}: its tensors have shape {tuple(shape)}, its sites hold {size} values")
    return shapes


def _check_name_in(path: Path, kind: str, name: object, concept: object = None) -> None:
    try:
        check_name(kind, name)
    except HsteerError as exc:
        where = f" (concept {concept!r})" if concept is not None else ""
        raise _corrupt(path, f"{exc}{where}") from None


def check_header(path: Path, header: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse a header or tensors that do not have the documented structure and types."""
    if not isinstance(header, dict):
        raise _corrupt(path, f"its 'hsteer' header is a {type(header).__name__}, not an object")
    shape = header.get("hspace_shape")
    lengths = (0, 1) if isinstance(header.get("site_shapes"), dict) else (0, 2, 3)  # a set of sites: flat
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                              for n in shape) or len(shape) not in lengths:
        raise _corrupt(path, "'hspace_shape' is not a list of " + ("one positive integer (a set of sites)"
                                                                    if lengths[-1] == 1 else
                                                                    "two or three positive integers"))
    for key in ("site", "family"):
        if header.get(key) is not None and not isinstance(header[key], str):
            raise _corrupt(path, f"'{key}' is not a string")
    fingerprint = header.get("unet_fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise _corrupt(path, "'unet_fingerprint' is not a string")
    concepts = header.get("concepts")
    if not isinstance(concepts, dict):
        raise _corrupt(path, f"'concepts' is a {type(concepts).__name__}, not an object of name -> entry")
    if concepts and not shape:
        raise _corrupt(path, "'hspace_shape' is empty but the bank holds concepts")
    for name, entry in concepts.items():
        _check_entry(path, name, entry, shape, tensors)
    _check_no_stray_tensors(path, concepts, shape, tensors)


def _check_no_stray_tensors(path: Path, concepts: dict[str, Any], shape: list[int],
                            tensors: dict[str, torch.Tensor]) -> None:
    """Every tensor of the file is one a concept lists (or a harm detector's, checked with the detectors): a
    tensor no concept owns, e.g. a site a set's concept does not list, means the header and tensors disagree."""
    owned = set()
    for name, entry in concepts.items():
        sites = (entry.get("meta") or {}).get("site_shapes") if len(shape) == 1 else None
        owned.update(f"{name}/{part}@{spec}" if sites else f"{name}/{part}"
                     for part in entry["tensors"] for spec in (sites or [None]))
    stray = sorted(k for k in tensors if k not in owned and not k.startswith(DETECTOR_PREFIX))
    if stray:
        raise _corrupt(path, f"tensor {stray[0][:120]!r} belongs to no concept its header lists (the header and "
                             "the tensors disagree)")


def _check_entry(path: Path, name: str, entry: Any, shape: list[int], tensors: dict[str, torch.Tensor]) -> None:
    """One concept's entry: names, meta (stored window), and its tensors (present, float32, the bank's shape)."""
    _check_name_in(path, "concept", name)
    if not isinstance(entry, dict):
        raise _corrupt(path, f"the entry of concept {name!r} is not an object")
    for key in ("group", "objective"):
        if not isinstance(entry.get(key), str):
            raise _corrupt(path, f"concept {name!r} has no {key} string")
    _check_name_in(path, "group", entry["group"], name)
    parts = entry.get("tensors")
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise _corrupt(path, f"concept {name!r} lists no tensors")
    if len(set(parts)) != len(parts):
        raise _corrupt(path, f"concept {name!r} lists a tensor twice ({', '.join(parts)})")
    meta = entry.get("meta", {})
    check_concept_meta(meta, f"bank file {path}: concept {name!r}")
    if len(shape) == 1:  # a set of sites: one tensor per site, `<tensor>@<site>`
        try:
            shapes = check_site_shapes(meta.get("site_shapes"), meta.get("site"), tuple(shape), f"concept {name!r}",
                                       meta.get("family"))
        except HsteerError as exc:
            raise _corrupt(path, str(exc)) from None
        _check_tensors(path, name, [(f"{p}@{spec}", list(dims)) for p in parts for spec, dims in shapes.items()],
                       tensors)
        return
    _check_tensors(path, name, [(part, shape) for part in parts], tensors)


def _check_tensors(path: Path, name: str, parts: list[tuple[str, list[int]]], tensors: dict[str, torch.Tensor]) -> None:
    """Each `name/part` is present, float32 and of its shape."""
    for part, shape in parts:
        key = f"{name}/{part}"
        if key not in tensors:
            raise _corrupt(path, f"tensor {key!r} is missing")
        if tensors[key].dtype != torch.float32:
            raise _corrupt(path, f"tensor {key!r} is {str(tensors[key].dtype).removeprefix('torch.')}, "
                                 "banks hold float32 tensors")
        if list(tensors[key].shape) != list(shape):
            raise _corrupt(path, f"tensor {key!r} has shape {tuple(tensors[key].shape)}, the bank's h-space "
                                 f"is {tuple(shape)}")


def check_bank_windows(bank, names: Iterable[str], steps: int, window: tuple[float, float] | None = None,
                       strength: float | None = None, label: str = "window") -> None:
    """Every concept in `names` acts on at least one of the steps run: in `window` when one is given
    for all (its error carries the field `window`), else in its stored window (the bank and the concept
    are named, not a setting the user did not give). A window that steers no step would give the plain
    images, silently."""
    if window is not None:
        with field_errors("window"):
            check_window_covers_steps(*window, steps, label, strength)
        return
    for name in sorted(names):
        stored = bank[name].window
        if stored is not None:
            check_window_covers_steps(*stored, steps, f"the step window stored with concept {name!r}", strength)


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
        entry.pop("nonfinite", None)  # a claim of the concept's meta; only the tensors say
        bad = nonfinite_tensors(concept)
        if bad:
            entry["nonfinite"] = bad
    return info
