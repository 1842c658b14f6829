"""Training the concepts of one group together: one trajectory pool and one U-Net pass per iteration.

The concepts of a group (circle and square; man and woman) share their neutral prompts, schedule and step
window; only their targets differ. Trained one by one, each builds its own trajectory pool and runs its own
U-Net batches. Here they share them:

- one batch holds every concept's rows (row r of concept j carries concept j), so an iteration is one
  frozen U-Net batch (empty + target prompts) and one steered batch with gradient, for the whole group;
- the pool's trajectories are kept inside the step window, staggered over its steps, so every row of
  every batch is a training signal (the per-concept fast mode advances its rows over the whole schedule
  and trains only on those inside the window);
- the part of a trajectory before the window is unsteered, so it does not depend on the concepts: it is
  made once per slot for the whole group (`_prefix`), in batches.

Each concept keeps its own Adam, learning rate and target guidance, and its loss is its own rows' CoDSMa
loss, so its gradient is that of a separate run on the same latents. Training is in memory: `GroupRun.run`
continues exactly where the last call stopped (the benchmarks time it that way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hsteer import objectives
from hsteer.checks import check_pipeline
from hsteer.errors import BankError, HsteerError
from hsteer.fileio import atomic_save
from hsteer.steering.bank import Concept
from hsteer.steering.scoped import active_hooks
from hsteer.model.diffusion import DDIMSchedule, TextCondition, guidance_combination, guided_epsilon
from hsteer.seeding import iteration_generator, pool_seed
from hsteer.training.config import TrainConfig
from hsteer.training.plan import TrainPlan, check_config, check_run_args, resolve_plan
from hsteer.training.registry import METHODS
from hsteer.training.state import (IterationLosses, TrainResult, adam_tensors, concept_meta, restore_adam,
                                   stored_tensors)
from hsteer.training.steered import StepContext, step_context

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

#: What group checkpoints record of two settings the group trainer does not have (a learning-rate warm-up
#: and DDIM jumps before the window, measured in studies/train_ideas.py): always off, so that a checkpoint
#: made with either on is refused and every other one resumes.
RETIRED_SETTINGS = {"lr_warmup": 0, "jumps": 0}

#: Settings every concept of a group must share, because the group shares its trajectories.
SHARED = ("mode", "steps", "batch_size", "sampling_guidance", "seed", "window", "height", "width", "neutral")


def check_group(configs: Sequence[TrainConfig]) -> None:
    """Refuse a group that cannot share one pool, naming the setting that differs; each config is validated
    first (the command line's check before the model loads; `plan_group` checks a group once at the API edge)."""
    check_group_members(configs)
    for config in configs:
        config.validate()
    check_group_settings(configs)


def check_group_members(configs: Sequence[TrainConfig]) -> None:
    """A group is one or more TrainConfigs: refused otherwise before any of them is read."""
    if len(configs) < 1 or not all(isinstance(c, TrainConfig) for c in configs):
        raise HsteerError("a group needs one or more TrainConfigs (e.g. one CodsmaConfig per concept)")


def check_group_settings(configs: Sequence[TrainConfig]) -> None:
    """What validated configs need to share one pool: a method that trains in groups, the fast mode at the
    mid-block, distinct names and the same `SHARED` settings and neutral prompts, row by row."""
    for config in configs:
        if not METHODS.of(config).group_training:
            able = [m for m in METHODS if m.group_training]
            others = [m.title for m in METHODS if not m.group_training]
            raise HsteerError(f"{config.concept}: group training supports the {' or '.join(m.name for m in able)} "
                              f"objective, not {config.objective!r}; train {' and '.join(others)} concepts one by "
                              "one")
        if config.mode != "fast":
            raise HsteerError(f"{config.concept}: group training is a fast-mode procedure; mode is {config.mode!r}")
        if config.site not in (None, "mid_block"):
            raise HsteerError(f"{config.concept}: group training learns at the U-Net mid-block, not at site "
                              f"{config.site}; train concepts at other sites one by one")
    first = configs[0]
    names = [c.concept for c in configs]
    if len(set(names)) != len(names):
        raise HsteerError(f"a group's concepts need distinct names, got {', '.join(names)}")
    for config in configs[1:]:
        for key in SHARED:
            if getattr(config, key) != getattr(first, key):
                raise HsteerError(f"{config.concept} and {first.concept} differ in {key} ({getattr(config, key)!r} "
                                  f"vs {getattr(first, key)!r}): a group's concepts share their trajectories, so "
                                  "they must share it; train them one by one otherwise")
        if _neutrals(config) != _neutrals(first):
            raise HsteerError(f"{config.concept} and {first.concept} have different neutral prompts row by row; "
                              "a group's pairs must share their neutral sides (in the same order)")
        if (config.negative is None) != (first.negative is None):
            raise HsteerError("either every concept of a group has a negative prompt or none has")


def plan_group(pipe: Pipeline, configs: Sequence[TrainConfig], *, run_dir: str | Path | None = None,
               checkpoint_every: int = 1, **flags: object) -> list[TrainPlan]:
    """`plan_training` for a group trained together, at its API edge (`train_group_into_bank`): each config
    checked once (`check_config`), then what the group needs to share one pool, then each concept's plan on
    the model, all in the group's `run_dir`."""
    check_group_members(configs)
    for config in configs:
        check_config(config)
    check_group_settings(configs)
    check_pipeline(pipe, "pipe")
    check_run_args(run_dir, checkpoint_every, **flags)
    return [resolve_plan(pipe, config, run_dir) for config in configs]


def _neutrals(config: TrainConfig) -> list[str]:
    """The neutral prompt of each batch row."""
    if config.pairs:
        return [config.pairs[i % len(config.pairs)][0] for i in range(config.batch_size)]
    return [config.neutral] * config.batch_size


class GroupRun:
    """A group's concepts trained together (module docstring); `run(n)` trains up to iteration n."""

    def __init__(self, pipe: Pipeline, configs: Sequence[TrainConfig] | Sequence[TrainPlan]) -> None:
        """`configs`: the group's configs, checked and planned here (`_plans`), or their plans, trusted."""
        plans = _plans(pipe, configs)
        self.pipe, self.configs = pipe, [plan.config for plan in plans]
        configs = self.configs
        built = [step_context(pipe, plan) for plan in plans]
        self.ctxs: list[StepContext] = [b[0] for b in built]
        self.shape, self.latent_shape = built[0][1], built[0][2]
        lead = self.ctxs[0]
        self.unet, self.schedule, self.B = lead.unet, lead.schedule, configs[0].batch_size
        if not isinstance(self.schedule, DDIMSchedule):
            raise HsteerError(f"group training runs on DDIM-scheduled U-Nets (SD 1.x/2.x, SDXL); this model's "
                              f"schedule is {type(self.schedule).__name__}: train its concepts one by one")
        if active_hooks(pipe.unet):  # after the schedule's check: a transformer has no `unet`
            raise HsteerError(f"the pipeline is being steered ({', '.join(active_hooks(pipe.unet))}); remove "
                              "its hooks before training")
        #: how the objectives call the model: the run's Denoiser where the trainer has one, else the U-Net
        self.model = getattr(lead, "denoiser", None) or lead.unet
        self.first, self.end = lead.window_steps()
        if self.first >= self.end:
            raise HsteerError(f"the window {configs[0].window} covers none of the {configs[0].steps} steps")
        cat = TextCondition.cat
        self.neutral = cat([c.conds.neutral for c in self.ctxs])
        self.empty = cat([c.conds.empty for c in self.ctxs])
        self.positive = cat([c.conds.positive for c in self.ctxs])
        self.base = None if lead.conds.base_is_empty else cat([c.conds.base for c in self.ctxs])
        self.iteration, self.seconds, self.rows = 0, 0.0, []
        self.held: objectives.HeldHook | None = None  # the hook, held while `run` runs
        self.x = self.k = self.spare = self.spare_used = None  # the pool: made by `_start_pool`

    # --- the pool ---------------------------------------------------------------------------------------

    def _noise(self, g: torch.Generator) -> torch.Tensor:
        x = torch.randn((self.B, *self.latent_shape), generator=g) * self.schedule.init_noise_sigma
        return x.to(self.unet.device, self.unet.dtype)

    @torch.no_grad()
    def _walk(self, x: torch.Tensor, k_from: torch.Tensor, k_to: torch.Tensor,
              delta: torch.Tensor | None = None) -> torch.Tensor:
        """DDIM from step k_from[i] to k_to[i] per row, every step (`x` holds B slots, or n x B rows with
        `delta`, one concept per row)."""
        n = x.shape[0] // self.B
        cond, uncond = self.ctxs[0].conds.neutral, self.ctxs[0].conds.empty
        if n > 1:
            cond, uncond = self.neutral, self.empty
        k_from, k_to = k_from.repeat(n), k_to.repeat(n)
        span = k_to - k_from
        ladder = [torch.minimum(k_from + m, k_to) for m in range(int(span.max().item()) + 1)]
        guidance, x = self.configs[0].sampling_guidance, x.clone()
        for here, there in zip(ladder, ladder[1:]):
            active = (there > here).nonzero(as_tuple=True)[0]
            if not len(active):
                continue
            xa, t = x[active], self.schedule.timesteps[here[active]]
            with objectives.steering(self.unet, delta[active] if delta is not None else None, held=self.held,
                                     name="hsteer-sample", guided=guidance != 1.0):
                eps = guided_epsilon(self.model, self.schedule, xa, t, cond.select(active), uncond.select(active),
                                     guidance)
            a_t = self.schedule.alpha(t).to(x.dtype)
            a_next = self.schedule.alpha(self.schedule.timesteps[there[active]]).to(x.dtype)
            x0 = (xa - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            x[active] = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x

    def _prefix(self, g: torch.Generator) -> torch.Tensor:
        """One latent per slot at the window's first step: unsteered, so shared by every concept."""
        zero = torch.zeros(self.B, dtype=torch.long, device=self.unet.device)
        return self._walk(self._noise(g), zero, zero + self.first)

    def _deltas(self) -> torch.Tensor:
        """Each row's current concept: concept j on rows j*B .. (j+1)*B - 1, detached."""
        return torch.cat([c.current().unsqueeze(0).expand(self.B, *self.shape) for c in self.ctxs])

    def _start_pool(self) -> None:
        """Slots staggered over the window's steps; the in-window part is steered unless every concept is
        still zero (then it is shared too)."""
        g = torch.Generator("cpu").manual_seed(pool_seed(self.configs[0].seed))
        width = self.end - self.first
        self.k = (self.first + torch.arange(self.B) * width // self.B).to(self.unet.device)
        start = torch.full_like(self.k, self.first)
        x = self._prefix(g)
        self.spare, self.spare_used = x, torch.zeros(self.B, dtype=torch.bool)
        n = len(self.ctxs)
        if all(not c.current().any() for c in self.ctxs):
            self.x = self._walk(x, start, self.k).repeat(n, 1, 1, 1)
        else:
            self.x = self._walk(x.repeat(n, 1, 1, 1), start, self.k, self._deltas())

    def _restart(self, done: torch.Tensor, g: torch.Generator) -> None:
        """Slots whose trajectories left the window re-enter it: each first from its own entry latent of
        the pool's start (kept, so free: re-walked under the concept as it is now, it gives new latents),
        then from fresh prefix latents, made B at a time when a slot's spare has been used."""
        if (self.spare_used & done.cpu()).any():
            self.spare, self.spare_used = self._prefix(g), torch.zeros(self.B, dtype=torch.bool)
        slots = done.nonzero(as_tuple=True)[0]
        view = self.x.view(len(self.ctxs), self.B, *self.latent_shape)
        view[:, slots] = self.spare[slots].unsqueeze(0)
        self.spare_used[slots.cpu()] = True
        self.k[slots] = self.first

    # --- training ---------------------------------------------------------------------------------------

    def _iteration(self, it: int) -> dict[str, float]:
        """One optimiser step of every concept on the pool's latents, then one DDIM step of the pool."""
        g = iteration_generator(self.configs[0].seed, it)
        n, B = len(self.ctxs), self.B
        k = self.k.repeat(n)
        t = self.schedule.timesteps[k]
        prompts = [self.empty, self.positive] + ([self.base] if self.base is not None else [])
        frozen = objectives.frozen_eps(self.model, self.schedule, self.x, t, prompts)
        eps_uncond, eps_pos = frozen[0], frozen[1]
        eps_base = eps_uncond if self.base is None else frozen[2]
        delta = torch.cat([c.params["c"].unsqueeze(0).expand(B, *self.shape) for c in self.ctxs])
        eps_c = objectives.eps(self.model, self.schedule, self.x, t, self.neutral, delta, held=self.held)
        losses = IterationLosses(it)
        total = 0.0
        for j, config in enumerate(self.configs):
            rows = slice(j * B, (j + 1) * B)
            target = objectives.guided_target(eps_pos[rows], eps_base[rows], config.target_guidance)
            loss = objectives.codsma_loss(eps_c[rows], target)
            losses.add(f"loss/{config.concept}", loss, f"{config.concept}'s loss", config.lr)
            total = total + loss
        for ctx in self.ctxs:
            ctx.optimizers["c"].zero_grad(set_to_none=True)
        total.backward()  # each concept's gradient is its own loss's: the concepts are disjoint parameters
        for ctx in self.ctxs:
            ctx.optimizers["c"].step()
        losses.add("loss", total)
        row = losses.row()  # the one host transfer of the iteration; raises on a non-finite loss
        row["loss"] = row["loss"] / n
        eps = guidance_combination(eps_uncond, eps_c.detach(), self.configs[0].sampling_guidance)
        self.x = self.schedule.step(eps, self.x, k)
        self.k = self.k + 1
        done = self.k >= self.end
        if done.any():
            self._restart(done, g)
        return row

    def run(self, iterations: int, callback=None) -> None:
        """Train every concept up to `iterations` in all (continuing); adds the time to `seconds`."""
        began = time.perf_counter()
        with objectives.HeldHook(self.unet) as self.held:
            if self.x is None:
                self._start_pool()
            for it in range(self.iteration, iterations):
                self.rows.append(self._iteration(it))
                if callback is not None:
                    callback(it, self.rows[-1])
        self.held = None
        self.iteration = max(self.iteration, iterations)
        self.seconds += time.perf_counter() - began

    # --- checkpoints -------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Everything `run` continues from (concepts, Adam states, the pool, progress) in one safetensors
        file, written atomically: a resumed run ends exactly where an uninterrupted one ends."""
        tensors: dict[str, torch.Tensor] = {}
        steps = []
        for j, ctx in enumerate(self.ctxs):
            tensors[f"param/{j}"] = ctx.params["c"].detach().cpu().contiguous()
            moments, step = adam_tensors(f"adam/{j}", ctx.optimizers["c"])
            tensors.update(moments)
            steps.append(step)
        if self.x is not None:
            tensors.update({"pool/x": self.x.detach().cpu().contiguous(), "pool/k": self.k.cpu().contiguous(),
                            "pool/spare": self.spare.detach().cpu().contiguous(),
                            "pool/spare_used": self.spare_used.to(torch.uint8).contiguous()})
        meta = {"iteration": self.iteration, "seconds": self.seconds, "rows": self.rows, "adam_steps": steps,
                "configs": [c.resume_key() for c in self.configs], **RETIRED_SETTINGS}
        atomic_save(path, lambda tmp: save_file(tensors, tmp, metadata={"hsteer_group": json.dumps(meta)}))

    def load(self, path: Path) -> None:
        """Continue from what `save` wrote; refused, naming the settings, if they differ from this run's, and
        in one line naming the file if any part of it is damaged (nothing is restored then)."""
        from hsteer.checks import check_input_file, load_json

        check_input_file(path, "group checkpoint")
        try:
            with safe_open(str(path), framework="pt") as handle:
                text = (handle.metadata() or {})["hsteer_group"]
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
            raise BankError(f"group checkpoint {path} is unreadable ({type(exc).__name__}); delete it and "
                            "start over without resume=True", field="resume") from None
        meta = load_json(text if isinstance(text, str) else "", f"group checkpoint {path}", error=BankError)
        wanted = json.loads(json.dumps([c.resume_key() for c in self.configs]))
        if not isinstance(meta, dict) or meta.get("configs") != wanted \
                or any(meta.get(k) != v for k, v in RETIRED_SETTINGS.items()):
            raise HsteerError(f"group checkpoint {path} was made with other concepts or settings; use the same "
                              "ones to resume, or start over without resume=True", field="resume")
        self._check_checkpoint(path, meta, tensors)
        device, dtype = self.unet.device, self.unet.dtype
        with torch.no_grad():
            for j, ctx in enumerate(self.ctxs):
                p = ctx.params["c"]
                p.copy_(tensors[f"param/{j}"].to(p.device, p.dtype))
                if meta["adam_steps"][j] is not None:
                    restore_adam(ctx.optimizers["c"], tensors, f"adam/{j}", meta["adam_steps"][j])
        if "pool/x" in tensors:
            self.x, self.spare = tensors["pool/x"].to(device, dtype), tensors["pool/spare"].to(device, dtype)
            self.k = tensors["pool/k"].to(device)
            self.spare_used = tensors["pool/spare_used"].bool()
        self.iteration, self.seconds, self.rows = int(meta["iteration"]), float(meta["seconds"]), list(meta["rows"])

    def _check_checkpoint(self, path: Path, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Progress, loss rows, Adam states, concepts and pool of a group checkpoint, checked against this run
        before anything is restored."""
        def damaged(why: str) -> BankError:
            return BankError(f"group checkpoint {path} is damaged ({why}); delete it and start over without "
                             "resume=True", field="resume")

        n, total = len(self.configs), self.configs[0].iterations
        iteration, seconds, rows, steps = (meta.get(k) for k in ("iteration", "seconds", "rows", "adam_steps"))
        if isinstance(iteration, bool) or not isinstance(iteration, int) or not 0 <= iteration <= total:
            if isinstance(iteration, int) and not isinstance(iteration, bool) and iteration > total:
                raise HsteerError(f"group checkpoint {path} is at iteration {iteration}, beyond iterations={total}; "
                                  f"resume with iterations={iteration} or more, or start over without resume=True",
                                  field=("iterations", "resume"))
            raise damaged(f"iteration {str(iteration)[:30]} is not a whole number >= 0")
        if not _number(seconds) or seconds < 0:
            raise damaged("its training time is not a finite number >= 0")
        keys = [f"loss/{c.concept}" for c in self.configs]
        if not isinstance(rows, list) or len(rows) != iteration or not all(
                isinstance(r, dict) and r.get("iteration") == i and all(_number(r.get(k)) for k in keys)
                for i, r in enumerate(rows)):
            raise damaged(f"its loss rows are not one row per iteration 0 to {iteration - 1} with each concept's loss")
        if not isinstance(steps, list) or len(steps) != n or not all(
                s is None or (_number(s) and 0 <= s < 2**53) for s in steps):
            raise damaged(f"its Adam steps are not {n} counts")
        shape = tuple(self.ctxs[0].params["c"].shape)
        wanted = {f"param/{j}": shape for j in range(n)}
        wanted.update({f"adam/{j}/{m}": shape for j in range(n) if steps[j] is not None
                       for m in ("exp_avg", "exp_avg_sq")})
        if any(k.startswith("pool/") for k in tensors):
            latent = tuple(self.latent_shape)
            wanted.update({"pool/x": (n * self.B, *latent), "pool/spare": (self.B, *latent), "pool/k": (self.B,),
                           "pool/spare_used": (self.B,)})
        for key, size in wanted.items():
            tensor = tensors.get(key)
            if tensor is None or tuple(tensor.shape) != size:
                raise damaged(f"its tensor {key} is missing or not of shape {size}")
            if key in ("pool/k", "pool/spare_used") and tensor.is_floating_point():
                raise damaged(f"its tensor {key} holds floats, not whole numbers")
            if key not in ("pool/k", "pool/spare_used") and (not tensor.is_floating_point()
                                                             or not bool(torch.isfinite(tensor).all())):
                raise damaged(f"its tensor {key} is not float, or holds NaN or infinite values")
        extra = sorted(set(tensors) - set(wanted))
        if extra:
            raise damaged(f"it holds the unknown tensor {extra[0][:60]}")
        if "pool/k" in tensors and not bool(((tensors["pool/k"] >= self.first) & (tensors["pool/k"] < self.end)).all()):
            raise damaged(f"its pool's steps are not inside the window's steps {self.first} to {self.end - 1}")

    def concepts(self) -> list[Concept]:
        """The concepts as they are now, ready for a bank."""
        return [Concept(config.concept, config.group, config.objective,
                        stored_tensors(config, ctx.params),
                        meta={**concept_meta(self.pipe, config, self.shape), "trained_with": "group"})
                for ctx, config in zip(self.ctxs, self.configs)]


def _are_plans(items: object) -> bool:
    """Whether a group was given as plans (checked already at the API edge) rather than as configs."""
    return isinstance(items, Sequence) and len(items) > 0 and all(isinstance(i, TrainPlan) for i in items)


def _plans(pipe: Pipeline, configs: Sequence[TrainConfig] | Sequence[TrainPlan]) -> list[TrainPlan]:
    """The group's plans: as given (checked at the API edge, `plan_group`), or made here from its configs,
    each validated once (`check_group`) and its site resolved once (`resolve_plan`), as `GroupRun` and
    `train_group` given configs have always checked them."""
    if _are_plans(configs):
        return list(configs)
    check_group(configs)
    return [resolve_plan(pipe, config) for config in configs]


def _number(value: object) -> bool:
    """A finite int or float (not a bool): what a loss, a time or a step count read from a file must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def train_group(pipe: Pipeline, configs: Sequence[TrainConfig] | Sequence[TrainPlan], *, callback=None,
                run_dir: str | Path | None = None,
                resume: bool = False,
                checkpoint_every: int = 100) -> list[TrainResult]:
    """Train a group's concepts together for `configs[0].iterations` iterations (all configs must agree);
    one TrainResult per concept, each carrying the group's training seconds (they were spent together).
    `configs` may be the group's plans (`plan_group`), which are trusted and not checked again.

    With `run_dir`, the run is checkpointed there every `checkpoint_every` iterations (and at the end)
    and `resume=True` continues from that checkpoint exactly."""
    given, configs = configs, [p.config for p in configs] if _are_plans(configs) else configs
    if len({c.iterations for c in configs}) > 1:
        raise HsteerError("a group's concepts train for the same number of iterations; give them all one count")
    run = GroupRun(pipe, given)
    total, resumed = configs[0].iterations, 0
    checkpoint = Path(run_dir) / "group_checkpoint.safetensors" if run_dir is not None else None
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        if resume and (checkpoint.exists() or checkpoint.is_symlink()):
            run.load(checkpoint)
            resumed = run.iteration
    while run.iteration < total:
        run.run(min(total, run.iteration + checkpoint_every) if checkpoint is not None else total, callback)
        if checkpoint is not None:
            run.save(checkpoint)
    losses = [{"iteration": r["iteration"], "loss": r[f"loss/{c.concept}"]} for c in configs for r in run.rows]
    per = len(run.rows)
    return [TrainResult(concept, losses[i * per:(i + 1) * per], run.seconds, resumed_from=resumed,
                        run_dir=None if run_dir is None else Path(run_dir))
            for i, concept in enumerate(run.concepts())]
