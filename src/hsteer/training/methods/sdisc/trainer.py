"""SDisc (Li et al., CVPR 2024), the baseline: learn c from images of the target prompt.

1. Generate `sdisc_images` images of the target prompt with the plain model (kept as latents,
   cached in the run folder so a rerun does not regenerate them). For safety concepts (no target,
   a negative prompt), the images are the neutral prompt's, generated with the negative prompt.
2. Learn c with the plain denoising loss conditioned on the *neutral* prompt,
   || eps(x_t; h + c, y_neu, t) - eps ||^2, t ~ U(0, T), for `sdisc_epochs` epochs (Adam).

On a flow model (SD3, FLUX, SANA) the same loss is the flow-matching one, on what the model predicts:
x_t = (1 - sigma) x0 + sigma eps at a step of its own schedule, || v(x_t; h + c, y_neu, t) - (eps - x0) ||^2.
It learns at any site (a transformer block, the text site, a set of sites), as CoDSMa and RespoDiff do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import hashlib
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hsteer import objectives
from hsteer.fileio import atomic_save
from hsteer.steering.bank import Concept
from hsteer.steering.siteshape import site_meta
from hsteer.model.denoisers import Denoiser, call_defaults
from hsteer.model.diffusion import encode_text
from hsteer.model.geometry import resolve_resolution
from hsteer.seeding import sdisc_image_seed, sdisc_order_seed
from hsteer.training.methods.sdisc.config import SdiscConfig
from hsteer.training.plan import TrainPlan
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

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


def target_latents(pipe: Pipeline, config: SdiscConfig, run_dir: Path | None, progress: bool,
                   size: tuple[int, int] | None = None) -> torch.Tensor:
    """Latents of images generated from the target prompt by the unmodified model (seeded, cached), at
    `size` (height, width: the run's plan's; None: resolved here from the config)."""
    key = hashlib.sha256(repr((config.target, config.neutral, config.negative, config.sdisc_images, config.seed,
                                config.steps, config.target_guidance)).encode()).hexdigest()[:12]
    cache = run_dir / f"sdisc_latents_{key}.safetensors" if run_dir else None
    if cache is not None and cache.is_file():
        return load_file(str(cache))["latents"].to(Denoiser(pipe).device)
    height, width = size or resolve_resolution(pipe, config.height, config.width)
    from tqdm.auto import tqdm

    chunks = []
    batch = max(1, config.batch_size)
    for start in tqdm(range(0, config.sdisc_images, batch), disable=not progress, desc="sdisc: target images"):
        n = min(batch, config.sdisc_images - start)
        gens = [torch.Generator("cpu").manual_seed(sdisc_image_seed(config.seed, start + i)) for i in range(n)]
        negative = {"negative_prompt": [config.negative] * n} if config.negative else {}  # SANA refuses None
        out = pipe([config.target or config.neutral] * n, **negative, num_inference_steps=config.steps,
                   guidance_scale=config.target_guidance, height=height, width=width, generator=gens,
                   output_type="latent", **call_defaults(pipe))
        chunks.append(out.images.detach())
    latents = torch.cat(chunks)
    if cache is not None:
        atomic_save(cache, lambda tmp: save_file({"latents": latents.cpu().contiguous()}, tmp))
    return latents


def train_sdisc(pipe: Pipeline, plan: TrainPlan, *, progress: bool = True, **_: object) -> TrainResult:
    """Learn an SDisc concept as `plan` says (checked by `hsteer.training.train_concept`: trusted here); the
    plan's run folder keeps the target latents and the loss log (no resume: it is fast)."""
    from tqdm.auto import tqdm

    config, site, shape, height, width = plan.config, plan.site, plan.shape, plan.height, plan.width
    run_dir = plan.run_dir
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    den = Denoiser(pipe, height, width, site)
    den.module.requires_grad_(False)
    began = time.perf_counter()
    x0_all = target_latents(pipe, config, run_dir, progress, (height, width))
    schedule = den.schedule(config.steps)
    y_neu = encode_text(pipe, [config.neutral], height, width)
    params = init_params(config, shape, den.device)
    c, optimizer = params["c"], make_optimizers(config, params)["c"]
    rows = []
    g = torch.Generator("cpu").manual_seed(sdisc_order_seed(config.seed))
    with objectives.HeldHook(den) as held:
        for _ in tqdm(range(config.sdisc_epochs), disable=not progress, desc=f"train {config.concept} (sdisc)"):
            order = torch.randperm(len(x0_all), generator=g)
            for start in range(0, len(order), config.batch_size):
                x0 = x0_all[order[start:start + config.batch_size].to(x0_all.device)]
                x_t, t, target = _noised(pipe, schedule, x0, g)
                eps_c = objectives.eps(den, schedule, x_t, t, y_neu.expand(len(x0)), c, held=held)
                loss, losses = objectives.sdisc_loss(eps_c, target), IterationLosses(len(rows))
                losses.add("loss", loss, "loss", config.lr)
                optimise(optimizer, loss)
                rows.append(losses.row())
    seconds = time.perf_counter() - began  # training time: the loss plot below is reporting, not training
    concept = Concept(config.concept, config.group, "sdisc", stored_tensors(config, {"c": c}),
                      meta={**concept_meta(pipe, config, shape), **site_meta(site)})
    if run_dir is not None:
        log = LossLog(run_dir, rows)
        log.flush()
        log.plot()
    return TrainResult(concept, rows, seconds, 0, run_dir)


def _noised(pipe, schedule, x0: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, t, what the prediction should be): DDIM noise at t ~ U(0, T) and its epsilon; on a flow model a
    point of the straight path at a step of its schedule, and the velocity eps - x0."""
    noise = torch.randn(x0.shape, generator=g).to(x0)
    if getattr(schedule, "prediction_type", None) == "flow":
        k = torch.randint(0, schedule.steps, (len(x0),), generator=g).to(x0.device)
        sigma = schedule.sigmas[k].view(-1, *(1,) * (x0.dim() - 1)).to(x0.dtype)
        return (1 - sigma) * x0 + sigma * noise, schedule.timesteps[k], noise - x0
    t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (len(x0),), generator=g).to(x0.device)
    return objectives.sdisc_noised(schedule, x0, noise, t), t, noise
