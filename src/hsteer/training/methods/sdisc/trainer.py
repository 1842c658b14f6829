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
from hsteer.fileio import atomic_save
from hsteer.hspace.bank import Concept
from hsteer.model.diffusion import DDIMSchedule, encode_text
from hsteer.model.geometry import pipeline_hspace_shape, resolve_resolution
from hsteer.seeding import sdisc_image_seed, sdisc_order_seed
from hsteer.training.methods.sdisc.config import SdiscConfig
from hsteer.training.state import (
    IterationLosses,
    LossLog,
    TrainResult,
    concept_meta,
    init_params,
    make_optimizers,
    optimise,
    stored_tensors,
)


def target_latents(pipe, config: SdiscConfig, run_dir: Path | None, progress: bool) -> torch.Tensor:
    """Latents of images generated from the target prompt by the unmodified model (seeded, cached)."""
    key = hashlib.sha256(repr((config.target, config.neutral, config.negative, config.sdisc_images, config.seed,
                                config.steps, config.target_guidance)).encode()).hexdigest()[:12]
    cache = run_dir / f"sdisc_latents_{key}.safetensors" if run_dir else None
    if cache is not None and cache.is_file():
        return load_file(str(cache))["latents"].to(pipe.unet.device)
    height, width = resolve_resolution(pipe, config.height, config.width)
    from tqdm.auto import tqdm

    chunks = []
    batch = max(1, config.batch_size)
    for start in tqdm(range(0, config.sdisc_images, batch), disable=not progress, desc="sdisc: target images"):
        n = min(batch, config.sdisc_images - start)
        gens = [torch.Generator("cpu").manual_seed(sdisc_image_seed(config.seed, start + i)) for i in range(n)]
        negative = [config.negative] * n if config.negative else None
        out = pipe([config.target or config.neutral] * n, negative_prompt=negative, num_inference_steps=config.steps,
                   guidance_scale=config.target_guidance, height=height, width=width, generator=gens,
                   output_type="latent")
        chunks.append(out.images.detach())
    latents = torch.cat(chunks)
    if cache is not None:
        atomic_save(cache, lambda tmp: save_file({"latents": latents.cpu().contiguous()}, tmp))
    return latents


def train_sdisc(pipe, config: SdiscConfig, *, run_dir: str | Path | None = None, progress: bool = True,
                **_: object) -> TrainResult:
    """Learn an SDisc concept; the run folder keeps the target latents and the loss log (no resume: it is fast)."""
    from tqdm.auto import tqdm

    unet = pipe.unet
    unet.requires_grad_(False)
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    height, width = resolve_resolution(pipe, config.height, config.width)
    shape = pipeline_hspace_shape(pipe, height, width)
    began = time.perf_counter()
    x0_all = target_latents(pipe, config, run_dir, progress)
    schedule = DDIMSchedule(pipe.scheduler, config.steps, unet.device)
    y_neu = encode_text(pipe, [config.neutral], height, width)
    params = init_params(config, shape, unet.device)
    c, optimizer = params["c"], make_optimizers(config, params)["c"]
    num_train = pipe.scheduler.config.num_train_timesteps
    rows = []
    g = torch.Generator("cpu").manual_seed(sdisc_order_seed(config.seed))
    with objectives.HeldHook(unet) as held:
        for _ in tqdm(range(config.sdisc_epochs), disable=not progress, desc=f"train {config.concept} (sdisc)"):
            order = torch.randperm(len(x0_all), generator=g)
            for start in range(0, len(order), config.batch_size):
                idx = order[start:start + config.batch_size]
                x0 = x0_all[idx.to(x0_all.device)]
                noise = torch.randn(x0.shape, generator=g).to(x0)
                t = torch.randint(0, num_train, (len(idx),), generator=g).to(unet.device)
                x_t = objectives.sdisc_noised(schedule, x0, noise, t)
                eps_c = objectives.eps(unet, schedule, x_t, t, y_neu.expand(len(idx)), c, held=held)
                loss, losses = objectives.sdisc_loss(eps_c, noise), IterationLosses(len(rows))
                losses.add("loss", loss, "loss", config.lr)
                optimise(optimizer, loss)
                rows.append(losses.row())
    seconds = time.perf_counter() - began  # training time: the loss plot below is reporting, not training
    concept = Concept(config.concept, config.group, "sdisc", stored_tensors(config, {"c": c}),
                      meta=concept_meta(pipe, config, shape))
    if run_dir is not None:
        log = LossLog(run_dir, rows)
        log.flush()
        log.plot()
    return TrainResult(concept, rows, seconds, 0, run_dir)
