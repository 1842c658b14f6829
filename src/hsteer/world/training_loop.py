"""How the toy-world model learns, within a wall-clock budget: stage 1 the VAE, stage 2 the text encoder and
U-Net together (epsilon loss, caption dropout, EMA weights), with snapshots and a resumable state.

Everything is budgeted in minutes rather than steps so a run fits a fixed CPU time slot; the recipe
(`WorldTrainSettings`) is stored with every snapshot.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsteer.errors import TrainingDivergedError
from hsteer.fileio import atomic_write_text
from hsteer.world import scene
from hsteer.world.data import Captions, to_tensor
from hsteer.world.pipeline import (
    SCHEDULER_CONFIG,
    TEXT_CONFIG,
    UNET_CONFIG,
    VAE_CONFIG,
    dir_size,
    load_training_state,
    save_pipeline,
    save_training_state,
)


@dataclass
class WorldTrainSettings:
    """The recipe of the bundled model (see its model card); stored with each snapshot."""

    seed: int = 0
    vae_minutes: float = 8.0
    unet_minutes: float = 45.0
    threads: int = 2
    snapshot_every_minutes: float = 10
    n_images: int = 60_000
    batch_size: int = 64
    lr: float = 8e-4
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    resume: bool = True


class TrainLog:
    """Timestamped lines to the run's log file and, optionally, to `echo` (the CLI's output)."""

    def __init__(self, path: Path | None, echo: Callable[[str], None] | None):
        self.path, self.echo, self.t0 = path, echo, time.time()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} +{time.time() - self.t0:7.1f}s] {msg}"
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        if self.echo is not None:
            self.echo(line)


def run_folders(out_dir: Path, echo: Callable[[str], None] | None) -> tuple[Path, Path, TrainLog]:
    """A world-model run's places: the model folder, its resumable state beside it (`<out>.state/`, made
    here) and its log (`<out>.train.log`)."""
    out_dir = Path(out_dir).resolve()
    state_dir = out_dir.with_name(out_dir.name + ".state")
    state_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, state_dir, TrainLog(out_dir.with_name(out_dir.name + ".train.log"), echo)


def lr_factor(step: int, frac: float, warmup: int, final: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay (in elapsed-time fraction) to ``final``."""
    w = min(1.0, (step + 1) / warmup)
    frac = min(max(frac, 0.0), 1.0)
    return w * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * frac)))


# --------------------------------------------------------------------------- stage 1: the VAE


def _train_vae(images_u8: np.ndarray, minutes: float, seed: int, log, batch: int = 32, lr: float = 2e-3):
    """A fresh VAE trained for `minutes` (L1 + MSE + a light KL), probed on reconstructions as it goes."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed + 1)
    n = len(images_u8)
    t0, step, budget = time.time(), 0, minutes * 60.0
    run = None
    vae.train()
    while time.time() - t0 < budget:
        f = lr_factor(step, (time.time() - t0) / budget, warmup=100, final=0.05)
        for g in opt.param_groups:
            g["lr"] = lr * f
        x = to_tensor(images_u8[rng.integers(0, n, size=batch)])
        post = vae.encode(x).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        mse = ((rec - x) ** 2).mean()
        kl = post.kl().mean() / (4 * 16 * 16)
        loss = l1 + mse + 1e-5 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        run = mse.item() if run is None else 0.98 * run + 0.02 * mse.item()
        step += 1
        if step % 100 == 0:
            log(f"vae step {step} mse(ema) {run:.5f} l1 {l1.item():.4f} kl {kl.item():.2f} "
                f"lr {lr * f:.2e} {(time.time() - t0) / step * 1000:.0f} ms/step")
        if step % 500 == 0:
            vae.eval()
            _reconstruction_check(vae, images_u8[-200:], log, n=200)
            vae.train()
    vae.eval()
    log(f"vae done: {step} steps in {time.time() - t0:.0f}s, final mse(ema) {run:.5f}")
    return vae, step


def _encode_all(vae, images_u8: np.ndarray, log, batch: int = 512):
    """Every image's latent mean and std, once (float16): stage 2 samples latents from them, never the VAE."""
    import torch

    t0 = time.time()
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(images_u8), batch):
            d = vae.encode(to_tensor(images_u8[i : i + batch])).latent_dist
            means.append(d.mean.to(torch.float16))
            stds.append(d.std.to(torch.float16))
    mean, std = torch.cat(means), torch.cat(stds)
    log(f"encoded {len(mean)} latents in {time.time() - t0:.0f}s; posterior std mean {std.float().mean():.4f}")
    return mean, std


