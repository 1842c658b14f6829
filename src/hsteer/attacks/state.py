"""Resumable attack state: one file per attacked prompt, written atomically, never pickled.

The white-box attack's state (its continuous token vectors and Adam moments) is a safetensors file whose
metadata carries the JSON rest (step, losses, best prompt); the Ring-A-Bell state (a population of token
indices) is plain JSON. Either is replaced in one atomic rename (`hsteer.fileio`), so a kill at any
moment leaves the previous state or the new one, and a resumed attack continues from there exactly.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hsteer.checks import check_input_file, load_json
from hsteer.errors import HsteerError
from hsteer.fileio import atomic_save, atomic_write_text

INFO_KEY = "hsteer_attack_state"
_TENSOR_NAME = re.compile(r"vector_[0-9]{1,2}|adam_[0-9]{1,2}_(step|exp_avg|exp_avg_sq)")
#: A state file is at most this large (a population of 100,000 x 75 token indices fits).
MAX_STATE_BYTES = 256 * 2**20


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _indices(v: Any) -> bool:
    return isinstance(v, list) and all(_count(i) for i in v)


#: What each key of a state holds, when present (the white-box and the Ring-A-Bell states together).
FIELDS = {"step": _count, "generation": _count, "evaluations": _count, "prompt": lambda v: isinstance(v, str),
          "config": lambda v: isinstance(v, dict), "best": lambda v: v is None or _indices(v),
          "best_loss": lambda v: v is None or _number(v), "best_fitness": lambda v: v is None or _number(v),
          "losses": lambda v: isinstance(v, list) and all(_number(x) for x in v),
          "history": lambda v: isinstance(v, list) and all(_number(x) for x in v),
          "population": lambda v: isinstance(v, list) and bool(v) and all(_indices(r) for r in v)}


@dataclass(frozen=True)
class StateLayout:
    """The keys a state of one format must hold, and which of them counts its progress against which budget
    field of its config (the resume refuses a count beyond the budget)."""

    required: tuple[str, ...]
    counter: str
    budget: str


#: A gradient search's state (tensors + JSON: the white-box and adaptive attacks).
TENSOR_STATE = StateLayout(("step", "losses", "best", "best_loss", "prompt", "config"), "step", "steps")
#: A population search's state (JSON only: Ring-A-Bell).
JSON_STATE = StateLayout(("generation", "population", "best", "best_fitness", "history", "evaluations", "prompt",
                          "config"), "generation", "generations")


def _damaged(path: Path, why: str) -> HsteerError:
    return HsteerError(f"{path}: damaged attack state ({why}); remove it to restart that prompt's attack")


def check_info(path: Path, info: Any, layout: StateLayout) -> dict[str, Any]:
    """A state's JSON part: an object whose keys hold what `FIELDS` says, with the keys `kind` needs, and a
    progress counter within the budget of its own config."""
    if not isinstance(info, dict):
        raise _damaged(path, f"a JSON {type(info).__name__}, not an object")
    for key in layout.required:
        if key not in info:
            raise _damaged(path, f"no {key!r}")
    for key, ok in FIELDS.items():
        if key in info and not ok(info[key]):
            raise _damaged(path, f"{key!r} holds {str(info[key])[:40]!r}")
    counter, budget = layout.counter, layout.budget
    limit = info["config"].get(budget)
    if not _count(limit) or info[counter] > limit:
        raise _damaged(path, f"{counter} {info[counter]} beyond the budget {limit!r}")
    if info[counter] == limit and info["best"] is None:
        raise _damaged(path, "finished without a best prompt")
    return info


def save_tensor_state(path: str | Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Tensors and a JSON-able dict in one safetensors file, atomically."""
    from safetensors.torch import save_file

    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {INFO_KEY: json.dumps(info, allow_nan=False)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda tmp: save_file(data, tmp, metadata=meta), suffix=".safetensors")


def _exists(path: Path) -> bool:
    if not path.exists() and not path.is_symlink():
        return False
    check_input_file(path, "attack state")
    if path.stat().st_size > MAX_STATE_BYTES:
        raise _damaged(path, f"larger than {MAX_STATE_BYTES >> 20} MiB")
    return True


def load_tensor_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """What `save_tensor_state` wrote, or None when there is no state yet; damage (unreadable, JSON of the
    wrong shape, tensors that are not finite floats) is one line naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if not _exists(path):
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {})[INFO_KEY]
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - any damage is one line naming the file
        raise HsteerError(f"{path}: unreadable attack state ({type(exc).__name__}); remove it to restart "
                          "that prompt's attack") from None
    info = check_info(path, load_json(text, f"attack state {path}"), TENSOR_STATE)
    for name, tensor in tensors.items():
        if not _TENSOR_NAME.fullmatch(name):
            raise _damaged(path, f"an unknown tensor {name[:40]!r}")
        if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            raise _damaged(path, f"tensor {name!r} is {tensor.dtype} or holds NaN or infinite values")
    return tensors, info


def save_json_state(path: str | Path, info: dict[str, Any]) -> None:
    """A JSON-only state (Ring-A-Bell's population is plain integers), atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(info, allow_nan=False))


def load_json_state(path: str | Path) -> dict[str, Any] | None:
    """What `save_json_state` wrote, or None when there is no state yet; damage is one line naming the file."""
    path = Path(path)
    if not _exists(path):
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _damaged(path, "not UTF-8 text") from None
    return check_info(path, load_json(text, f"attack state {path}"), JSON_STATE)
