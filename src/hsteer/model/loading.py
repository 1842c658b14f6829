"""Loading diffusers pipelines, with their sampling defaults.

hsteer works on stock pipelines: SD 1.x / 2.x (`StableDiffusionPipeline`), SDXL
(`StableDiffusionXLPipeline`), and the transformer pipelines SD3 (`StableDiffusion3Pipeline`), FLUX
(`FluxPipeline`) and SANA (`SanaPipeline`), from a hub id or a local folder. Everything about a steering
site (shape, dtype, device) is read from the loaded denoiser (`hsteer.model.geometry`, `.denoisers`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hsteer.errors import ModelLoadError
from hsteer.model.card import model_card, read_json_object
from hsteer.model.locations import (BUNDLED_DIT_MODEL as BUNDLED_DIT_MODEL, BUNDLED_MODEL as BUNDLED_MODEL,
                                    BUNDLED_NAMES as BUNDLED_NAMES, default_model as default_model, model_location)

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}

def quiet_libraries() -> None:
    """Library load bars and warnings would drown hsteer's own progress bars."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.disable_progress_bar()
    tlog.set_verbosity_error()


def local_class_name(model: str | Path | None) -> str:
    """The pipeline class a local model folder names in its `model_index.json` ("" for a Hub id, or a
    folder without one), read without loading anything."""
    index = Path(model_location(model)) / "model_index.json"
    if not index.is_file():
        return ""
    return str(read_json_object(index, "model index").get("_class_name", ""))


def local_denoiser_class(model: str | Path | None) -> str:
    """The denoiser class a local model folder names in its `model_index.json` (its `unet` or `transformer`
    entry; "" for a Hub id, or a folder without one), read without loading anything: a command refuses a
    model its task cannot drive before spending the load on it."""
    index = Path(model_location(model)) / "model_index.json"
    if not index.is_file():
        return ""
    data = read_json_object(index, "model index")
    for attr in ("unet", "transformer"):
        entry = data.get(attr)
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str):
            return entry[1]
    return ""


#: The installed package: nothing under it is ever written (its model cards are every user's defaults).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def check_card_folder(model: str | Path | None) -> Path:
    """The folder whose `hsteer.json` `hsteer sites --set-default` may rewrite: a local transformer model
    folder (a U-Net is always steered at its mid-block) outside the installed package, writable; checked
    before anything loads."""
    from hsteer.errors import HsteerError

    where = model_location(model)
    folder = Path(where)
    if not (folder / "model_index.json").is_file():
        raise HsteerError(f"{where} is not a local model folder, whose hsteer.json a default site is written to; "
                          "save the pipeline (pipe.save_pretrained(DIR)) and give model=DIR", field="model")
    name = local_class_name(folder)
    if not name.startswith(("StableDiffusion3", "Flux", "Sana")):
        raise HsteerError(f"{where} is a U-Net model ({name or 'unknown pipeline'}), steered at its mid-block "
                          "unless site names another; it has no default site to write", field="site")
    resolved = folder.resolve()
    if resolved == PACKAGE_ROOT or PACKAGE_ROOT in resolved.parents:
        raise HsteerError(f"writing a default site would rewrite the model card of the model installed with hsteer "
                          f"({resolved}), changing every later run's default; copy the folder first (cp -r "
                          f"{resolved} my-model) and give model='my-model'", field="model")
    card = folder / "hsteer.json"
    if not os.access(folder, os.W_OK) or (card.exists() and not os.access(card, os.W_OK)):
        raise HsteerError(f"cannot write a default site: {folder} is not writable; copy the model folder somewhere "
                          "writable")
    return folder


SD_SAMPLING = {"steps": 50, "guidance": 7.5}


def sampling_defaults(model: str | Path | None = None) -> dict[str, float]:
    """Default steps and CFG scale: SD's, unless the model folder ships an `hsteer.json` with its own."""
    folder = Path(model_location(model))
    card = folder / "hsteer.json"
    if card.is_file():
        data = read_json_object(card, "model card")
        try:
            return {"steps": int(data.get("steps", 50)), "guidance": float(data.get("guidance", 7.5))}
        except (TypeError, ValueError):
            raise ModelLoadError(f"model card {card}: 'steps' and 'guidance' must be numbers") from None
    index = folder / "model_index.json"
    if index.is_file():
        return transformer_sampling(str(read_json_object(index, "model index").get("_class_name", "")))
    return dict(SD_SAMPLING)