def _reconstruction_check(vae, images_u8, log, n: int = 300) -> dict:
    """Probe accuracy on VAE reconstructions (a ceiling for the generator)."""
    import torch
    from PIL import Image

    with torch.no_grad():
        x = to_tensor(images_u8[:n])
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    probe = scene.WorldProbe()
    got = probe.classify([Image.fromarray(r) for r in rec])
    ref = probe.classify([Image.fromarray(r) for r in images_u8[:n]])
    acc = {k: float(np.mean([a == b for a, b in zip(got[k], ref[k])])) for k in got}
    log(f"vae reconstruction probe agreement: {acc}")
    return acc


def vae_stage(images_u8: np.ndarray, state_dir: Path, cfg: WorldTrainSettings, L):
    """Stage 1: the VAE (trained, or resumed), its latent scaling, and every image's latent mean and std."""
    from diffusers import AutoencoderKL

    vae_path = state_dir / "vae"
    if cfg.resume and (vae_path / "config.json").exists():
        vae = AutoencoderKL.from_pretrained(str(vae_path)).eval()
        info = json.loads((state_dir / "vae_info.json").read_text())
        L(f"resumed VAE from {vae_path}")
    else:
        vae, vae_steps = _train_vae(images_u8, cfg.vae_minutes, cfg.seed, L)
        info = {"vae_steps": vae_steps, "vae_minutes": cfg.vae_minutes}
    vae.requires_grad_(False)
    lat_mean, lat_std = _encode_all(vae, images_u8, L)
    scaling = float(1.0 / lat_mean.float().std())
    vae.register_to_config(scaling_factor=scaling)
    if not (vae_path / "config.json").exists():
        vae.save_pretrained(str(vae_path), safe_serialization=True)
        info["scaling_factor"] = scaling
        info["recon_probe_agreement"] = _reconstruction_check(vae, images_u8, L)
        atomic_write_text(state_dir / "vae_info.json", json.dumps(info))
    L(f"latent scaling_factor {scaling:.4f} (latent std {lat_mean.float().std():.4f})")
    return vae, info, lat_mean * scaling, lat_std * scaling


# --------------------------------------------------------------------------- stage 2: text encoder + U-Net


@dataclass
class UNetRun:
    """Stage 2's fixed context: where it writes, the frozen VAE, the recipe, the log."""

    out_dir: Path
    state_dir: Path
    tok_dir: Path
    vocab_size: int
    vae: object
    info: dict
    cfg: WorldTrainSettings
    log: Callable[[str], None]

    @property
    def state_file(self) -> Path:
        """The file of the U-Net run's resumable training state."""
        return self.state_dir / "unet_state.safetensors"


