"""Train the bundled toy-world Stable Diffusion model from scratch, on CPU.

    hsteer world train --out runs/world_model --vae-minutes 8 --unet-minutes 45

produces a standard diffusers ``StableDiffusionPipeline`` folder (tiny ``AutoencoderKL``
32x32 RGB -> 16x16x4, word-level ``CLIPTokenizer`` + from-scratch ``CLIPTextModel``,
``UNet2DConditionModel`` with cross-attention, ``DDIMScheduler``) loadable with
``StableDiffusionPipeline.from_pretrained(out)``.  Everything is budgeted in wall-clock
minutes so the run fits a fixed CPU time slot; snapshots of the full pipeline are written
atomically during U-Net training and the run can be resumed from its training state.

The work is split by job: `data` (tokenizer, rendered pairs, captions), `pipeline` (the
architecture's configs, the saved folder, the training state file), `training_loop` (the two stages).
This module is the entry point and keeps the names callers import from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hsteer.world.data import (
    MAX_LENGTH,
    SPECIAL_TOKENS,
    Captions,
    build_tokenizer_files,
    load_tokenizer,
    render_dataset,
)
from hsteer.world.pipeline import SCHEDULER_CONFIG, TEXT_CONFIG, UNET_CONFIG, VAE_CONFIG, save_pipeline
from hsteer.world.training_loop import UNetRun, WorldTrainSettings, run_folders, unet_stage, vae_stage

__all__ = ["MAX_LENGTH", "SCHEDULER_CONFIG", "SPECIAL_TOKENS", "TEXT_CONFIG", "UNET_CONFIG", "VAE_CONFIG",
           "WorldTrainSettings", "build_tokenizer_files", "load_tokenizer", "render_dataset", "save_pipeline",
           "train_world_model"]


def train_world_model(out_dir: Path, *, log: Callable[[str], None] | None = None, **settings) -> Path:
    """Train the toy-world pipeline from scratch and save it to ``out_dir`` (settings: `WorldTrainSettings`).

    Stage 1 trains the VAE for ``vae_minutes``, stage 2 encodes the pre-rendered dataset
    once and trains text encoder + U-Net jointly (epsilon loss, caption dropout for
    classifier-free guidance, EMA weights saved) for ``unet_minutes``.  The training
    state lives next to ``out_dir`` (``<out_dir>.state/``) so an interrupted run resumes.
    Returns ``out_dir``.
    """
    import torch

    cfg = WorldTrainSettings(**settings)
    torch.set_num_threads(cfg.threads)
    out_dir, state_dir, L = run_folders(out_dir, log)
    L(f"train_world_model out={out_dir} seed={cfg.seed} vae_minutes={cfg.vae_minutes} "
      f"unet_minutes={cfg.unet_minutes} threads={cfg.threads} n_images={cfg.n_images} batch={cfg.batch_size} "
      f"lr={cfg.lr} torch={torch.__version__}")
    tok_dir = state_dir / "tokenizer"
    build_tokenizer_files(tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    t = time.time()
    images, captions = render_dataset(cfg.n_images, cfg.seed)
    L(f"rendered {cfg.n_images} training pairs in {time.time() - t:.0f}s")
    caps = Captions.build(tokenizer, captions)
    L(f"{len(caps.ids)} distinct captions")
    vae, info, lat_mean, lat_std = vae_stage(images, state_dir, cfg, L)
    unet_stage(UNetRun(out_dir, state_dir, tok_dir, len(tokenizer), vae, info, cfg, L), lat_mean, lat_std, caps)
    return out_dir
