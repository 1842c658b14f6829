"""CoDSMa and RespoDiff: concepts learned at latents reached by the reverse process (no backprop through it).

Each iteration draws, per sample, a step k of the DDIM schedule, brings a latent to z_t with the neutral
prompt and the current concept (no gradient), and takes one optimiser step on the method's objective at
the timestep z_t actually has. Two ways to reach z_t:

- reference: the papers' procedure, a fresh reverse process per sample down to its own random step k;
- fast (default): B reverse processes at staggered steps, advanced one step per iteration, so that every
  step of every trajectory is a training signal; the sampling step reuses the iteration's U-Net passes.

Both modes compute the frozen predictions with `objectives.frozen_eps` and the target with
`objectives.guided_target`, then take the method's optimiser step (`Method.step`, in the method's folder
under `hsteer.training.methods`), which computes its losses with `objectives.*_loss`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hsteer import objectives
from hsteer.errors import HsteerError
from hsteer.fileio import atomic_write_text
from hsteer.steering.bank import Concept
from hsteer.steering.scoped import active_hooks
from hsteer.steering.siteshape import site_meta
from hsteer.model.denoisers import Denoiser
from hsteer.model.diffusion import (
    TextCondition,
    encode_text,
    encode_unconditional,
    guidance_combination,
    reverse_to_steps,
)
from hsteer.training.config import TrainConfig
from hsteer.training.plan import TrainPlan, resolve_plan
from hsteer.training.state import (
    Checkpoint,
    IterationLosses,
    LossLog,
    TrainResult,
    concept_meta,
    init_params,
    make_optimizers,
    stored_tensors,
)
from hsteer.seeding import iteration_generator, pool_seed

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

Callback = Callable[[int, dict[str, float]], None]

#: A method's optimiser step at (z_t, t, eps_target), adding its losses to the iteration's: returns the
#: steered neutral prediction made before the step, when the step made one (the fast mode's sampling
#: reuses it).
ObjectiveStep = Callable[["StepContext", torch.Tensor, torch.Tensor, torch.Tensor, IterationLosses],
                         "torch.Tensor | None"]


@dataclass
class Conditions:
    """Text conditions of one batch: neutral, empty, and the target's positive and base branches."""

    neutral: TextCondition
    empty: TextCondition
    positive: TextCondition
    base: TextCondition
    base_is_empty: bool

    @classmethod
    def encode(cls, pipe: Pipeline, config: TrainConfig, height: int, width: int) -> Conditions:
        """Encode the run's prompts once, each repeated to the batch size (with `pairs`, row i's own pair)."""
        B = config.batch_size
        y_empty = encode_unconditional(pipe, height, width)
        y_base = encode_text(pipe, [config.negative], height, width) if config.negative else y_empty
        if config.pairs:
            rows = torch.arange(B) % len(config.pairs)
            y_neu = encode_text(pipe, [n for n, _ in config.pairs], height, width).select(rows)
            y_pos = encode_text(pipe, [t for _, t in config.pairs], height, width).select(rows)
            return cls(y_neu, y_empty.expand(B), y_pos, y_base.expand(B), base_is_empty=config.negative is None)
        y_neu = encode_text(pipe, [config.neutral], height, width)
        y_pos = encode_text(pipe, [config.target], height, width) if config.target else y_neu
        return cls(y_neu.expand(B), y_empty.expand(B), y_pos.expand(B), y_base.expand(B),
                   base_is_empty=config.negative is None)