def transformer_sampling(class_name: str) -> dict[str, float]:
    """The SD3, FLUX and SANA pipelines' own default steps and guidance (FLUX: its distilled guidance), read
    from their `__call__`; SD's for every other pipeline, so SD and SDXL runs are unchanged."""
    if not class_name.startswith(("StableDiffusion3", "Flux", "Sana")):
        return dict(SD_SAMPLING)
    import inspect

    import diffusers

    quiet_libraries()  # resolving a pipeline class imports transformers, which warns about optional backends
    pipeline = getattr(diffusers, class_name, None)
    if pipeline is None:
        return dict(SD_SAMPLING)
    params = inspect.signature(pipeline.__call__).parameters
    return {"steps": int(params["num_inference_steps"].default), "guidance": float(params["guidance_scale"].default)}


def check_no_pickles(folder: Path) -> None:
    """Refuse a model folder whose component holds its weights only as pickles (`*.bin`, `*.pt`, `*.ckpt`):
    loading them would unpickle, and hsteer loads safetensors only."""
    for component in sorted(p for p in folder.iterdir() if p.is_dir()):
        names = [p.name for p in component.iterdir() if p.is_file()]
        pickled = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
        if pickled and not any(n.endswith(".safetensors") for n in names):
            raise ModelLoadError(f"{component} holds its weights only as pickles ({', '.join(sorted(pickled)[:3])}); "
                                 "hsteer loads safetensors only, never a pickle: convert them (e.g. load once with "
                                 "diffusers/transformers and save_pretrained(..., safe_serialization=True))")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """The torch dtype named `dtype` (`float16`, `fp16`, `bfloat16`, ...), or `dtype` itself; an unknown
    name is refused with the known ones."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except (KeyError, TypeError):
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {sorted(set(DTYPES))}") from None


def load_pipeline(model: str | Path | None = None, *, device: str | torch.device = "cpu",
                  dtype: str | torch.dtype = "float32", **kwargs: Any):
    """Load an SD 1.x/2.x, SDXL, SD3, FLUX or SANA pipeline from a hub id or local folder (`None`: the
    bundled model).

    The safety checker is not loaded: hsteer measures and controls what the model itself generates.
    """
    from diffusers import DiffusionPipeline

    from hsteer.checks import check_device
    from hsteer.model.families import FAMILY_OF_CLASS

    if model is not None and not isinstance(model, (str, Path)):
        raise ModelLoadError(f"model must be a Hub id or a folder (str or Path), got {type(model).__name__}")
    device = check_device(str(device) if isinstance(device, torch.device) else device, "device")
    model = model_location(model)
    torch_dtype = resolve_dtype(dtype)
    local = Path(model)
    if local.exists() and not (local / "model_index.json").is_file():
        raise ModelLoadError(f"{model} is not a diffusers pipeline folder (no model_index.json); "
                             "pass a folder saved with `pipeline.save_pretrained` or a hub id")
    if not local.exists() and (model.startswith((".", "/", "~")) or model.count("/") > 1):
        raise ModelLoadError(f"model folder {model} does not exist")
    class_name, index = "", {}
    if local.exists():
        index = read_json_object(local / "model_index.json", "model index")
        class_name = str(index.get("_class_name", ""))
        check_no_pickles(local)
    kwargs.setdefault("use_safetensors", True)  # diffusers and transformers then never unpickle a .bin
    extra: dict[str, Any] = {}
    if "XL" not in class_name and not class_name.startswith(("StableDiffusion3", "Flux", "Sana")):
        extra = {"safety_checker": None, "requires_safety_checker": False}
    # components saved as absent ([null, null], e.g. SD3 without its T5 encoder): diffusers wants them passed
    absent = {name: None for name, value in index.items() if value == [None, None] and name not in kwargs}
    try:
        with warnings.catch_warnings():  # newer diffusers rename torch_dtype; older ones know only it
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            try:
                pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=torch_dtype, **{**absent, **extra}, **kwargs)
            except TypeError:  # a pipeline class that takes no safety-checker arguments
                pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=torch_dtype, **absent, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model {model!r}: {(str(exc).splitlines() or [type(exc).__name__])[0]} "
                             "(offline? pass a local diffusers folder)") from None
    except (ValueError, KeyError, TypeError, AttributeError, ImportError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelLoadError(f"cannot load model {model!r}: its files are broken or not a supported "
                             f"pipeline ({type(exc).__name__}: {first})") from None
    denoiser = getattr(pipe, "unet", None)
    denoiser = denoiser if denoiser is not None else getattr(pipe, "transformer", None)
    if type(denoiser).__name__ not in FAMILY_OF_CLASS:
        raise ModelLoadError(f"{model} loads as {type(pipe).__name__}, whose denoiser is a "
                             f"{type(denoiser).__name__}; hsteer supports SD 1.x, 2.x, SDXL, SD3, FLUX and SANA "
                             "pipelines")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_quietly(model: str | None, device: str = "cpu", dtype: str = "float32"):
    """`load_pipeline` as the commands use it: library logs silenced, `HSTEER_THREADS` torch threads."""
    quiet_libraries()
    if threads := env_threads():
        torch.set_num_threads(threads)
    return load_pipeline(model, device=device, dtype=dtype)


def env_threads() -> int | None:
    """`HSTEER_THREADS`: torch's CPU threads (unset or empty: torch's default), a whole number 1..4096."""
    from hsteer.errors import HsteerError

    raw = os.environ.get("HSTEER_THREADS", "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= 4096:
        raise HsteerError(f"HSTEER_THREADS must be a whole number from 1 to 4096, got {raw[:40]!r}; fix or unset it")
    return int(raw)


def write_default_site(folder: str | Path, spec: str) -> Path:
    """Record `spec` as the model's default steering site in `folder/hsteer.json` (kept keys preserved),
    atomically: what `hsteer sites --set-default` does with the scan's pick."""
    from hsteer.fileio import atomic_write_text

    card = check_card_folder(folder) / "hsteer.json"  # a local transformer folder, never the installed package
    data = read_json_object(card, "model card") if card.is_file() else {}
    atomic_write_text(card, json.dumps({**data, "site": spec}) + "\n")
    return card


