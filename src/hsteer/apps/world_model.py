"""Train the bundled toy-world Stable Diffusion model from scratch, on CPU.

    hsteer world train --out runs/world_model --vae-minutes 8 --unet-minutes 45

produces a standard diffusers ``StableDiffusionPipeline`` folder (tiny ``AutoencoderKL``
32x32 RGB -> 16x16x4, word-level ``CLIPTokenizer`` + from-scratch ``CLIPTextModel``,
``UNet2DConditionModel`` with cross-attention, ``DDIMScheduler``) loadable with
``StableDiffusionPipeline.from_pretrained(out)``.  Everything is budgeted in wall-clock
minutes so the run fits a fixed CPU time slot; snapshots of the full pipeline are written
atomically during U-Net training and the run can be resumed from its training state.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsteer.errors import TrainingDivergedError
from hsteer.fileio import atomic_save, atomic_write_text
from hsteer.world import DEFAULT_GUIDANCE, DEFAULT_STEPS, scene

MAX_LENGTH = 16
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 32,
}
TEXT_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": MAX_LENGTH,
    "projection_dim": 128,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}
UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    # no attention at 16x16 (it triples the CPU cost); cross-attention at 8x8, 4x4 and in the mid block
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 128,
    "attention_head_dim": 4,
    "norm_num_groups": 16,
}
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


# --------------------------------------------------------------------------- tokenizer


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP-style BPE of one lower-case word (mirrors ``CLIPTokenizer.bpe``)."""
    syms = list(word[:-1]) + [word[-1] + "</w>"]
    while len(syms) > 1:
        r, i = min((ranks.get((syms[i], syms[i + 1]), 1 << 60), i) for i in range(len(syms) - 1))
        if r == 1 << 60:
            break
        a, b = syms[i], syms[i + 1]
        out, j = [], 0
        while j < len(syms):
            if j < len(syms) - 1 and syms[j] == a and syms[j + 1] == b:
                out.append(a + b)
                j += 2
            else:
                out.append(syms[j])
                j += 1
        syms = out
    return syms


def build_tokenizer_files(directory: Path, words=scene.VOCABULARY) -> None:
    """Write vocab.json / merges.txt / configs of a word-level CLIP tokenizer.

    Every world word becomes exactly one token; other text falls back to single
    characters (lower-case letters, digits, a little punctuation).
    """
    import string

    directory.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}

    def add(tok: str) -> None:
        vocab.setdefault(tok, len(vocab))

    for t in SPECIAL_TOKENS:
        add(t)
    for ch in string.ascii_lowercase + string.digits + ".,'!?-":
        add(ch)
        add(ch + "</w>")
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for _ in range(50):  # add merge chains until every word is a single token
        changed = False
        for w in words:
            pieces = _bpe(w, ranks)
            if len(pieces) > 1:
                changed = True
                cur = pieces[0]
                for p in pieces[1:]:
                    if (cur, p) not in ranks:
                        ranks[(cur, p)] = len(merges)
                        merges.append((cur, p))
                    cur += p
                    add(cur)
        if not changed:
            break
    assert all(len(_bpe(w, ranks)) == 1 for w in words)
    (directory / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    )
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": MAX_LENGTH,
                "bos_token": SPECIAL_TOKENS[0],
                "eos_token": SPECIAL_TOKENS[1],
                "unk_token": SPECIAL_TOKENS[1],
                "pad_token": SPECIAL_TOKENS[1],
                "do_lower_case": True,
                "clean_up_tokenization_spaces": True,
            },
            indent=2,
        )
    )
    (directory / "special_tokens_map.json").write_text(
        json.dumps(
            {"bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[1], "unk_token": SPECIAL_TOKENS[1],
             "pad_token": SPECIAL_TOKENS[1]},
            indent=2,
        )
    )


