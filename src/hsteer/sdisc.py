"""SDisc (Li et al., CVPR 2024), the baseline: learn c from images of the target prompt.

1. Generate `sdisc_images` images of the target prompt with the plain model (kept as latents,
   cached in the run folder so a rerun does not regenerate them). For safety concepts (no target,
   a negative prompt), the images are the neutral prompt's, generated with the negative prompt.
2. Learn c with the plain denoising loss conditioned on the *neutral* prompt,
   || eps(x_t; h + c, y_neu, t) - eps ||^2, t ~ U(0, T), for `sdisc_epochs` epochs (Adam).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hsteer import objectives
from hsteer.bank import Concept
from hsteer.models import default_resolution, pipeline_hspace_shape
from hsteer.sampling import DDIMSchedule, encode_text


def target_latents(pipe, config, run_dir: Path | None, progress: bool) -> torch.Tensor:
    """Latents of images generated from the target prompt by the unmodified model (seeded, cached)."""
    key = hashlib.sha256(repr((config.target, config.neutral, config.negative, config.sdisc_images, config.seed,
                                config.steps, config.target_guidance)).encode()).hexdigest()[:12]
    cache = run_dir / f"sdisc_latents_{key}.safetensors" if run_dir else None
    if cache is not None and cache.is_file():
        return load_file(str(cache))["latents"].to(pipe.unet.device)
    height, width = (config.height, config.width) if config.height and config.width else default_resolution(pipe)
    from tqdm.auto import tqdm

    chunks = []
    batch = max(1, config.batch_size)
    for start in tqdm(range(0, config.sdisc_images, batch), disable=not progress, desc="sdisc: target images"):
        n = min(batch, config.sdisc_images - start)
        gens = [torch.Generator("cpu").manual_seed(config.seed * 100_003 + start + i) for i in range(n)]
        negative = [config.negative] * n if config.negative else None
        out = pipe([config.target or config.neutral] * n, negative_prompt=negative, num_inference_steps=config.steps,
                   guidance_scale=config.target_guidance, height=height, width=width, generator=gens,
                   output_type="latent")
        chunks.append(out.images.detach())
    latents = torch.cat(chunks)
    if cache is not None:
        tmp = cache.with_suffix(".tmp")
        save_file({"latents": latents.cpu().contiguous()}, str(tmp))
        tmp.replace(cache)
    return latents


def train_sdisc(pipe, config, *, run_dir: str | Path | None = None, progress: bool = True):
    from hsteer.training import TrainResult, _check_finite, concept_meta

    unet = pipe.unet
    unet.requires_grad_(False)
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    height, width = (config.height, config.width) if config.height and config.width else default_resolution(pipe)
    shape = pipeline_hspace_shape(pipe, height, width)
    began = time.perf_counter()
    x0_all = target_latents(pipe, config, run_dir, progress)
    schedule = DDIMSchedule(pipe.scheduler, config.steps, unet.device)
    y_neu = encode_text(pipe, [config.neutral], height, width)
    init = torch.Generator("cpu").manual_seed(config.seed)
    c = torch.nn.Parameter((config.init_std * torch.randn(shape, generator=init)).to(unet.device))
    optimizer = torch.optim.Adam([c], lr=config.lr)
    num_train = pipe.scheduler.config.num_train_timesteps
    rows = []
    g = torch.Generator("cpu").manual_seed(config.seed + 1)
    from tqdm.auto import tqdm

    it = 0
    for _ in tqdm(range(config.sdisc_epochs), disable=not progress, desc=f"train {config.concept} (sdisc)"):
        order = torch.randperm(len(x0_all), generator=g)
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            x0 = x0_all[idx.to(x0_all.device)]
            noise = torch.randn(x0.shape, generator=g).to(x0)
            t = torch.randint(0, num_train, (len(idx),), generator=g).to(unet.device)
            loss = objectives.sdisc_loss(unet, schedule, x0, noise, t, c, y_neu.expand(len(idx)))
            _check_finite(loss, "loss", it, config.lr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            rows.append({"iteration": it, "loss": loss.item()})
            it += 1
    concept = Concept(config.concept, config.group, "sdisc", {"c": c.detach().cpu().float().clone()},
                      meta=concept_meta(pipe, config, shape))
    if run_dir is not None:
        from hsteer.training import _LossLog

        log = _LossLog(run_dir)
        log.rows = rows
        log.flush()
        log.plot()
    return TrainResult(concept, rows, time.perf_counter() - began, 0, run_dir)
