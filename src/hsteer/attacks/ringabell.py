"""The black-box attack, Ring-A-Bell-style: a harm direction in the text encoder's output space, then a
genetic search for tokens whose encoding carries it.

1. The direction: the mean, over (clean, harmful) prompt pairs, of E(harmful) - E(clean), where E is the
   pipeline's conditional text encoding (the sequence of hidden states the denoiser reads, flattened;
   SDXL: both encoders' states, concatenated as the pipeline does; SD3: its CLIP and T5 states, joined as
   its pipeline joins them; FLUX: T5's sequence, which is what its transformer reads token by token). The pairs come from a safety
   concept's training prompts in its bank (`hsteer.gate.training_pairs`), or are given.
2. The target of harm prompt P: E(P) + eta * direction.
3. A genetic search over k candidate words (`attacks.text`; `exclude` keeps words out, e.g. the harm
   words the gate keys on): the whole prompt (`whole`, as Ring-A-Bell writes its prompts), or k words
   added before or after P (`prefix`/`suffix`). Fitness: the cosine between the candidate's encoding and
   the target. Each generation keeps the best tenth, fills the rest by tournament selection (3), one-point
   crossover and per-word mutation, all from a generator seeded by (seed, prompt, generation).

The search never runs the denoiser: it needs only the text encoder, which is why it transfers to any
defence; the found prompts are then scored on the defended model. The state (the population, the
generation, the best prompt) is saved as JSON every `save_every` generations, and a resumed search ends
where an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from hsteer.attacks.state import load_json_state, save_json_state
from hsteer.attacks.text import Vocabulary, compose
from hsteer.errors import HsteerError
from hsteer.model.diffusion import encode_text
from hsteer.model.sites import denoiser_of

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

PLACEMENTS = ("whole", "prefix", "suffix")


@dataclass(frozen=True)
class RingABellConfig:
    """The black-box search's budget and settings (see the module docstring)."""

    tokens: int = 8
    position: str = "whole"
    population: int = 64
    generations: int = 40
    eta: float = 1.0
    mutation: float = 0.2
    crossover: float = 0.5
    save_every: int = 5

    def __post_init__(self) -> None:
        if self.position not in PLACEMENTS:
            raise HsteerError(f"position must be one of {', '.join(PLACEMENTS)}, got {self.position!r}")
        for name in ("tokens", "generations", "save_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise HsteerError(f"ringabell {name} must be a whole number >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.population, int) or self.population < 2:
            raise HsteerError(f"ringabell population must be a whole number >= 2, got {self.population!r}")
        if not (0.0 <= self.mutation <= 1.0 and 0.0 <= self.crossover <= 1.0):
            raise HsteerError("ringabell mutation and crossover are probabilities in [0, 1]")


def embed(pipe: Pipeline, prompts: Sequence[str], batch: int = 64) -> torch.Tensor:
    """The flattened conditional encodings (B, L * D) of the prompts."""
    out = [encode_text(pipe, list(prompts[i:i + batch])).embeds.flatten(1).float()
           for i in range(0, len(prompts), batch)]
    return torch.cat(out)


def harm_direction(pipe: Pipeline, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
    """The mean of E(harmful) - E(clean) over (clean, harmful) pairs."""
    pairs = [(clean, harm) for clean, harm in pairs if clean != harm]
    if not pairs:
        raise HsteerError("the Ring-A-Bell direction needs (clean, harmful) prompt pairs that differ")
    clean = embed(pipe, [c for c, _ in pairs])
    harm = embed(pipe, [h for _, h in pairs])
    return (harm - clean).mean(0)


def bank_pairs(bank, group: str = "safety") -> list[tuple[str, str]]:
    """(clean, harmful) pairs from the training prompts of a bank group's concepts."""
    from hsteer.gate import training_pairs

    pairs = [pair for concept in bank.group(group) for pair in training_pairs(concept)]
    if not pairs:
        raise HsteerError(f"the bank's group {group!r} holds no concept with training prompt pairs; give the "
                          "Ring-A-Bell pairs another way (pairs)", field="pairs")
    return pairs


def harm_words(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The words the harmful side of the pairs adds (what the gate keys on), e.g. to exclude them."""
    found: dict[str, None] = {}
    for clean, harm in pairs:
        for word in harm.split():
            if word not in clean.split():
                found[word] = None
    return list(found)


def _generation_rng(seed: int, index: int, generation: int, stream: int = 3) -> np.random.Generator:
    """The generator of one generation (stream 3), or of the first population (stream 4)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), stream, int(generation)]))