#: Where a run's steps or guidance came from, as the manifest records it (`defaults`).
FROM_ARGUMENT, FROM_CARD, FROM_PIPELINE, FROM_LIBRARY = "argument", "model card", "pipeline", "library default"


def sampling_for(pipe: Pipeline, steps: int | None = None,
                 guidance: float | None = None) -> tuple[int, float, dict[str, str]]:
    """The steps and CFG scale of a run on `pipe`, and where each came from: a value given is kept
    ("argument"); else the model card's (`hsteer.json` beside the loaded model: "model card"); else an SD3 /
    FLUX / SANA pipeline's own default ("pipeline"); else SD's 50 steps and guidance 7.5 ("library default").

    One set of defaults per model: `generate`, `attach` and the command line all resolve them here, so the
    bundled model samples with its card's 20 steps and guidance 4.0 wherever none are given."""
    card = model_card(pipe)
    name = type(pipe).__name__
    pipeline = transformer_sampling(name) if name.startswith(("StableDiffusion3", "Flux", "Sana")) else {}
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    for key, given in (("steps", steps), ("guidance", guidance)):
        stored = card.get(key)
        if given is not None:
            values[key], sources[key] = given, FROM_ARGUMENT
        elif isinstance(stored, (int, float)) and not isinstance(stored, bool):
            values[key], sources[key] = stored, FROM_CARD
        elif key in pipeline:
            values[key], sources[key] = pipeline[key], FROM_PIPELINE
        else:
            values[key], sources[key] = SD_SAMPLING[key], FROM_LIBRARY
    steps_out = values["steps"] if steps is not None else int(values["steps"])
    guidance_out = values["guidance"] if guidance is not None else float(values["guidance"])
    return steps_out, guidance_out, sources
