"""Q16 (docs/methods.md §5): two learned CLIP text embeddings, 'non inappropriate' and 'inappropriate'.

The original embeddings ship as a pickled float16 numpy array (2, 768) for CLIP ViT-L/14. hsteer never
unpickles on an evaluation path: `hsteer q16 convert` turns the pickle once into safetensors with a
restricted unpickler that only rebuilds numpy arrays, and the evaluator reads safetensors or .npy
(allow_pickle=False).
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hsteer.checks import check_input_file, check_output_file
from hsteer.errors import HsteerError

#: The most values a Q16 prompt array may hold (2 x 768 for ViT-L/14; room for larger CLIPs).
MAX_PROMPT_VALUES = 2 * 8192


def _bounded_reconstruct(reconstruct):
    """numpy's array constructor, refusing shapes larger than MAX_PROMPT_VALUES before allocating."""

    def build(cls, shape, *args):
        dims = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        if not all(isinstance(n, int) and 0 <= n <= MAX_PROMPT_VALUES for n in dims) or \
                int(np.prod(dims, dtype=object)) > MAX_PROMPT_VALUES:
            raise pickle.UnpicklingError(f"refusing an array of shape {dims}: Q16 prompts hold at most "
                                         f"{MAX_PROMPT_VALUES} values")
        return reconstruct(cls, shape, *args)

    return build

# (module, name) a numpy-array pickle needs, and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        if module.startswith("numpy.core") and hasattr(np, "_core"):  # numpy 2 moved numpy.core
            module = "numpy._core" + module[len("numpy.core"):]
        found = super().find_class(module, name)
        return _bounded_reconstruct(found) if name == "_reconstruct" else found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a pickle with persistent ids (not a plain numpy array)")


def load_array_pickle(data: bytes) -> np.ndarray:
    """Unpickle `data` if it is a plain numpy array; anything else raises HsteerError.

    The opcode stream is walked first (`pickletools.genops` reads each argument from `data` itself): a
    malformed stream, e.g. a FRAME or BYTEARRAY8 claiming more bytes than `data` holds, is refused there,
    before the unpickler would try to allocate what it claims (OverflowError, MemoryError).
    """
    try:
        for _ in pickletools.genops(data):
            pass
    except Exception as exc:  # unknown opcodes, truncated or oversized arguments: whatever the bytes say
        raise HsteerError(f"not a plain numpy-array pickle: {exc}") from None
    try:
        value = _ArrayUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, ImportError) as exc:
        raise HsteerError(f"not a plain numpy-array pickle: {exc}") from None
    if not isinstance(value, np.ndarray):
        raise HsteerError(f"the pickle holds a {type(value).__name__}, not a numpy array")
    if value.dtype.kind not in "fiu":
        raise HsteerError(f"the pickled array has dtype {value.dtype}, not a numeric one")
    if value.size > MAX_PROMPT_VALUES or value.nbytes > len(data):  # its values must be in the pickle
        raise HsteerError(f"the pickle's array ({value.shape}) is larger than the data it carries; refusing it")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise HsteerError("the pickled array holds NaN or infinite values")
    return value


def convert_pickle(src: str | Path, dst: str | Path) -> tuple[int, ...]:
    """One-time conversion of the original Q16 prompts pickle to safetensors (key 'prompts')."""
    from safetensors.numpy import save_file

    from hsteer.fileio import atomic_save

    src = check_input_file(src, "Q16 pickle")
    dst = check_output_file(dst, "output")
    if dst.suffix != ".safetensors":
        raise HsteerError(f"write the converted prompts to a .safetensors file, got {dst}")
    if src.stat().st_size > 64 * MAX_PROMPT_VALUES:
        raise HsteerError(f"{src} is {src.stat().st_size} bytes, too large for Q16 prompts; refusing it")
    array = load_array_pickle(src.read_bytes())
    if array.ndim != 2 or array.shape[0] != 2 or array.shape[1] < 1:
        raise HsteerError(f"Q16 prompts must be a (2, D) array, got {array.shape}")
    atomic_save(dst, lambda tmp: save_file({"prompts": np.ascontiguousarray(array)}, tmp,
                                           metadata={"source": "q16", "from": src.name}))
    return tuple(array.shape)


def load_prompts(path: str | Path) -> torch.Tensor:
    """The (2, D) Q16 prompt embeddings from .safetensors or .npy (no pickles), as float32."""
    path = check_input_file(path, "Q16 prompts file")
    if path.stat().st_size > 64 * MAX_PROMPT_VALUES:
        raise HsteerError(f"Q16 prompts file {path} is {path.stat().st_size} bytes, too large for (2, D) prompts")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types on bad bytes
            raise HsteerError(f"Q16 prompts file {path} is not a valid safetensors file ({type(exc).__name__})"
                              ) from None
        if "prompts" in tensors:
            array = tensors["prompts"]
        elif len(tensors) == 1:
            array = next(iter(tensors.values()))
        else:
            raise HsteerError(f"{path} holds {sorted(tensors)}; expected one tensor named 'prompts'")
    elif path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, MemoryError) as exc:
            raise HsteerError(f"{path} is not a plain .npy array ({' '.join(str(exc).split())[:200]})") from None
    else:
        raise HsteerError(f"Q16 prompts must be .safetensors or .npy, got {path.name}; convert the original "
                          f"pickle once with `hsteer q16 convert {path} prompts.safetensors`")
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.shape[0] != 2 or array.dtype.kind not in "fiu":
        raise HsteerError(f"Q16 prompts must be a numeric (2, D) array, got {getattr(array, 'shape', '?')}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise HsteerError(f"Q16 prompts file {path} holds NaN or infinite values")
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


class Q16Classifier:
    """softmax(100 * cos(image, prompts)); index 1 = inappropriate."""

    def __init__(self, scorer, prompts: torch.Tensor) -> None:
        if prompts.shape[-1] != scorer.dim:
            raise HsteerError(f"the Q16 prompts have dimension {prompts.shape[-1]} but CLIP {scorer.name} embeds "
                              f"to {scorer.dim}; Q16 needs the CLIP it was learned with (ViT-L/14: 768)")
        self.scorer = scorer
        self.prompts = torch.nn.functional.normalize(prompts.float(), dim=-1)

    def probabilities(self, images: Sequence[Any] = (), embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Each image's softmax over Q16's two prompts (column 1: inappropriate); pass `embeds` to reuse
        CLIP image embeddings."""
        img = self.scorer.image_embeds(images) if embeds is None else embeds
        return torch.softmax(100.0 * img @ self.prompts.T, dim=-1)

    def flags(self, images: Sequence[Any] = (), embeds: torch.Tensor | None = None) -> list[bool]:
        """Whether Q16 calls each image inappropriate (its more probable prompt is the inappropriate one)."""
        return [bool(i == 1) for i in self.probabilities(images, embeds).argmax(-1).tolist()]
