"""The white-box attack, UnlearnDiffAtk-style: k adversarial tokens that make the defended model denoise
a harmful image as the undefended model does.

For one harm prompt P (kept whole, harm words included):

1. Target images: the undefended model's images of P (their own seeds, apart from the evaluation's), encoded to latents
   by the VAE. Where a scorer is given, the targets it flags as harmful are kept (as UnlearnDiffAtk picks
   a harmful target); the scorer never enters the loss.
2. k tokens are added before (prefix) or after (suffix) P. Each position holds a continuous vector per
   text encoder, started at a random candidate word's embedding (`attacks.text`).
3. Each step: project the vectors to the nearest candidate words, which gives the *current discrete
   prompt*; the defence draws its concepts for it (the prompt-aware gate reads that prompt, so the attack
   sees where the gate lets go); noise a target latent at a random step of the sampling schedule; and
   take an Adam step on the vectors against the loss, through the straight-through encoding:
   - `teacher` (the default): MSE between the defended model's guided prediction for the adversarial
     prompt and the undefended model's for P (the prediction that made the target);
   - `noise`: UnlearnDiffAtk's own loss, the MSE between the defended conditional prediction and what
     the model should predict for the noised target (guidance plays no part, so a negative prompt or
     SLD is invisible to it).
4. Every `eval_every` steps a discrete refinement scores the current prompt on a fixed validation set
   (the same targets, steps and noise for every candidate, so scores compare) and tries, position by
   position, the `top` words nearest to that position's vector, each with the defence (and its gate)
   applied to the candidate text; the best prompt so far is kept, and a position that improved moves
   its vector to the chosen word.

The same loss on every family, on what its model predicts: on a U-Net the noise of
`x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise` at a DDIM step; on SD3 and FLUX (rectified flow) the velocity at
`x_t = (1 - sigma) x0 + sigma noise` at a step of the pipeline's own flow schedule (the `noise` objective's
target is then the velocity `noise - x0`). Either way the defended model is asked to denoise the harmful
target as the undefended model does. FLUX's targets are packed 2 x 2 into tokens, as its sampler holds them.

The state (vectors, Adam moments, step, losses, best prompt) is saved every `save_every` steps; a resumed
attack draws the same noise at each step (seeded by seed, prompt and step) and ends where an uninterrupted
one would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hsteer.attacks.defence import BoundDefence
from hsteer.attacks.state import load_tensor_state, save_tensor_state
from hsteer.attacks.text import (POSITIONS, Vocabulary, adversarial_positions, compose, encode_prompt_grad,
                                 initial_vectors, straight_through)
from hsteer.errors import HsteerError
from hsteer.model.families import family_for
from hsteer.model.sites import denoiser_of

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

OBJECTIVES = ("teacher", "noise")
#: The target images of an attack seeded s come from seeds s + TARGET_SEED_OFFSET + i, away from the
#: evaluation's seeds s + i: the prompt found must carry the harm to noise it was not fitted on.
TARGET_SEED_OFFSET = 100_003
Scorer = Callable[[list], list[bool]]


@dataclass(frozen=True)
class WhiteboxConfig:
    """The white-box attack's budget and settings (see the module docstring)."""

    tokens: int = 5
    position: str = "suffix"
    steps: int = 100
    lr: float = 0.05
    batch: int = 4
    targets: int = 4
    eval_every: int = 20
    top: int = 8
    val_batch: int = 8
    objective: str = "teacher"
    save_every: int = 10

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise HsteerError(f"position must be prefix or suffix, got {self.position!r}")
        if self.objective not in OBJECTIVES:
            raise HsteerError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for name in ("tokens", "steps", "batch", "targets", "eval_every", "top", "val_batch", "save_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise HsteerError(f"whitebox {name} must be a whole number >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise HsteerError(f"whitebox lr must be > 0, got {self.lr}")


def stream_generator(*key: int) -> torch.Generator:
    """A CPU generator for one random stream of an attack (seed, prompt, stream, step): a resumed attack
    draws exactly what an uninterrupted one draws."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator("cpu").manual_seed(int(state) & (2**63 - 1))


def encode_images(pipe: Pipeline, images: Sequence) -> torch.Tensor:
    """PIL images -> the VAE's scaled latents (the latents the pipeline would have decoded them from), packed
    into tokens where the family's sampler holds them so (FLUX)."""
    vae = pipe.vae
    pixels = torch.stack([torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
                          .permute(2, 0, 1) for img in images])
    with torch.no_grad():
        encoded = vae.encode(pixels.to(vae.device, vae.dtype))
    dist = getattr(encoded, "latent_dist", None)
    latents = dist.mean if dist is not None else encoded.latent  # a deterministic autoencoder has no distribution
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    latents = ((latents - shift) * vae.config.scaling_factor).float().to(denoiser_of(pipe).device)
    if family_for(pipe).packed_latents:
        b, c, h, w = latents.shape
        latents = pipe._pack_latents(latents, b, c, h, w)
    return latents


@dataclass
class _Sample:
    """Noisy target latents at sampled steps, and what the loss compares them with."""

    x: torch.Tensor
    t: torch.Tensor
    steps: list[int]
    reference: torch.Tensor  # the teacher's guided prediction, or (objective noise) the noising's target


class WhiteboxAttack:
    """The attack on one harm prompt against one bound defence (the undefended `teacher` makes the targets)."""

    def __init__(self, defence: BoundDefence, teacher: BoundDefence, vocab: Vocabulary, prompt: str,
                 config: WhiteboxConfig, *, seed: int, index: int, steps: int, guidance: float,
                 scorer: Scorer | None = None) -> None:
        self.defence, self.teacher, self.vocab, self.prompt = defence, teacher, vocab, prompt
        self.config, self.seed, self.index, self.guidance = config, seed, index, guidance
        self.pipe = defence.pipe
        self.schedule = defence.schedule(steps)
        self.positions = adversarial_positions(self.pipe, prompt, config.tokens, config.position)
        self.targets = self._targets(scorer)
        with torch.no_grad():
            self.prompt_cond = encode_prompt_grad(self.pipe, prompt, teacher.base)
        self.validation = self._sample(stream_generator(seed, index, 1, 0), config.val_batch)
        self.evaluations = 0  # discrete prompts scored on the validation set

    def _targets(self, scorer: Scorer | None) -> torch.Tensor:
        items = [(self.prompt, self.seed + TARGET_SEED_OFFSET + i) for i in range(self.config.targets)]
        images = [image for _, image in self.teacher.generate(items, steps=self.schedule.steps,
                                                              guidance=self.guidance)]
        if scorer is not None:
            flagged = [img for img, harmful in zip(images, scorer(images)) if harmful]
            images = flagged or images
        return encode_images(self.pipe, images)

    def _sample(self, gen: torch.Generator, n: int) -> _Sample:
        """n noisy targets: a target, a step of the schedule and noise each, and the loss's reference."""
        which = torch.randint(len(self.targets), (n,), generator=gen)
        steps = torch.randint(self.schedule.steps, (n,), generator=gen)
        noise = torch.randn((n, *self.targets.shape[1:]), generator=gen).to(self.targets.device)
        k = steps.to(self.schedule.timesteps.device)
        t = self.schedule.timesteps[k]
        x0 = self.targets[which.to(self.targets.device)]
        x = self.schedule.noised(x0, noise, k)
        if self.config.objective == "noise":
            return _Sample(x, t, steps.tolist(), self.schedule.target(x0, noise))
        with torch.no_grad():
            ref = self._eps(self.teacher, x, t, steps.tolist(), self.prompt_cond, [])
        return _Sample(x, t, steps.tolist(), ref)

    def _eps(self, defence: BoundDefence, x, t, steps: list[int], cond, draw) -> torch.Tensor:
        """Guided predictions, one denoiser call per group of steps that act alike (`BoundDefence.step_key`:
        the same concept windows and SLD phase); each row keeps its own timestep. A model that takes its
        guidance as an input (FLUX-dev) gets the sampling guidance in every objective: it is how it samples."""
        guidance = 1.0 if self.config.objective == "noise" else self.guidance
        groups: dict[tuple, list[int]] = {}
        for n, step in enumerate(steps):
            groups.setdefault(defence.step_key(draw, step, self.schedule.steps), []).append(n)
        if len(groups) == 1:
            return defence.eps(self.schedule, x, t, steps[0], cond, guidance, draw, embedded=self.guidance)
        out = torch.empty_like(x)
        for members in groups.values():
            rows = torch.tensor(members, device=x.device)
            out[rows] = defence.eps(self.schedule, x[rows], t[rows], steps[members[0]], cond, guidance, draw,
                                    embedded=self.guidance)
        return out

    def text(self, choice: torch.Tensor) -> str:
        """The prompt the candidate indices `choice` stand for: what the gate and the pipeline read."""
        return compose(self.prompt, [self.vocab.words[i] for i in choice.tolist()], self.config.position)

    def loss(self, choice: torch.Tensor, sample: _Sample, vectors: Sequence[torch.Tensor] | None = None):
        """The loss of the discrete prompt `choice`, with the defence drawn for its text; with `vectors`,
        differentiable in them (straight-through)."""
        text = self.text(choice)
        draw, _ = self.defence.draw(text, self.seed)
        ids = [self.vocab.ids[n][choice] for n in range(len(self.vocab.ids))]
        if vectors is None:
            with torch.no_grad():
                cond = encode_prompt_grad(self.pipe, text, self.defence.base)
                return torch.mean((self._eps(self.defence, sample.x, sample.t, sample.steps, cond, draw)
                                   - sample.reference) ** 2)
        with straight_through(self.pipe, self.positions, ids, vectors):
            cond = encode_prompt_grad(self.pipe, text, self.defence.base)
        eps = self._eps(self.defence, sample.x, sample.t, sample.steps, cond, draw)
        return torch.mean((eps - sample.reference) ** 2)

    def refine(self, choice: torch.Tensor, vectors: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
        """Greedy coordinate search over each position's `top` nearest words on the validation set."""
        best = choice.clone()
        best_loss = float(self.loss(best, self.validation))
        self.evaluations += 1
        near = self.vocab.nearest(vectors, self.config.top)
        for pos in range(len(best)):
            for cand in near[pos].tolist():
                if cand == int(best[pos]):
                    continue
                trial = best.clone()
                trial[pos] = cand
                value = float(self.loss(trial, self.validation))
                self.evaluations += 1
                if value < best_loss:
                    best, best_loss = trial, value
        with torch.no_grad():
            for pos in (best != choice).nonzero().flatten().tolist():
                for n, vec in enumerate(vectors):
                    vec[pos] = _table_row(self.pipe, n, self.vocab, int(best[pos])).to(vec)
        return best, best_loss

    def run(self, state_path: Path | None, advance: Callable[[int], Any] = lambda n: None) -> dict[str, Any]:
        """Optimise (resuming from `state_path` where it holds a state); the best prompt and its figures."""
        cfg = self.config
        vectors, optimiser, info = self._start(state_path)
        advance(info["step"])
        for step in range(info["step"], cfg.steps):
            choice = self.vocab.nearest(vectors)[:, 0]
            value = self.loss(choice, self._sample(stream_generator(self.seed, self.index, 0, step), cfg.batch),
                              vectors)
            optimiser.zero_grad()
            value.backward()
            optimiser.step()
            info["losses"].append(value.item())
            info["step"] = step + 1
            if info["step"] % cfg.eval_every == 0 or info["step"] == cfg.steps:
                best, best_loss = self.refine(self.vocab.nearest(vectors)[:, 0], vectors)
                if info["best_loss"] is None or best_loss < info["best_loss"]:
                    info["best"], info["best_loss"] = best.tolist(), best_loss
            info["evaluations"] = info.get("evaluations", 0) + self.evaluations
            self.evaluations = 0
            if state_path is not None and (info["step"] % cfg.save_every == 0 or info["step"] == cfg.steps):
                self._save(state_path, vectors, optimiser, info)
            advance(1)
        return self._result(info)

    def _start(self, state_path: Path | None):
        gen = stream_generator(self.seed, self.index, 2, 0)
        choice = torch.randint(len(self.vocab), (self.config.tokens,), generator=gen)
        vectors = initial_vectors(self.vocab, choice, self.pipe)
        optimiser = torch.optim.Adam(vectors, lr=self.config.lr)
        info: dict[str, Any] = {"step": 0, "losses": [], "best": None, "best_loss": None, "evaluations": 0,
                                "prompt": self.prompt, "config": asdict(self.config)}
        saved = load_tensor_state(state_path) if state_path is not None else None
        if saved is not None:
            tensors, info = saved
            if info.get("prompt") != self.prompt or info.get("config") != asdict(self.config):
                raise HsteerError(f"{state_path} is the state of another attack (prompt or settings differ); "
                                  "use another out_dir or remove it", field="out_dir")
            shapes = {f"{kind}{n}{tail}": tuple(v.shape) for n, v in enumerate(vectors)
                      for kind, tail in (("vector_", ""), ("adam_", "_exp_avg"), ("adam_", "_exp_avg_sq"))}
            if any(tuple(getattr(tensors.get(k), "shape", ())) != shape for k, shape in shapes.items()
                   if k.startswith("vector_") or k in tensors) or any(i >= len(self.vocab) for i in info["best"] or ()):
                raise HsteerError(f"{state_path}: damaged attack state (vectors of another shape, or token "
                                  "indices beyond the vocabulary); remove it to restart that prompt's attack")
            with torch.no_grad():
                for n, vec in enumerate(vectors):
                    vec.copy_(tensors[f"vector_{n}"])
            optimiser.load_state_dict(_adam_state(optimiser, tensors))
        return vectors, optimiser, info

    def _save(self, path: Path, vectors, optimiser, info: dict[str, Any]) -> None:
        tensors = {f"vector_{n}": v for n, v in enumerate(vectors)}
        for n, state in optimiser.state_dict()["state"].items():
            tensors.update({f"adam_{n}_{k}": torch.as_tensor(v) for k, v in state.items()})
        save_tensor_state(path, tensors, info)

    def _result(self, info: dict[str, Any]) -> dict[str, Any]:
        best = torch.tensor(info["best"])
        return {"prompt": self.text(best), "source_prompt": self.prompt,
                "tokens": [self.vocab.words[i] for i in info["best"]], "loss": info["best_loss"],
                "steps": info["step"], "evaluations": info["evaluations"], "losses": info["losses"]}


def _table_row(pipe, n: int, vocab: Vocabulary, candidate: int) -> torch.Tensor:
    """Encoder n's input embedding of a candidate word."""
    from hsteer.attacks.text import encoders

    table = encoders(pipe)[n][1].get_input_embeddings().weight
    return table[vocab.ids[n][candidate].to(table.device)].detach().float()


def _adam_state(optimiser: torch.optim.Adam, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The optimiser's state dict rebuilt from saved tensors (`adam_<param>_<key>`)."""
    current = optimiser.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("adam_"):
            _, n, name = key.split("_", 2)
            state.setdefault(int(n), {})[name] = value
    return {"state": state, "param_groups": current["param_groups"]}
