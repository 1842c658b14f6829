"""The geometry of a pipeline's h-space: native resolution, mid-block shape, and a U-Net fingerprint.

Read from the loaded model, never hard-coded (SD 1.x: (1280, 8, 8) at 512 px; SDXL: (1280, 32, 32) at 1024 px).
"""

from __future__ import annotations

import hashlib
import json

# Config keys that decide the h-space and what the up blocks do with it.
_FINGERPRINT_KEYS = (
    "in_channels", "out_channels", "sample_size", "block_out_channels", "down_block_types",
    "up_block_types", "mid_block_type", "layers_per_block", "cross_attention_dim",
    "attention_head_dim", "num_attention_heads", "transformer_layers_per_block",
    "use_linear_projection", "addition_embed_type", "projection_class_embeddings_input_dim",
    "time_cond_proj_dim", "class_embed_type",
)


def is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None or "XL" in type(pipe).__name__


def default_resolution(pipe) -> tuple[int, int]:
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


def pipeline_hspace_shape(pipe, height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
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


def resolve_resolution(pipe, height: int | None = None, width: int | None = None) -> tuple[int, int]:
    """(height, width) of the images to make: the given size, the model's native one where not given."""
    native = default_resolution(pipe)
    return int(height or native[0]), int(width or native[1])
