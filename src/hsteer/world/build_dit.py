"""The bundled world's second model: the same toy world on a tiny SD3 (MMDiT) transformer, trained on a CPU.

    hsteer world train-dit --out src/hsteer/world/model_dit --minutes 30

A standard diffusers ``StableDiffusion3Pipeline`` folder, so that steering on a transformer (block sites,
the text site, flow-matching velocity) is measured on a model that has learned the world, not assumed from
random weights. What it shares with the U-Net world model, and why:

- the VAE and the first text encoder are the U-Net model's, frozen: the world's images and words are
  already learned there, and the CPU budget goes to the transformer (the encoder gains SD3's pooled
  projection, a fixed random matrix the transformer learns to read);
- SD3's second CLIP slot holds a tiny random frozen encoder (SD3's pipeline needs two), and there is no
  T5 encoder: the pipeline pads the prompt with `MAX_SEQUENCE_LENGTH` zero tokens where T5's would be,
  and the model card (`hsteer.json`) records that length, which hsteer passes on every call
  (`hsteer.model.card`); plain diffusers users pass `max_sequence_length=1` themselves;
- rectified flow (SD3's objective): `x_t = (1 - s) x0 + s n`, the transformer predicts `n - x0`, with
  `s` drawn logit-normal as SD3 trains, caption dropout for classifier-free guidance and EMA weights.

The text features of every distinct caption are computed once through the pipeline's own `encode_prompt`
(the encoders are frozen), so training and generation condition on exactly the same tensors. Budgeted in
minutes; snapshots and a resumable state as the U-Net world model has (`hsteer.world.pipeline`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hsteer.errors import TrainingDivergedError
from hsteer.world.data import MAX_LENGTH, render_dataset
from hsteer.world.defaults import DEFAULT_GUIDANCE, DEFAULT_STEPS
from hsteer.world.pipeline import (TEXT_CONFIG, dir_size, load_training_state, publish_folder,
                                   save_training_state)
from hsteer.world.training_loop import lr_factor, run_folders

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

#: SD3's MMDiT at the world's size: 16 x 16 latents in 2 x 2 patches (64 image tokens), 4 joint blocks of
#: width 128; the prompt side is the two CLIP encoders' features side by side (128 + 32).
DIT_CONFIG = {"sample_size": 16, "patch_size": 2, "in_channels": 4, "out_channels": 4, "num_layers": 4,
              "attention_head_dim": 32, "num_attention_heads": 4, "caption_projection_dim": 128,
              "joint_attention_dim": 160, "pooled_projection_dim": 160, "pos_embed_max_size": 8}
#: The second CLIP slot: tiny, random, frozen (SD3's pipeline needs one).
TEXT2_CONFIG = {**TEXT_CONFIG, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 2, "projection_dim": 32}
FLOW_SCHEDULER = {"num_train_timesteps": 1000, "shift": 1.0}
#: Zero tokens in T5's place (the pipeline pads with `max_sequence_length` of them; 256 by default).
MAX_SEQUENCE_LENGTH = 1


@dataclass
class DitTrainSettings:
    """The DiT world model's recipe (stored with each snapshot as training_info.json)."""

    seed: int = 0
    minutes: float = 30.0
    threads: int = 2
    snapshot_every_minutes: float = 10.0
    n_images: int = 40_000
    batch_size: int = 64
    lr: float = 6e-4
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    resume: bool = True