def load_tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(directory))
    for w in scene.VOCABULARY:
        ids = tok(w, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise RuntimeError(f"tokenizer splits world word {w!r} into {ids}")
    return tok


# --------------------------------------------------------------------------- data


def render_dataset(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``n`` (image, caption) pairs from :func:`scene.sample_example`: uint8 (n,32,32,3), captions."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, scene.SIZE, scene.SIZE, 3), dtype=np.uint8)
    captions: list[str] = []
    for i in range(n):
        cap = scene.make_caption(rng)
        shape, colour, prof, harm = scene.sample_attributes(cap, rng)
        images[i] = scene.render_array(shape, colour, prof, harm, rng)
        captions.append(cap)
    return images, captions


def _to_tensor(images_u8: np.ndarray):
    import torch

    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


# --------------------------------------------------------------------------- helpers


class _Logger:
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


def _lr_factor(step: int, frac: float, warmup: int, final: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay (in elapsed-time fraction) to ``final``."""
    w = min(1.0, (step + 1) / warmup)
    frac = min(max(frac, 0.0), 1.0)
    return w * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * frac)))


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def save_pipeline(out_dir: Path, vae, text_encoder, unet, tok_dir: Path, extra: dict | None = None) -> None:
    """Save the full pipeline folder atomically (tmp dir, then rename)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(str(tok_dir)),
        unet=unet,
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    # the sampling defaults every hsteer command reads from the model folder (hsteer.model.sampling_defaults)
    (tmp / "hsteer.json").write_text(json.dumps({"steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE}) + "\n")
    if extra is not None:
        (tmp / "training_info.json").write_text(json.dumps(extra, indent=2))
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- training


def _train_vae(images_u8: np.ndarray, minutes: float, seed: int, log, batch: int = 32, lr: float = 2e-3):
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
        f = _lr_factor(step, (time.time() - t0) / budget, warmup=100, final=0.05)
        for g in opt.param_groups:
            g["lr"] = lr * f
        x = _to_tensor(images_u8[rng.integers(0, n, size=batch)])
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
    import torch

    t0 = time.time()
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(images_u8), batch):
            d = vae.encode(_to_tensor(images_u8[i : i + batch])).latent_dist
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
        x = _to_tensor(images_u8[:n])
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    probe = scene.WorldProbe()
    got = probe.classify([Image.fromarray(r) for r in rec])
    ref = probe.classify([Image.fromarray(r) for r in images_u8[:n]])
    acc = {k: float(np.mean([a == b for a, b in zip(got[k], ref[k])])) for k in got}
    log(f"vae reconstruction probe agreement: {acc}")
    return acc


def _save_training_state(path: Path, modules: dict, opt, step: int, elapsed: float) -> None:
    """Weights, EMA weights and AdamW state in one safetensors file (no pickles), written atomically."""
    from safetensors.torch import save_file

    tensors = {f"{name}/{k}": v.detach().contiguous() for name, m in modules.items()
               for k, v in m.state_dict().items()}
    opt_state = opt.state_dict()
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"opt/{index}/{key}"] = value.detach().contiguous()
    meta = {"step": step, "elapsed": elapsed, "param_groups": opt_state["param_groups"]}
    atomic_save(path, lambda tmp: save_file(tensors, tmp, metadata={"hsteer_world_state": json.dumps(meta)}))


def _load_training_state(path: Path, modules: dict, opt) -> tuple[int, float]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["hsteer_world_state"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    for name, module in modules.items():
        prefix = f"{name}/"
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt/"):
            _, index, field = key.split("/", 2)
            state.setdefault(int(index), {})[field] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"]), float(meta["elapsed"])


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


@dataclass
class _Captions:
    """Every distinct caption tokenised once; each training image points at its caption's row."""

    ids: object  # (distinct captions, MAX_LENGTH) token ids
    of_image: object  # caption row of each image
    empty: int  # row of the empty caption (caption dropout)

    @classmethod
    def build(cls, tokenizer, captions: list[str]) -> _Captions:
        import torch

        uniq = sorted(set(captions) | {""})
        enc = tokenizer(uniq, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
        index = {c: i for i, c in enumerate(uniq)}
        return cls(enc.input_ids, torch.tensor([index[c] for c in captions]), index[""])


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
    out_dir = Path(out_dir).resolve()
    state_dir = out_dir.with_name(out_dir.name + ".state")
    state_dir.mkdir(parents=True, exist_ok=True)
    L = _Logger(out_dir.with_name(out_dir.name + ".train.log"), log)
    L(f"train_world_model out={out_dir} seed={cfg.seed} vae_minutes={cfg.vae_minutes} "
      f"unet_minutes={cfg.unet_minutes} threads={cfg.threads} n_images={cfg.n_images} batch={cfg.batch_size} "
      f"lr={cfg.lr} torch={torch.__version__}")
    tok_dir = state_dir / "tokenizer"
    build_tokenizer_files(tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    t = time.time()
    images, captions = render_dataset(cfg.n_images, cfg.seed)
    L(f"rendered {cfg.n_images} training pairs in {time.time() - t:.0f}s")
    caps = _Captions.build(tokenizer, captions)
    L(f"{len(caps.ids)} distinct captions")
    vae, info, lat_mean, lat_std = _vae_stage(images, state_dir, cfg, L)
    _unet_stage(_UNetRun(out_dir, state_dir, tok_dir, len(tokenizer), vae, info, cfg, L), lat_mean, lat_std, caps)
    return out_dir


def _vae_stage(images_u8: np.ndarray, state_dir: Path, cfg: WorldTrainSettings, L):
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


@dataclass
class _UNetRun:
    """Stage 2's fixed context: where it writes, the frozen VAE, the recipe, the log."""

    out_dir: Path
    state_dir: Path
    tok_dir: Path
    vocab_size: int
    vae: object
    info: dict
    cfg: WorldTrainSettings
    log: Callable[[str], None]


def _unet_modules(run: _UNetRun):
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
    ckpt = run.state_dir / "unet_state.safetensors"
    if cfg.resume and ckpt.exists():
        step, elapsed_before = _load_training_state(ckpt, modules, opt)
        run.log(f"resumed U-Net training at step {step} ({elapsed_before / 60:.1f} min done)")
    else:
        modules["ema_unet"].load_state_dict(unet.state_dict())
        modules["ema_text"].load_state_dict(text_encoder.state_dict())
    for name in ("ema_unet", "ema_text"):
        modules[name].requires_grad_(False).eval()
    return modules, params, opt, step, elapsed_before


def _unet_stage(run: _UNetRun, lat_mean, lat_std, caps: _Captions) -> None:
    """Stage 2: text encoder + U-Net for `unet_minutes`, snapshots of the EMA pipeline along the way."""
    import torch
    from diffusers import DDIMScheduler

    cfg, L = run.cfg, run.log
    modules, params, opt, step, elapsed_before = _unet_modules(run)
    unet, text_encoder = modules["unet"], modules["text"]
    ema_params = list(modules["ema_unet"].parameters()) + list(modules["ema_text"].parameters())
    alphas = DDIMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.float()
    ckpt = run.state_dir / "unet_state.safetensors"
    rng = np.random.default_rng(cfg.seed + 3 + step)
    budget = cfg.unet_minutes * 60.0
    t0 = time.time() - elapsed_before
    last_snap = time.time()
    running = None
    unet.train()
    text_encoder.train()

    def snapshot(final: bool = False) -> None:
        meta = {k: getattr(cfg, k) for k in ("seed", "vae_minutes", "unet_minutes")}
        meta.update({"unet_steps": step, "unet_elapsed_min": round((time.time() - t0) / 60, 2),
                     **{k: getattr(cfg, k) for k in ("batch_size", "lr", "ema_decay", "caption_dropout",
                                                     "n_images", "threads")},
                     "final": final, **run.info})
        save_pipeline(run.out_dir, run.vae, modules["ema_text"], modules["ema_unet"], run.tok_dir, meta)
        _save_training_state(ckpt, modules, opt, step, time.time() - t0)
        L(f"snapshot at step {step} -> {run.out_dir} ({_dir_size(run.out_dir) / 1e6:.2f} MB)")

    while time.time() - t0 < budget:
        f = _lr_factor(step, (time.time() - t0) / budget, warmup=300, final=0.1)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f
        loss, gn = _unet_step(unet, text_encoder, opt, params, alphas, lat_mean, lat_std, caps, rng, cfg)
        step += 1
        d = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema_params, params):
                pe.lerp_(p.detach(), 1 - d)
        if not math.isfinite(loss):
            raise TrainingDivergedError(f"the world model's loss diverged at step {step}; lower --lr")
        running = loss if running is None else 0.99 * running + 0.01 * loss
        if step % 100 == 0:
            el = time.time() - t0
            L(f"unet step {step} loss(ema) {running:.4f} gn {gn:.2f} lr {cfg.lr * f:.2e} "
              f"{el / 60:.1f}/{cfg.unet_minutes} min, {cfg.batch_size * step / el:.0f} img/s")
        if time.time() - last_snap > cfg.snapshot_every_minutes * 60:
            snapshot()
            last_snap = time.time()
    snapshot(final=True)
    L(f"done: {step} U-Net steps; model folder {run.out_dir} {_dir_size(run.out_dir) / 1e6:.2f} MB")


def _unet_step(unet, text_encoder, opt, params, alphas, lat_mean, lat_std, caps: _Captions, rng,
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
