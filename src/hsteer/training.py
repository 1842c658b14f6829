"""Learning concepts: one trainer for CoDSMa and RespoDiff (and SDisc, which trains on images).

Each iteration draws, per sample, a step k of the DDIM schedule, runs the reverse process from noise
with the neutral prompt and the current concept (no gradient) down to z_t, and takes one optimiser
step on the objective evaluated at the timestep z_t actually has.

Randomness of iteration i depends only on (seed, i), so a run resumed from a checkpoint ends exactly
where an uninterrupted run ends. Checkpoints and the loss log are written atomically.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hsteer import objectives
from hsteer.bank import Concept, ConceptBank
from hsteer.fileio import atomic_save, atomic_write_text
from hsteer.errors import BankError, HsteerError, TrainingDivergedError
from hsteer.models import default_resolution, pipeline_hspace_shape, unet_fingerprint
from hsteer.sampling import DDIMSchedule, TextCondition, encode_text, encode_unconditional, reverse_to_steps
from hsteer.steering import SteeringConfig, active_hooks, steer

OBJECTIVES = ("codsma", "respodiff", "sdisc")
MODULES = {"codsma": ("c",), "respodiff": ("ram", "sam"), "sdisc": ("c",)}
MODES = ("fast", "reference")


@dataclass
class TrainConfig:
    """Everything that decides a concept; stored in the bank with it.

    target: the target prompt (fairness: "a woman"); negative: a prompt to steer away from
    (safety: "violence"); at least one is needed. The target noise is
    eps(base) + target_guidance * (eps(positive) - eps(base)) with positive = target or neutral,
    base = negative or the empty prompt.
    """

    concept: str
    group: str
    neutral: str
    target: str | None = None
    negative: str | None = None
    objective: str = "codsma"
    iterations: int = 1000
    batch_size: int = 8
    steps: int = 50
    lr: float = 0.05
    target_guidance: float = 4.0
    sampling_guidance: float = 3.0
    seed: int = 0
    init_std: float = 0.0
    mode: str = "fast"
    height: int | None = None
    width: int | None = None
    # RespoDiff
    lr_sam: float = 1e-3
    lam: float = 0.5
    # SDisc
    sdisc_images: int = 64
    sdisc_epochs: int = 20

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise HsteerError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if not self.neutral or not self.neutral.strip():
            raise HsteerError("the neutral prompt is empty; pass --neutral, e.g. 'a photo of a person'")
        if self.target is not None and not self.target.strip():
            raise HsteerError("the target prompt is empty; pass a non-empty --target, e.g. 'a photo of a woman'")
        if self.negative is not None and not self.negative.strip():
            raise HsteerError("the negative prompt is empty; pass a non-empty --negative, e.g. 'violence'")
        if self.mode not in MODES:
            raise HsteerError(f"unknown training mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.target is None and self.negative is None:
            raise HsteerError("give a target prompt (--target) or a negative prompt (--negative)")
        for name in ("iterations", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise HsteerError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.lr_sam > 0):
            raise HsteerError("learning rates must be > 0")

    @property
    def modules(self) -> tuple[str, ...]:
        return MODULES[self.objective]

    def resume_key(self) -> dict[str, Any]:
        """The settings a checkpoint must share to be resumed (iterations may grow)."""
        return {k: v for k, v in asdict(self).items() if k != "iterations"}


@dataclass
class TrainResult:
    concept: Concept
    losses: list[dict[str, float]]
    seconds: float
    resumed_from: int = 0
    run_dir: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def run_dir_for(bank_path: str | Path, concept: str) -> Path:
    """Where checkpoints and loss logs of `concept` live: beside the bank."""
    bank_path = Path(bank_path)
    return bank_path.parent / f"{bank_path.stem}.runs" / concept


def _iteration_generator(seed: int, iteration: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed * 1_000_003 + iteration)


class _Checkpoint:
    """Concept tensors + Adam states + progress, in one safetensors file (no pickles)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "checkpoint.safetensors"
        self.extra: dict[str, torch.Tensor] = {}

    def save(self, iteration: int, config: TrainConfig, params: dict[str, torch.Tensor],
             optimizers: dict[str, torch.optim.Optimizer], pool: _TrajectoryPool | None = None) -> None:
        tensors = {f"param/{k}": v.detach().cpu().contiguous() for k, v in params.items()}
        if pool is not None:
            tensors.update(pool.state())
        steps = {}
        for name, opt in optimizers.items():
            state = opt.state_dict()["state"].get(0, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    tensors[f"adam/{name}/{key}"] = state[key].detach().cpu().contiguous()
            if "step" in state:
                steps[name] = float(state["step"])
        meta = {"iteration": iteration, "config": config.resume_key(), "adam_steps": steps}
        atomic_save(self.path, lambda tmp: save_file(tensors, tmp, metadata={"hsteer_checkpoint": json.dumps(meta)}))

    def load(self, config: TrainConfig, params: dict[str, torch.Tensor],
             optimizers: dict[str, torch.optim.Optimizer]) -> int:
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                meta = json.loads(handle.metadata()["hsteer_checkpoint"])
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
            raise BankError(f"checkpoint {self.path} is corrupt ({exc}); delete it to start over") from None
        if meta["config"] != json.loads(json.dumps(config.resume_key())):
            changed = sorted(k for k, v in config.resume_key().items() if meta["config"].get(k) != v)
            raise HsteerError(f"checkpoint {self.path} was made with other settings ({', '.join(changed)}); "
                              "use the same settings to resume, or drop --resume to start over")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(tensors[f"param/{k}"].to(p.device, p.dtype))
        self.extra = {k: v for k, v in tensors.items() if k.startswith("pool/")}
        for name, opt in optimizers.items():
            if name not in meta["adam_steps"]:
                continue
            state = opt.state_dict()
            p = opt.param_groups[0]["params"][0]
            state["state"] = {0: {"step": torch.tensor(meta["adam_steps"][name]),
                                  "exp_avg": tensors[f"adam/{name}/exp_avg"].to(p.device),
                                  "exp_avg_sq": tensors[f"adam/{name}/exp_avg_sq"].to(p.device)}}
            opt.load_state_dict(state)
        return int(meta["iteration"])


class _LossLog:
    """losses.jsonl, rewritten atomically at each checkpoint and at the end."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "losses.jsonl"
        self.rows: list[dict[str, float]] = []

    def restore(self, up_to: int) -> None:
        if self.path.is_file():
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            self.rows = [r for r in rows if r["iteration"] < up_to]

    def flush(self) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def plot(self) -> Path | None:
        if not self.rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        keys = [k for k in self.rows[0] if k.startswith("loss")]
        its = [r["iteration"] for r in self.rows]
        for key in keys:
            ax.plot(its, [r[key] for r in self.rows], label=key, lw=0.8)
        ax.set_xlabel("iteration")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        out = self.path.with_suffix(".png")
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return out


def _check_finite(loss: torch.Tensor, name: str, iteration: int, lr: float) -> None:
    if not torch.isfinite(loss):
        raise TrainingDivergedError(f"{name} became {loss.item()} at iteration {iteration}; lower the learning "
                                    f"rate (now {lr}) or check the prompts")


@contextlib.contextmanager
def gradient_checkpointing(unet, enabled: bool = True) -> Iterator[None]:
    """Recompute the up blocks' activations in backward instead of keeping them (diffusers' own switch).

    It trades about one extra up-block forward per training pass for most of the step's activation
    memory; the gradients are the same. The U-Net's previous setting is restored on exit.
    """
    before = bool(getattr(unet, "is_gradient_checkpointing", False))
    if not enabled or before:
        yield
        return
    if not getattr(unet, "_supports_gradient_checkpointing", False):
        raise HsteerError(f"{type(unet).__name__} does not support gradient checkpointing; train without it")
    unet.enable_gradient_checkpointing()
    try:
        yield
    finally:
        unet.disable_gradient_checkpointing()


def train_concept(pipe, config: TrainConfig, *, run_dir: str | Path | None = None, resume: bool = False,
                  checkpoint_every: int = 100, progress: bool = True,
                  callback: Callable[[int, dict[str, float]], None] | None = None,
                  checkpoint_activations: bool = False) -> TrainResult:
    """Learn one concept on `pipe` (SD 1.x/2.x or SDXL) with `config.objective`; returns the concept.

    With `run_dir`, a checkpoint is written every `checkpoint_every` iterations and the loss history
    to `losses.jsonl` / `losses.png`; `resume=True` continues from the checkpoint there.
    `checkpoint_activations` trades compute for memory (see `gradient_checkpointing`); it does not
    change the result, so it is not part of the config.
    """
    config.validate()
    with gradient_checkpointing(pipe.unet, checkpoint_activations):
        if config.objective == "sdisc":
            from hsteer.sdisc import train_sdisc

            return train_sdisc(pipe, config, run_dir=run_dir, progress=progress)
        return _train_steered(pipe, config, run_dir, resume, checkpoint_every, progress, callback)


def _train_steered(pipe, config: TrainConfig, run_dir, resume: bool, checkpoint_every: int, progress: bool,
                   callback) -> TrainResult:
    unet = pipe.unet
    if active_hooks(unet):
        raise HsteerError(f"the pipeline is being steered ({', '.join(active_hooks(unet))}); remove its hooks "
                          "before training")
    unet.requires_grad_(False)
    device = unet.device
    height, width = (config.height, config.width) if config.height and config.width else default_resolution(pipe)
    shape = pipeline_hspace_shape(pipe, height, width)
    latent_shape = (unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    schedule = DDIMSchedule(pipe.scheduler, config.steps, device)

    # Text embeddings, computed once.
    y_neu = encode_text(pipe, [config.neutral], height, width)
    y_empty = encode_unconditional(pipe, height, width)
    y_pos = encode_text(pipe, [config.target], height, width) if config.target else y_neu
    y_base = encode_text(pipe, [config.negative], height, width) if config.negative else y_empty

    init = torch.Generator("cpu").manual_seed(config.seed)
    params = {name: torch.nn.Parameter((config.init_std * torch.randn(shape, generator=init)).to(device))
              for name in config.modules}
    lrs = {"c": config.lr, "ram": config.lr, "sam": config.lr_sam}
    optimizers = {name: torch.optim.Adam([p], lr=lrs[name], betas=(0.9, 0.999)) for name, p in params.items()}

    start = 0
    ckpt = log = None
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt, log = _Checkpoint(run_dir), _LossLog(run_dir)
        if resume and ckpt.path.is_file():
            start = ckpt.load(config, params, optimizers)
            log.restore(start)
        atomic_write_text(run_dir / "config.json", json.dumps(asdict(config), indent=2))
    rows: list[dict[str, float]] = log.rows if log else []

    from tqdm.auto import tqdm

    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, disable=not progress,
               desc=f"train {config.concept} ({config.objective})", unit="it")
    began = time.perf_counter()
    B = config.batch_size
    conds = _Conditions(y_neu.expand(B), y_empty.expand(B), y_pos.expand(B), y_base.expand(B),
                        base_is_empty=config.negative is None)
    pool = _TrajectoryPool(schedule, B, latent_shape, device, unet.dtype) if config.mode == "fast" else None
    if pool is not None:
        if start and ckpt is not None:
            pool.load(ckpt.extra)
        else:
            current = sum(p.detach() for p in params.values())
            with steer(unet, SteeringConfig(current, guided=config.sampling_guidance != 1.0), name="hsteer-sample"):
                pool.start(config.seed, lambda x, k: reverse_to_steps(unet, schedule, x, k, conds.neutral, conds.empty,
                                                                      config.sampling_guidance))
    for it in bar:
        g = _iteration_generator(config.seed, it)
        if pool is None:
            row = _reference_step(unet, schedule, config, params, optimizers, conds, g, latent_shape, it)
        else:
            row = _fast_step(unet, schedule, config, params, optimizers, conds, pool, g, it)
        rows.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4g}")
        if callback is not None:
            callback(it, row)
        done = it + 1
        if ckpt is not None and (done % checkpoint_every == 0 or done == config.iterations):
            ckpt.save(done, config, params, optimizers, pool)
            log.flush()
    bar.close()
    if log is not None:
        log.flush()
        log.plot()
    concept = Concept(config.concept, config.group, config.objective,
                      {k: p.detach().cpu().float().clone() for k, p in params.items()},
                      meta=concept_meta(pipe, config, shape))
    return TrainResult(concept, rows, time.perf_counter() - began, start, run_dir)


@dataclass
class _Conditions:
    """Text conditions of one batch: neutral, empty, and the target's positive and base branches."""

    neutral: TextCondition
    empty: TextCondition
    positive: TextCondition
    base: TextCondition
    base_is_empty: bool