def build_pipeline(source: str | Path, seed: int = 0):
    """A StableDiffusion3Pipeline with a fresh transformer around the U-Net world model's VAE and text encoder."""
    import torch
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    source = Path(source)
    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(str(source / "tokenizer"))
    # the world's CLIP text encoder, with SD3's pooled projection added (the one new, random, weight)
    world_text = CLIPTextModel.from_pretrained(str(source / "text_encoder"))
    text = CLIPTextModelWithProjection.from_pretrained(str(source / "text_encoder"))
    probe_ids = tokenizer(["a photo of a red circle doctor"], padding="max_length", max_length=MAX_LENGTH,
                          return_tensors="pt").input_ids
    with torch.no_grad():
        if not torch.equal(text(probe_ids).last_hidden_state, world_text(probe_ids).last_hidden_state):
            raise RuntimeError("the world's text encoder did not load into CLIPTextModelWithProjection")
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=len(tokenizer), **TEXT2_CONFIG))
    vae = AutoencoderKL.from_pretrained(str(source / "vae"))
    vae.register_to_config(shift_factor=0.0)
    pipe = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**DIT_CONFIG), scheduler=FlowMatchEulerDiscreteScheduler(**FLOW_SCHEDULER),
        vae=vae, text_encoder=text, tokenizer=tokenizer, text_encoder_2=text_2, tokenizer_2=tokenizer,
        text_encoder_3=None, tokenizer_3=None)
    for module in (pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.requires_grad_(False).eval()
    return pipe


def caption_features(pipe: Pipeline, captions: list[str], batch: int = 256):
    """(prompt embeds, pooled) of each caption through the pipeline's own encode_prompt, once."""
    import torch

    embeds, pooled = [], []
    with torch.no_grad():
        for i in range(0, len(captions), batch):
            e, _, p, _ = pipe.encode_prompt(prompt=captions[i:i + batch], prompt_2=None, prompt_3=None,
                                            do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH)
            embeds.append(e)
            pooled.append(p)
    return torch.cat(embeds), torch.cat(pooled)


def encode_latents(vae, images_u8: np.ndarray, batch: int = 512):
    """Each image's latent mean and std, scaled as the pipeline unscales them ((z - shift) x scaling)."""
    import torch

    from hsteer.world.data import to_tensor

    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(images_u8), batch):
            d = vae.encode(to_tensor(images_u8[i:i + batch])).latent_dist
            means.append(d.mean)
            stds.append(d.std)
    scale = float(vae.config.scaling_factor)
    return torch.cat(means) * scale, torch.cat(stds) * scale


