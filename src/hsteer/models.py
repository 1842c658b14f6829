"""Loading diffusers pipelines and reading the geometry of their h-space.

hsteer works on stock pipelines: SD 1.x / 2.x (`StableDiffusionPipeline`) and SDXL
(`StableDiffusionXLPipeline`), from a hub id or a local folder. Everything about the h-space
(channels, spatial size, dtype, device) is read from the loaded U-Net, never hard-coded.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from hsteer.errors import ModelLoadError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}

# Config keys that decide the h-space and what the up blocks do with it.
_FINGERPRINT_KEYS = (
    "in_channels", "out_channels", "sample_size", "block_out_channels", "down_block_types",
    "up_block_types", "mid_block_type", "layers_per_block", "cross_attention_dim",
    "attention_head_dim", "num_attention_heads", "transformer_layers_per_block",
    "use_linear_projection", "addition_embed_type", "projection_class_embeddings_input_dim",
    "time_cond_proj_dim", "class_embed_type",
)


def default_model() -> str:
    """The bundled world model's folder: the default `--model` of every command."""
    from hsteer.world import default_model_path

    return str(default_model_path())


SD_SAMPLING = {"steps": 50, "guidance": 7.5}


def sampling_defaults(model: str | Path | None = None) -> dict[str, float]:
    """Default steps and CFG scale: SD's, unless the model folder ships an `hsteer.json` with its own."""
    folder = Path(default_model() if model is None else model)
    card = folder / "hsteer.json"
    if card.is_file():
        data = json.loads(card.read_text())
        return {"steps": int(data.get("steps", 50)), "guidance": float(data.get("guidance", 7.5))}
    return dict(SD_SAMPLING)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {sorted(set(DTYPES))}") from None


def load_pipeline(model: str | Path | None = None, *, device: str | torch.device = "cpu",
                  dtype: str | torch.dtype = "float32", **kwargs: Any):
    """Load an SD 1.x/2.x or SDXL pipeline from a hub id or local folder (`None`: the bundled model).

    The safety checker is not loaded: hsteer measures and controls what the model itself generates.
    """
    from diffusers import DiffusionPipeline, UNet2DConditionModel

    model = default_model() if model is None else str(model)
    torch_dtype = resolve_dtype(dtype)
    local = Path(model)
    if local.exists() and not (local / "model_index.json").is_file():
        raise ModelLoadError(f"{model} is not a diffusers pipeline folder (no model_index.json); "
                             "pass a folder saved with `pipeline.save_pretrained` or a hub id")
    if not local.exists() and (model.startswith((".", "/", "~")) or model.count("/") > 1):
        raise ModelLoadError(f"model folder {model} does not exist")
    class_name = ""
    if local.exists():
        class_name = json.loads((local / "model_index.json").read_text()).get("_class_name", "")
    extra: dict[str, Any] = {}
    if "XL" not in class_name:
        extra = {"safety_checker": None, "requires_safety_checker": False}
    try:
        with warnings.catch_warnings():  # newer diffusers rename torch_dtype; older ones know only it
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            try:
                pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=torch_dtype, **extra, **kwargs)
            except TypeError:  # a pipeline class that takes no safety-checker arguments
                pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=torch_dtype, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model {model!r}: {str(exc).splitlines()[0]} "
                             "(offline? pass a local diffusers folder)") from exc
    if not isinstance(getattr(pipe, "unet", None), UNet2DConditionModel):
        raise ModelLoadError(f"{model} loads as {type(pipe).__name__}, whose denoiser is not a "
                             "UNet2DConditionModel; hsteer supports SD 1.x, 2.x and SDXL pipelines")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None or "XL" in type(pipe).__name__


def default_resolution(pipe) -> tuple[int, int]:
    """The pipeline's native image size (height, width)."""
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return int(size), int(size)


def hspace_shape(unet, height: int | None = None, width: int | None = None,
                 vae_scale_factor: int | None = None) -> tuple[int, int, int]:
    """(channels, h, w) of the mid-block output for images of `height` x `width` pixels.

    With no size given, the U-Net's native latent size is used.
    """
    channels = unet.config.block_out_channels[-1]
    factor = 2 ** (len(unet.config.block_out_channels) - 1)
    if height is None or width is None:
        latent_h = latent_w = unet.config.sample_size
    else:
        if vae_scale_factor is None:
            raise ValueError("pass vae_scale_factor together with height and width")
        latent_h, latent_w = height // vae_scale_factor, width // vae_scale_factor
    return int(channels), -(-latent_h // factor), -(-latent_w // factor)


def pipeline_hspace_shape(pipe, height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
    h, w = default_resolution(pipe)
    return hspace_shape(pipe.unet, height or h, width or w, pipe.vae_scale_factor)


def unet_fingerprint(unet) -> str:
    """A short digest of the U-Net configuration: banks learned on one architecture refuse another."""
    config = dict(unet.config)
    payload = {k: config.get(k) for k in _FINGERPRINT_KEYS}
    text = json.dumps(payload, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