def _unet_modules(run: UNetRun):
    """Text encoder + U-Net, their EMA copies and AdamW; resumed from the state file where there is one."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = run.cfg
    torch.manual_seed(cfg.seed + 2)
    text_cfg = CLIPTextConfig(vocab_size=run.vocab_size, **TEXT_CONFIG)
    text_encoder = CLIPTextModel(text_cfg)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    counts = {n: sum(p.numel() for p in m.parameters()) / 1e6
              for n, m in (("unet", unet), ("text", text_encoder), ("vae", run.vae))}
    run.log("params: " + " ".join(f"{n} {v:.2f}M" for n, v in counts.items()))
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2, betas=(0.9, 0.99))
    modules = {"unet": unet, "text": text_encoder, "ema_unet": UNet2DConditionModel(**UNET_CONFIG),
               "ema_text": CLIPTextModel(text_cfg)}
    step, elapsed_before = 0, 0.0
    if cfg.resume and run.state_file.exists():
        step, elapsed_before = load_training_state(run.state_file, modules, opt)
        run.log(f"resumed U-Net training at step {step} ({elapsed_before / 60:.1f} min done)")
    else:
        modules["ema_unet"].load_state_dict(unet.state_dict())
        modules["ema_text"].load_state_dict(text_encoder.state_dict())
    for name in ("ema_unet", "ema_text"):
        modules[name].requires_grad_(False).eval()
    return modules, params, opt, step, elapsed_before


def _snapshot(run: UNetRun, modules: dict, opt, step: int, t0: float, final: bool = False) -> None:
    """The EMA pipeline to `run.out_dir` (with the recipe as training_info.json) and the resumable state."""
    cfg = run.cfg
    meta = {k: getattr(cfg, k) for k in ("seed", "vae_minutes", "unet_minutes")}
    meta.update({"unet_steps": step, "unet_elapsed_min": round((time.time() - t0) / 60, 2),
                 **{k: getattr(cfg, k) for k in ("batch_size", "lr", "ema_decay", "caption_dropout",
                                                 "n_images", "threads")},
                 "final": final, **run.info})
    save_pipeline(run.out_dir, run.vae, modules["ema_text"], modules["ema_unet"], run.tok_dir, meta)
    save_training_state(run.state_file, modules, opt, step, time.time() - t0)
    run.log(f"snapshot at step {step} -> {run.out_dir} ({dir_size(run.out_dir) / 1e6:.2f} MB)")


def unet_stage(run: UNetRun, lat_mean, lat_std, caps: Captions) -> None:
    """Stage 2: text encoder + U-Net for `unet_minutes`, snapshots of the EMA pipeline along the way."""
    import torch
    from diffusers import DDIMScheduler

    cfg, L = run.cfg, run.log
    modules, params, opt, step, elapsed_before = _unet_modules(run)
    unet, text_encoder = modules["unet"], modules["text"]
    ema_params = list(modules["ema_unet"].parameters()) + list(modules["ema_text"].parameters())
    alphas = DDIMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.float()
    rng = np.random.default_rng(cfg.seed + 3 + step)
    budget = cfg.unet_minutes * 60.0
    t0 = time.time() - elapsed_before
    last_snap = time.time()
    running = None
    unet.train()
    text_encoder.train()
    while time.time() - t0 < budget:
        f = lr_factor(step, (time.time() - t0) / budget, warmup=300, final=0.1)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f
        loss, gn = _unet_step(unet, text_encoder, opt, params, alphas, lat_mean, lat_std, caps, rng, cfg)
        step += 1
        d = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema_params, params):
                pe.lerp_(p.detach(), 1 - d)
        if not math.isfinite(loss):
            raise TrainingDivergedError(f"the world model's loss diverged at step {step}; lower lr", field="lr")
        running = loss if running is None else 0.99 * running + 0.01 * loss
        if step % 100 == 0:
            el = time.time() - t0
            L(f"unet step {step} loss(ema) {running:.4f} gn {gn:.2f} lr {cfg.lr * f:.2e} "
              f"{el / 60:.1f}/{cfg.unet_minutes} min, {cfg.batch_size * step / el:.0f} img/s")
        if time.time() - last_snap > cfg.snapshot_every_minutes * 60:
            _snapshot(run, modules, opt, step, t0)
            last_snap = time.time()
    _snapshot(run, modules, opt, step, t0, final=True)
    L(f"done: {step} U-Net steps; model folder {run.out_dir} {dir_size(run.out_dir) / 1e6:.2f} MB")


def _unet_step(unet, text_encoder, opt, params, alphas, lat_mean, lat_std, caps: Captions, rng,
               cfg: WorldTrainSettings) -> tuple[float, float]:
    """One AdamW step of the epsilon loss on a random batch (captions dropped for CFG); (loss, grad norm)."""
    import torch

    B = cfg.batch_size
    idx = torch.from_numpy(rng.integers(0, len(lat_mean), size=B))
    z0 = lat_mean[idx].float() + lat_std[idx].float() * torch.randn(B, 4, 16, 16)
    cid = caps.of_image[idx].clone()
    cid[torch.from_numpy(rng.random(B) < cfg.caption_dropout)] = caps.empty
    tt = torch.randint(0, 1000, (B,))
    noise = torch.randn_like(z0)
    ab = alphas[tt].view(-1, 1, 1, 1)
    zt = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
    pred = unet(zt, tt, encoder_hidden_states=text_encoder(caps.ids[cid]).last_hidden_state).sample
    loss = ((pred - noise) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item(), float(gn)