def flow_step(transformer, opt, params, batch: dict, rng: np.random.Generator, cfg: DitTrainSettings):
    """One AdamW step of the rectified-flow loss ||v(x_t, s) - (n - x0)||^2; returns (loss, grad norm)."""
    import torch

    B = cfg.batch_size
    idx = torch.from_numpy(rng.integers(0, len(batch["mean"]), size=B))
    x0 = batch["mean"][idx] + batch["std"][idx] * torch.randn(B, *batch["mean"].shape[1:])
    cap = batch["of_image"][idx].clone()
    cap[torch.from_numpy(rng.random(B) < cfg.caption_dropout)] = batch["empty"]
    sigma = torch.sigmoid(torch.randn(B)).view(-1, 1, 1, 1)  # logit-normal(0, 1), as SD3 trains
    noise = torch.randn_like(x0)
    x_t = (1 - sigma) * x0 + sigma * noise
    v = transformer(hidden_states=x_t, timestep=sigma.flatten() * 1000, encoder_hidden_states=batch["embeds"][cap],
                    pooled_projections=batch["pooled"][cap], return_dict=False)[0]
    loss = ((v - (noise - x0)) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item(), float(grad_norm)


def save_dit_pipeline(out_dir: Path, pipe: Pipeline, transformer, extra: dict) -> None:
    """The pipeline with `transformer` (the EMA weights) to `out_dir`, atomically, with its model card."""
    out_dir = Path(out_dir)
    card = {"steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE, "max_sequence_length": MAX_SEQUENCE_LENGTH}
    previous = out_dir / "hsteer.json"
    if previous.is_file():  # keep what a site scan wrote (the default site)
        card = {**json.loads(previous.read_text()), **card}

    def write(tmp: Path) -> None:
        live = pipe.transformer
        pipe.transformer = transformer
        try:
            pipe.save_pretrained(str(tmp), safe_serialization=True)
        finally:
            pipe.transformer = live
        (tmp / "hsteer.json").write_text(json.dumps(card) + "\n")
        (tmp / "training_info.json").write_text(json.dumps(extra, indent=2))

    publish_folder(out_dir, write)


def _encoded_dataset(pipe, cfg: DitTrainSettings, log: Callable[[str], None]) -> dict:
    """The training set, rendered and encoded once (the VAE and text encoders are frozen): each image's latent
    mean and std, its caption's index, and every distinct caption's features (with the empty one for
    caption dropout)."""
    from hsteer.world.data import Captions

    t = time.time()
    images, captions = render_dataset(cfg.n_images, cfg.seed)
    mean, std = encode_latents(pipe.vae, images)
    caps = Captions.build(pipe.tokenizer, captions)
    uniq = sorted(set(captions) | {""})
    embeds, pooled = caption_features(pipe, uniq)
    assert embeds.shape[1] == MAX_LENGTH + MAX_SEQUENCE_LENGTH
    log(f"rendered and encoded {cfg.n_images} pairs, {len(uniq)} captions in {time.time() - t:.0f}s; "
        f"latent std {mean.std():.3f}")
    return {"mean": mean, "std": std, "of_image": caps.of_image, "empty": caps.empty, "embeds": embeds,
            "pooled": pooled}


def _ema_update(ema, params, decay: float) -> None:
    """Move the EMA weights (the ones saved) towards the trained ones by `1 - decay`."""
    import torch

    with torch.no_grad():
        for pe, p in zip(ema.parameters(), params):
            pe.lerp_(p.detach(), 1 - decay)


def train_world_dit(out_dir: Path, source: str | Path | None = None, *, log: Callable[[str], None] | None = None,
                    **settings) -> Path:
    """Train the DiT world model for `minutes` and save it to `out_dir` (settings: `DitTrainSettings`);
    `source`: the U-Net world model whose VAE and text encoder it shares (default: the bundled one)."""
    import torch
    from diffusers import SD3Transformer2DModel

    from hsteer.world.defaults import default_model_path

    cfg = DitTrainSettings(**settings)
    torch.set_num_threads(cfg.threads)
    out_dir, state_dir, L = run_folders(out_dir, log)
    L(f"train_world_dit out={out_dir} {json.dumps(asdict(cfg))} torch={torch.__version__}")
    pipe = build_pipeline(source or default_model_path(), cfg.seed)
    batch = _encoded_dataset(pipe, cfg, L)
    transformer = pipe.transformer.train()
    ema = SD3Transformer2DModel(**DIT_CONFIG)
    params = list(transformer.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2, betas=(0.9, 0.99))
    modules = {"transformer": transformer, "ema": ema}
    state_file = state_dir / "dit_state.safetensors"
    step, elapsed = (load_training_state(state_file, modules, opt) if cfg.resume and state_file.exists()
                     else (0, 0.0))
    if step == 0:
        ema.load_state_dict(transformer.state_dict())
    ema.requires_grad_(False).eval()
    L(f"transformer {sum(p.numel() for p in params) / 1e6:.2f}M parameters; starting at step {step}")
    rng = np.random.default_rng(cfg.seed + 3 + step)
    budget, t0, last_snap, running = cfg.minutes * 60.0, time.time() - elapsed, time.time(), None

    def snapshot(final: bool = False) -> None:
        info = {**asdict(cfg), "steps_trained": step, "elapsed_min": round((time.time() - t0) / 60, 2),
                "final": final, "source": "the U-Net world model's VAE and text encoder (frozen)"}
        save_dit_pipeline(out_dir, pipe, ema, info)
        save_training_state(state_file, modules, opt, step, time.time() - t0)
        L(f"snapshot at step {step} -> {out_dir} ({dir_size(out_dir) / 1e6:.2f} MB)")

    while time.time() - t0 < budget:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, (time.time() - t0) / budget, warmup=200, final=0.1)
        loss, grad_norm = flow_step(transformer, opt, params, batch, rng, cfg)
        if not math.isfinite(loss):
            raise TrainingDivergedError(f"the DiT world model's loss diverged at step {step}; lower lr", field="lr")
        step += 1
        _ema_update(ema, params, min(cfg.ema_decay, (1 + step) / (10 + step)))
        running = loss if running is None else 0.99 * running + 0.01 * loss
        if step % 100 == 0:
            el = time.time() - t0
            L(f"step {step} loss(ema) {running:.4f} gn {grad_norm:.2f} {el / 60:.1f}/{cfg.minutes} min, "
              f"{cfg.batch_size * step / el:.0f} img/s")
        if time.time() - last_snap > cfg.snapshot_every_minutes * 60:
            snapshot()
            last_snap = time.time()
    snapshot(final=True)
    return out_dir