@dataclass
class StepContext:
    """What every iteration uses: the frozen denoiser, its schedule (DDIM or flow), the run's settings and
    state. `unet` is the bare denoiser module (U-Net or transformer), where the steering hook lives;
    `denoiser` the same model as training calls it (`hsteer.model.denoisers.Denoiser`: its prediction,
    site and latents); `held` the run's hold on the steering hook (`objectives.HeldHook`) while it runs;
    `step` the method's optimiser step (`Method.step`)."""

    unet: torch.nn.Module
    schedule: object
    config: TrainConfig
    params: dict[str, torch.nn.Parameter]
    optimizers: dict[str, torch.optim.Optimizer]
    conds: Conditions
    #: Rows of this iteration inside the step window (None: no window, every row).
    inside: torch.Tensor | None = None
    denoiser: Denoiser | None = None
    held: objectives.HeldHook | None = None
    step: ObjectiveStep | None = None

    def __post_init__(self) -> None:
        if self.denoiser is None:
            raise HsteerError("a StepContext needs its Denoiser; build it with step_context(pipe, config)")

    def current(self) -> torch.Tensor:
        """What the concept adds to h now (RespoDiff: RAM + SAM), detached."""
        return sum(p.detach() for p in self.params.values())

    def eps(self, z_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """eps(z_t; h + c, y_neu, t), with c only on the rows inside the window."""
        if c is not None and self.inside is not None:
            c = c.unsqueeze(0) * self.inside.view(-1, *(1,) * c.dim()).to(c.dtype)
        return objectives.eps(self.denoiser, self.schedule, z_t, t, self.conds.neutral, c, held=self.held)

    def rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """The rows a loss is taken over: those inside the window."""
        return tensor if self.inside is None else tensor[self.inside]

    def window_steps(self) -> tuple[int, int]:
        """[first, last + 1) of the steps inside the window (every step without one)."""
        K = self.schedule.steps
        lo, hi = self.config.window or (0.0, 1.0)
        return math.ceil(lo * K - 1e-9), math.ceil(hi * K - 1e-9)

    @property
    def sampling_cfg(self) -> float:
        """The guidance of the reverse process: the config's, or 1 on FLUX (its guidance is an input)."""
        return self.denoiser.sampling_cfg(self.config.sampling_guidance)

    def mark_inside(self, k: torch.Tensor) -> None:
        """Mark which of the steps `k` lie inside the config's step window (all, without a window)."""
        if self.config.window is not None:
            first, end = self.window_steps()
            self.inside = (k >= first) & (k < end)

    def reach(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The reverse process from noise `x` to step k[i] per row, the current concept applied in the window."""
        first, end = self.window_steps()
        phases = [(0, first, False), (first, end, True), (end, self.schedule.steps, False)]
        cfg = self.sampling_cfg
        for a, b, steered in phases:
            if a >= b:
                continue
            with objectives.steering(self.denoiser, self.current() if steered else None, held=self.held,
                                     name="hsteer-sample", guided=cfg != 1.0):
                x = reverse_to_steps(self.denoiser, self.schedule, x, k.clamp(min=a, max=b), self.conds.neutral,
                                     self.conds.empty, cfg, start=a)
        return x


# --- the two ways to reach z_t ---------------------------------------------------------------------------


def reference_iteration(ctx: StepContext, g: torch.Generator, latent_shape, it: int) -> dict[str, float]:
    """The papers' procedure: a fresh reverse process per sample down to its own random step k."""
    config, unet, schedule, conds = ctx.config, ctx.denoiser, ctx.schedule, ctx.conds
    B = config.batch_size
    first, end = ctx.window_steps()  # k is drawn inside the window: only there does the concept act
    k = (first + torch.randint(0, end - first, (B,), generator=g)).to(unet.device)
    x_T = (torch.randn((B, *latent_shape), generator=g) * schedule.init_noise_sigma).to(unet.device, unet.dtype)
    z_t = ctx.reach(x_T, k)
    t = schedule.timesteps[k]
    eps_base, eps_pos = objectives.frozen_eps(unet, schedule, z_t, t, [conds.base, conds.positive])
    eps_target = objectives.guided_target(eps_pos, eps_base, config.target_guidance)
    losses = IterationLosses(it)
    ctx.step(ctx, z_t, t, eps_target, losses)
    return losses.row()


def fast_iteration(ctx: StepContext, pool: TrajectoryPool, g: torch.Generator, it: int) -> dict[str, float]:
    """Trajectory reuse: every DDIM step of B staggered reverse processes is a training signal.

    The sampling step's unconditional pass (unsteered) doubles as the target's empty-prompt branch; a
    step that returns its steered neutral prediction (CoDSMa's, run with gradient) spares the sampling
    step's conditional pass.
    """
    config, conds = ctx.config, ctx.conds
    z_t, k = pool.current()
    ctx.mark_inside(k)
    t = ctx.schedule.timesteps[k]
    prompts = [conds.empty, conds.positive] + ([] if conds.base_is_empty else [conds.base])
    frozen = objectives.frozen_eps(ctx.denoiser, ctx.schedule, z_t, t, prompts)
    eps_uncond, eps_pos = frozen[0], frozen[1]
    eps_base = eps_uncond if conds.base_is_empty else frozen[2]
    eps_target = objectives.guided_target(eps_pos, eps_base, config.target_guidance)
    losses = IterationLosses(it)
    if ctx.inside is not None and not ctx.inside.any():  # no trajectory in the window: only advance them
        losses.add("loss", torch.tensor(float("nan")))
        eps_cond = None
    else:
        eps_cond = ctx.step(ctx, z_t, t, eps_target, losses)
    if eps_cond is None:  # the step changed the concept before making a steered prediction: make it now
        with torch.no_grad():
            eps_cond = ctx.eps(z_t, t, ctx.current())
    pool.advance(guidance_combination(eps_uncond, eps_cond, ctx.sampling_cfg), g)
    return losses.row()


class TrajectoryPool:
    """B reverse processes at staggered steps; a finished one restarts from fresh noise.

    At the start, trajectory i is brought to step i * K / B by a warm-up reverse process, so that every
    batch spans the whole schedule and each step is visited equally often.
    """

    def __init__(self, schedule, size: int, latent_shape, device, dtype) -> None:
        self.schedule, self.size, self.latent_shape = schedule, size, latent_shape
        self.device, self.dtype = device, dtype
        self.x = torch.empty(0)
        self.k = torch.empty(0, dtype=torch.long)

    def _noise(self, n: int, g: torch.Generator) -> torch.Tensor:
        x = torch.randn((n, *self.latent_shape), generator=g) * self.schedule.init_noise_sigma
        return x.to(self.device, self.dtype)

    def start(self, ctx: StepContext) -> None:
        """Start the pool: its trajectories spread evenly over the steps, each reached from seeded noise."""
        g = torch.Generator("cpu").manual_seed(pool_seed(ctx.config.seed))
        self.k = (torch.arange(self.size) * self.schedule.steps // self.size).to(self.device)
        self.x = ctx.reach(self._noise(self.size, g), self.k)

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the pool from a checkpoint's `state()`."""
        self.x, self.k = state["pool/x"].to(self.device, self.dtype), state["pool/k"].to(self.device)

    def current(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The pool's latents and their steps, `(x, k)`."""
        return self.x, self.k

    def advance(self, eps: torch.Tensor, g: torch.Generator) -> None:
        """Move every trajectory one step with the prediction `eps`; those that finish restart from fresh
        noise drawn with `g`."""
        self.x = self.schedule.step(eps, self.x, self.k)
        self.k = self.k + 1
        done = self.k >= self.schedule.steps
        if done.any():
            self.x[done] = self._noise(int(done.sum()), g)
            self.k[done] = 0

    def state(self) -> dict[str, torch.Tensor]:
        """The pool as checkpoint tensors (on the CPU)."""
        return {"pool/x": self.x.detach().cpu().contiguous(), "pool/k": self.k.detach().cpu().contiguous()}


# --- the run ------------------------------------------------------------------------------------------------


def train_steered(pipe: Pipeline, plan: TrainPlan, *, resume: bool = False, checkpoint_every: int = 100,
                  progress: bool = True, callback: Callback | None = None) -> TrainResult:
    """Learn a CoDSMa or RespoDiff concept on `pipe` as `plan` says (made by `hsteer.training.train_concept`,
    which checked it: it is trusted here); checkpoints and the loss log go to the plan's run folder."""
    config, site, run_dir = plan.config, plan.site, plan.run_dir
    module = site.denoiser(pipe)
    if active_hooks(module, site):
        raise HsteerError(f"the pipeline is being steered ({', '.join(active_hooks(module, site))}); remove its "
                          "hooks before training")
    ctx, shape, latent_shape = step_context(pipe, plan)
    unet = ctx.denoiser
    params = ctx.params
    ckpt, log, start = _open_run(run_dir, config, ctx, resume)
    rows = log.rows if log is not None else []
    began = time.perf_counter()
    pool = None
    with objectives.HeldHook(unet) as ctx.held:
        if config.mode == "fast":
            pool = TrajectoryPool(ctx.schedule, config.batch_size, latent_shape, unet.device, unet.dtype)
            if start and ckpt is not None:
                pool.load(ckpt.extra)
            else:
                pool.start(ctx)
        _loop(ctx, pool, latent_shape, start, rows, ckpt, log, checkpoint_every, progress, callback)
    ctx.held = None
    seconds = time.perf_counter() - began  # training time: the loss plot below is reporting, not training
    if log is not None:
        log.flush()
        log.plot()
    concept = Concept(config.concept, config.group, config.objective,
                      stored_tensors(config, params),
                      meta={**concept_meta(pipe, config, shape), **site_meta(ctx.denoiser.site)})
    return TrainResult(concept, rows, seconds, start,
                       Path(run_dir) if run_dir is not None else None)


def step_context(pipe: Pipeline, plan: TrainPlan | TrainConfig) -> tuple[StepContext, tuple[int, ...],
                                                                         tuple[int, ...]]:
    """A run's start: the frozen denoiser at the plan's site, its schedule, the seeded concept tensors with
    their optimisers and the encoded prompts; with the site's shape and the latent shape at the plan's
    resolution. A config (studies and tests that build a context directly) is resolved into its plan here
    (`resolve_plan`, unchecked as before); a plan is trusted as it is."""
    if not isinstance(plan, TrainPlan):
        plan = resolve_plan(pipe, plan)
    config, height, width = plan.config, plan.height, plan.width
    den = Denoiser(pipe, height, width, plan.site, guidance=config.sampling_guidance)
    den.module.requires_grad_(False)
    latent_shape = den.latent_shape()
    params = init_params(config, plan.shape, den.device)
    ctx = StepContext(den.module, den.schedule(config.steps), config, params, make_optimizers(config, params),
                      Conditions.encode(pipe, config, height, width), denoiser=den, step=plan.method.step)
    return ctx, plan.shape, latent_shape


def _open_run(run_dir, config: TrainConfig, ctx: StepContext, resume: bool):
    """The run folder's checkpoint and loss log (None without a folder) and the iteration to start at."""
    if run_dir is None:
        return None, None, 0
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt, log, start = Checkpoint(run_dir), LossLog(run_dir), 0
    if resume and ckpt.path.is_file():
        start = ckpt.load(config, ctx.params, ctx.optimizers)
        log.restore(start)
    atomic_write_text(run_dir / "config.json", json.dumps(asdict(config), indent=2))
    return ckpt, log, start


def _loop(ctx: StepContext, pool: TrajectoryPool | None, latent_shape, start: int, rows: list[dict[str, float]],
          ckpt: Checkpoint | None, log: LossLog | None, checkpoint_every: int, progress: bool,
          callback: Callback | None) -> None:
    """Iterations `start` .. `config.iterations - 1`, appending each one's losses to `rows`."""
    from tqdm.auto import tqdm

    config = ctx.config
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, disable=not progress,
               desc=f"train {config.concept} ({config.objective})", unit="it")
    for it in bar:
        g = iteration_generator(config.seed, it)
        if pool is None:
            row = reference_iteration(ctx, g, latent_shape, it)
        else:
            row = fast_iteration(ctx, pool, g, it)
        rows.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4g}")
        if callback is not None:
            callback(it, row)
        done = it + 1
        if ckpt is not None and (done % checkpoint_every == 0 or done == config.iterations):
            ckpt.save(done, config, ctx.params, ctx.optimizers, pool.state() if pool is not None else None)
            log.flush()
    bar.close()