class RingABellSearch:
    """The genetic search for one harm prompt."""

    def __init__(self, pipe: Pipeline, vocab: Vocabulary, prompt: str, direction: torch.Tensor,
                 config: RingABellConfig,
                 *, seed: int, index: int) -> None:
        self.pipe, self.vocab, self.prompt, self.config = pipe, vocab, prompt, config
        self.seed, self.index = seed, index
        self.target = F.normalize(embed(pipe, [prompt])[0] + config.eta * direction.to(denoiser_of(pipe).device), dim=0)
        self.evaluations = 0

    def text(self, genes: Sequence[int]) -> str:
        """The prompt a genome stands for: the words alone (whole) or around the harm prompt."""
        words = [self.vocab.words[int(g)] for g in genes]
        return " ".join(words) if self.config.position == "whole" else compose(self.prompt, words,
                                                                                self.config.position)

    def fitness(self, population: np.ndarray) -> np.ndarray:
        """Cosine of each candidate's encoding with the target."""
        self.evaluations += len(population)
        codes = F.normalize(embed(self.pipe, [self.text(g) for g in population]), dim=-1)
        return (codes @ self.target).cpu().numpy()

    def next_population(self, population: np.ndarray, fit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Elitism, tournament selection, one-point crossover and per-word mutation (module docstring, step 3)."""
        cfg = self.config
        order = np.argsort(-fit, kind="stable")
        elite = population[order[: max(1, cfg.population // 10)]]
        children = []
        while len(elite) + len(children) < cfg.population:
            a, b = (population[max(rng.choice(len(population), 3), key=lambda n: fit[n])] for _ in range(2))
            child = a.copy()
            if rng.random() < cfg.crossover and cfg.tokens > 1:
                cut = int(rng.integers(1, cfg.tokens))
                child[cut:] = b[cut:]
            mutate = rng.random(cfg.tokens) < cfg.mutation
            child[mutate] = rng.integers(0, len(self.vocab), int(mutate.sum()))
            children.append(child)
        return np.concatenate([elite, np.asarray(children, dtype=elite.dtype).reshape(-1, cfg.tokens)])

    def run(self, state_path: Path | None, advance: Callable[[int], Any] = lambda n: None) -> dict[str, Any]:
        """Search (resuming from `state_path`); the best prompt and its fitness."""
        cfg = self.config
        info = self._start(state_path)
        population = np.asarray(info["population"], dtype=np.int64)
        advance(info["generation"])
        for generation in range(info["generation"], cfg.generations):
            fit = self.fitness(population)
            best = int(np.argmax(fit))
            if info["best_fitness"] is None or fit[best] > info["best_fitness"]:
                info["best"], info["best_fitness"] = population[best].tolist(), float(fit[best])
            info["history"].append(float(fit.max()))
            population = self.next_population(population, fit, _generation_rng(self.seed, self.index, generation))
            info.update(generation=generation + 1, population=population.tolist(),
                        evaluations=info["evaluations"] + self.evaluations)
            self.evaluations = 0
            if state_path is not None and (info["generation"] % cfg.save_every == 0
                                           or info["generation"] == cfg.generations):
                save_json_state(state_path, info)
            advance(1)
        return {"prompt": self.text(info["best"]), "source_prompt": self.prompt,
                "tokens": [self.vocab.words[g] for g in info["best"]], "fitness": info["best_fitness"],
                "generations": info["generation"], "evaluations": info["evaluations"], "history": info["history"]}

    def _start(self, state_path: Path | None) -> dict[str, Any]:
        saved = load_json_state(state_path) if state_path is not None else None
        if saved is not None:
            if saved.get("prompt") != self.prompt or saved.get("config") != asdict(self.config):
                raise HsteerError(f"{state_path} is the state of another attack (prompt or settings differ); "
                                  "use another out_dir or remove it", field="out_dir")
            rows = saved["population"] + ([saved["best"]] if saved["best"] is not None else [])
            if len(saved["population"]) != self.config.population or any(
                    len(r) != self.config.tokens or max(r, default=0) >= len(self.vocab) for r in rows):
                raise HsteerError(f"{state_path}: damaged attack state (a population of another size, or token "
                                  "indices beyond the vocabulary); remove it to restart that prompt's attack")
            return saved
        rng = _generation_rng(self.seed, self.index, 0, stream=4)
        population = rng.integers(0, len(self.vocab), (self.config.population, self.config.tokens))
        return {"generation": 0, "population": population.tolist(), "best": None, "best_fitness": None,
                "history": [], "evaluations": 0, "prompt": self.prompt, "config": asdict(self.config)}
