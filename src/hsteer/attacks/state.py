"""Resumable attack state: one file per attacked prompt, written atomically, never pickled.

The white-box attack's state (its continuous token vectors and Adam moments) is a safetensors file whose
metadata carries the JSON rest (step, losses, best prompt); the Ring-A-Bell state (a population of token
indices) is plain JSON. Either is replaced in one atomic rename (`hsteer.fileio`), so a kill at any
moment leaves the previous state or the new one, and a resumed attack continues from there exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hsteer.errors import HsteerError
from hsteer.fileio import atomic_save, atomic_write_text

INFO_KEY = "hsteer_attack_state"


def save_tensor_state(path: str | Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Tensors and a JSON-able dict in one safetensors file, atomically."""
    from safetensors.torch import save_file

    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {INFO_KEY: json.dumps(info, allow_nan=False)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda tmp: save_file(data, tmp, metadata=meta), suffix=".safetensors")


def load_tensor_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """What `save_tensor_state` wrote, or None when there is no state yet."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            info = json.loads((handle.metadata() or {})[INFO_KEY])
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - any damage is one line naming the file
        raise HsteerError(f"{path}: unreadable attack state ({type(exc).__name__}); remove it to restart "
                          "that prompt's attack") from None
    return tensors, info


def save_json_state(path: str | Path, info: dict[str, Any]) -> None:
    """A JSON-only state (Ring-A-Bell's population is plain integers), atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(info, allow_nan=False))


def load_json_state(path: str | Path) -> dict[str, Any] | None:
    """What `save_json_state` wrote, or None when there is no state yet; damage is one line naming the file."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise HsteerError(f"{path}: unreadable attack state; remove it to restart that prompt's attack") from None