def _optimise(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _objective_step(unet, schedule, config, params, optimizers, conds, z_t, t, eps_target, it,
                    eps_steered: torch.Tensor | None = None) -> dict[str, float]:
    """One optimiser step of the objective at (z_t, t); `eps_steered` reuses a pass made with gradient."""
    row: dict[str, float] = {"iteration": it}
    if config.objective == "codsma":
        if eps_steered is None:
            loss = objectives.codsma_loss(unet, schedule, z_t, t, params["c"], conds.neutral, eps_target)
        else:  # the same loss, on the sampling pass's own steered prediction
            loss = torch.nn.functional.mse_loss(eps_steered.float(), eps_target.float())
        _check_finite(loss, "loss", it, config.lr)
        _optimise(optimizers["c"], loss)
        row["loss"] = loss.item()
        return row
    # RespoDiff: step RAM on L_resp, then recompute and step SAM on L_sem.
    loss_resp = objectives.respodiff_resp_loss(unet, schedule, z_t, t, params["ram"], conds.neutral, eps_target)
    _check_finite(loss_resp, "L_resp", it, config.lr)
    _optimise(optimizers["ram"], loss_resp)
    with torch.no_grad():
        eps_frozen = objectives.eps(unet, schedule, z_t, t, conds.neutral)
    loss_sem = objectives.respodiff_sem_loss(unet, schedule, z_t, t, params["ram"], params["sam"], conds.neutral,
                                             eps_frozen, config.lam)
    _check_finite(loss_sem, "L_sem", it, config.lr_sam)
    _optimise(optimizers["sam"], loss_sem)
    row["loss"] = loss_resp.item()
    row["loss_sem"] = loss_sem.item()
    return row


def _reference_step(unet, schedule, config, params, optimizers, conds, g, latent_shape, it) -> dict[str, float]:
    """The papers' procedure: a fresh reverse process per sample down to its own random step k."""
    B = config.batch_size
    device = unet.device
    k = torch.randint(0, config.steps, (B,), generator=g).to(device)
    x_T = (torch.randn((B, *latent_shape), generator=g) * schedule.init_noise_sigma).to(device, unet.dtype)
    current = sum(p.detach() for p in params.values())
    with steer(unet, SteeringConfig(current, guided=config.sampling_guidance != 1.0), name="hsteer-sample"):
        z_t = reverse_to_steps(unet, schedule, x_T, k, conds.neutral, conds.empty, config.sampling_guidance)
    t = schedule.timesteps[k]
    eps_target = objectives.guided_target(unet, schedule, z_t, t, conds.positive, conds.base,
                                          config.target_guidance)
    return _objective_step(unet, schedule, config, params, optimizers, conds, z_t, t, eps_target, it)


def _fast_step(unet, schedule, config, params, optimizers, conds, pool, g, it) -> dict[str, float]:
    """Trajectory reuse: every DDIM step of B staggered reverse processes is a training signal.

    The sampling step's unconditional pass (unsteered) doubles as the target's empty-prompt branch; for
    CoDSMa its conditional pass, run with gradient, is the steered neutral prediction of the loss.
    """
    z_t, k = pool.current()
    t = schedule.timesteps[k]
    frozen_prompts = [conds.empty, conds.positive] + ([] if conds.base_is_empty else [conds.base])
    n = len(frozen_prompts)
    with torch.no_grad():
        frozen = objectives.eps(unet, schedule, z_t.repeat(n, 1, 1, 1), t.repeat(n),
                                TextCondition.cat(frozen_prompts)).chunk(n)
    eps_uncond, eps_pos = frozen[0], frozen[1]
    eps_base = eps_uncond if conds.base_is_empty else frozen[2]
    eps_target = objectives.guidance_combination(eps_base, eps_pos, config.target_guidance)
    if config.objective == "codsma":
        eps_steered = objectives.eps(unet, schedule, z_t, t, conds.neutral, params["c"])
        row = _objective_step(unet, schedule, config, params, optimizers, conds, z_t, t, eps_target, it,
                              eps_steered=eps_steered)
        eps_cond = eps_steered.detach()
    else:
        row = _objective_step(unet, schedule, config, params, optimizers, conds, z_t, t, eps_target, it)
        with torch.no_grad():
            eps_cond = objectives.eps(unet, schedule, z_t, t, conds.neutral, sum(p.detach() for p in params.values()))
    guided = eps_uncond + config.sampling_guidance * (eps_cond - eps_uncond)
    pool.advance(guided, g)
    return row


class _TrajectoryPool:
    """B reverse processes at staggered steps; a finished one restarts from fresh noise.

    At the start, trajectory i is brought to step i * K / B by a warm-up reverse process, so that every
    batch spans the whole schedule and each step is visited equally often.
    """

    def __init__(self, schedule: DDIMSchedule, size: int, latent_shape, device, dtype) -> None:
        self.schedule, self.size, self.latent_shape = schedule, size, latent_shape
        self.device, self.dtype = device, dtype
        self.x = torch.empty(0)
        self.k = torch.empty(0, dtype=torch.long)

    def _noise(self, n: int, g: torch.Generator) -> torch.Tensor:
        x = torch.randn((n, *self.latent_shape), generator=g) * self.schedule.init_noise_sigma
        return x.to(self.device, self.dtype)

    def start(self, seed: int, warm_up: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        g = torch.Generator("cpu").manual_seed(seed * 7919 + 17)
        self.k = (torch.arange(self.size) * self.schedule.steps // self.size).to(self.device)
        self.x = warm_up(self._noise(self.size, g), self.k)

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.x, self.k = state["pool/x"].to(self.device, self.dtype), state["pool/k"].to(self.device)

    def current(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.k

    def advance(self, eps: torch.Tensor, g: torch.Generator) -> None:
        self.x = self.schedule.step(eps, self.x, self.k)
        self.k = self.k + 1
        done = self.k >= self.schedule.steps
        if done.any():
            self.x[done] = self._noise(int(done.sum()), g)
            self.k[done] = 0

    def state(self) -> dict[str, torch.Tensor]:
        return {"pool/x": self.x.detach().cpu().contiguous(), "pool/k": self.k.detach().cpu().contiguous()}


def concept_meta(pipe, config: TrainConfig, shape: tuple[int, int, int]) -> dict[str, Any]:
    from hsteer import __version__

    meta = {k: v for k, v in asdict(config).items() if k not in ("concept", "group", "objective")}
    if config.objective != "respodiff":
        meta.pop("lr_sam")
        meta.pop("lam")
    if config.objective != "sdisc":
        meta.pop("sdisc_images")
        meta.pop("sdisc_epochs")
    meta.update({"hspace_shape": list(shape), "unet_fingerprint": unet_fingerprint(pipe.unet),
                 "hsteer_version": __version__, "model": str(getattr(pipe, "name_or_path", "") or "")})
    return {k: v for k, v in meta.items() if not (isinstance(v, float) and math.isnan(v))}


def train_into_bank(pipe, config: TrainConfig, bank_path: str | Path, *, resume: bool = False,
                    checkpoint_every: int = 100, progress: bool = True,
                    checkpoint_activations: bool = False) -> TrainResult:
    """Train `config.concept` and add (or replace) it in the bank at `bank_path`, creating the bank if missing."""
    bank_path = Path(bank_path)
    bank = ConceptBank.load(bank_path) if bank_path.exists() else None
    if bank is not None:  # fail before hours of training, not after
        bank.check_compatible(pipe.unet, pipeline_hspace_shape(pipe, config.height, config.width))
    result = train_concept(pipe, config, run_dir=run_dir_for(bank_path, config.concept), resume=resume,
                           checkpoint_every=checkpoint_every, progress=progress,
                           checkpoint_activations=checkpoint_activations)
    bank = ConceptBank.load(bank_path) if bank_path.exists() else ConceptBank()
    bank.add(result.concept, replace=True)
    bank.save(bank_path)
    return result
