"""The geometry of a pipeline's h-space: native resolution, mid-block shape, and a U-Net fingerprint.

Read from the loaded model, never hard-coded (SD 1.x: (1280, 8, 8) at 512 px; SDXL: (1280, 32, 32) at 1024 px).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import hashlib
import json
import math

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

# Config keys that decide the h-space and what the up blocks do with it.
_FINGERPRINT_KEYS = (
    "in_channels", "out_channels", "sample_size", "block_out_channels", "down_block_types",
    "up_block_types", "mid_block_type", "layers_per_block", "cross_attention_dim",
    "attention_head_dim", "num_attention_heads", "transformer_layers_per_block",
    "use_linear_projection", "addition_embed_type", "projection_class_embeddings_input_dim",
    "time_cond_proj_dim", "class_embed_type",
)


def is_sdxl(pipe: Pipeline) -> bool:
    """Whether the pipeline is an SDXL one (a second text encoder, or XL in its class name)."""
    return getattr(pipe, "text_encoder_2", None) is not None or "XL" in type(pipe).__name__


def default_resolution(pipe: Pipeline) -> tuple[int, int]:
    """The pipeline's native image size (height, width): the denoiser's sample size in latents (FLUX, which
    has none, its pipeline's `default_sample_size`) times the autoencoder's factor."""
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    sample = getattr(denoiser.config, "sample_size", None) or getattr(pipe, "default_sample_size", 64)
    size = int(sample) * pipe.vae_scale_factor
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


def pipeline_hspace_shape(pipe: Pipeline, height: int | None = None, width: int | None = None) -> tuple[int,
                          int, int]:
    """The h-space shape of a pipeline's images at `height` x `width` (its native size where not given)."""
    return hspace_shape(pipe.unet, *resolve_resolution(pipe, height, width), pipe.vae_scale_factor)


def unet_fingerprint(unet) -> str:
    """A short digest of the denoiser's configuration: banks learned on one architecture refuse another.

    A U-Net is digested over the keys that decide its h-space (as banks have always recorded it); a
    transformer over its whole public config (every key of a DiT shapes its blocks' outputs)."""
    config = dict(unet.config)
    if "block_out_channels" in config:
        payload = {k: config.get(k) for k in _FINGERPRINT_KEYS}
    else:
        payload = {k: v for k, v in config.items() if not k.startswith("_")}
    text = json.dumps(payload, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_resolution(pipe: Pipeline, height: int | None = None, width: int | None = None) -> tuple[int,
                       int]:
    """(height, width) of the images to make: the given size, the model's native one where not given; a given
    size the denoiser cannot take is refused here (`check_image_size`), before anything runs."""
    native = default_resolution(pipe)
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    rule = size_rule(dict(denoiser.config), int(pipe.vae_scale_factor), type(denoiser).__name__)
    check_image_size(rule, height, width, native[0])
    return int(height or native[0]), int(width or native[1])


def size_rule(config: dict, vae_scale_factor: int, class_name: str = "") -> tuple[int, int]:
    """(multiple, largest): the image sides, in pixels, a denoiser of this config takes are the multiples of
    `multiple` up to `largest` (hsteer's own multiple of 8 and largest side included).

    A transformer cuts its latents into `patch_size` patches (FLUX packs 2 x 2 latents into a token) and
    SD3's learned position embedding covers at most `pos_embed_max_size` patches a side."""
    patch = config.get("patch_size") or 1
    patch = 2 if "Flux" in class_name else patch
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        patch = 1
    multiple = max(1, int(vae_scale_factor)) * patch
    from hsteer.checks import SIZE_MAX, SIZE_MULTIPLE

    multiple = math.lcm(multiple, SIZE_MULTIPLE)
    cap = config.get("pos_embed_max_size")
    largest = SIZE_MAX
    if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
        largest = min(SIZE_MAX, cap * patch * max(1, int(vae_scale_factor)))
    return multiple, largest - largest % multiple


def check_image_size(rule: tuple[int, int], height: object, width: object, native: int | None = None,
                     labels: tuple[str, str] = ("height", "width")) -> None:
    """Refuse a given side that is not a multiple of `rule[0]` up to `rule[1]`, naming the sides it takes."""
    from hsteer.errors import HsteerError

    multiple, largest = rule
    for label, value in zip(labels, (height, width)):
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= largest
                             and value % multiple == 0):
            continue
        sides = list(range(multiple, largest + 1, multiple))
        shown = ", ".join(map(str, sides)) if len(sides) <= 8 else f"{multiple}, {2 * multiple}, ... {largest}"
        default = f"; leave it out for the model's native {native} px" if native else ""
        raise HsteerError(f"{label} {value!r} does not fit this model, which makes image sides that are multiples "
                          f"of {multiple} up to {largest} px ({shown}){default}", field=label)


def check_model_folder_size(model, height: int | None, width: int | None) -> None:
    """`check_image_size` for a local model folder, read from its config files before the model loads (a Hub
    id, or a folder whose configs are missing, is checked once loaded, by `resolve_resolution`)."""
    if height is None and width is None:
        return
    from pathlib import Path

    from hsteer.model.locations import model_location

    folder = Path(model_location(model))
    try:
        vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
        name = "unet" if (folder / "unet" / "config.json").is_file() else "transformer"
        config = json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
        channels = vae.get("block_out_channels") or vae.get("encoder_block_out_channels")
        factor = 2 ** (len(channels) - 1)
        sample = config.get("sample_size")
    except (OSError, ValueError, TypeError, AttributeError):
        return  # not a local folder, or configs the loader reports on
    if not isinstance(config, dict):
        return
    native = sample * factor if isinstance(sample, int) and not isinstance(sample, bool) else None
    check_image_size(size_rule(config, factor, str(config.get("_class_name", ""))), height, width, native)
