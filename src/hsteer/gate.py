"""The prompt-aware gate: a fair concept never redraws an attribute the prompt names, and the safety
concept acts only as far as the prompt carries the harm it was trained against.

What a concept is *about* comes from its bank, not from a word list: each concept's training prompts
(its neutral and target prompts, or its prompt pairs) differ by a few tokens, its *key tokens*: "circle"
for a concept trained from "a photo of a figure" -> "a photo of a circle figure", "violent", "bloody",
... for a safety concept trained from harmful -> clean pairs. A prompt is read through the model's own
tokenizer(s) and text encoder(s) (SDXL: both), and each concept gets a score in [0, 1]: how strongly
some token of the prompt matches one of its key tokens. Three readers (`GATES`), measured in the
README's "Steering that respects the prompt" table:

- `token`: exact key-token match (1 or 0). Cheapest; blind to synonyms and spelling variants.
- `embedding` (the default): the cosine similarity between the prompt's token embeddings (the text
  encoder's input embedding table, context-free) and the key tokens' embeddings. Exact words score 1;
  on a real CLIP, near-synonyms score between the threshold and 1.
- `context`: the same similarity on the text encoder's last hidden states (what the denoiser consumes),
  centred on the states of the concept's own neutral prompts.

Fair: a group whose member the prompt names (score >= `threshold`, and above every other member) is not
redrawn for that image; `named="add"` adds the named member's own concept instead. Safe: under the
default gate the safety concept acts at full strength (`weaken_safety=False`: prompts without a harm word
can still make the model draw harm, and a gate on the prompt's words lets them through; docs/attacks.md);
with `embedding-soft` / `-hard` its scale is multiplied by a strength in [0, 1] from its score (`soft_safety`: a ramp from
`soft_from` to `threshold`; hard: 0 or 1). A concept without training prompts (e.g. a random bank) has
no key tokens and is never gated.

What it keys on, and its blind spot: the gate reads only the prompt's tokens. Under a gate that weakens
safety, a harm prompt that reaches the harm through words unlike any key token gets strength 0; the
adversarial-attack harness measured exactly that, which is why the default does not weaken safety. `respect_prompt=False` gives back the papers' blind behaviour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
import torch.nn.functional as F

from hsteer.errors import HsteerError
from hsteer.steering.bank import Concept, ConceptBank

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

READERS = ("token", "embedding", "context")


@dataclass(frozen=True)
class GateConfig:
    """How prompts are read: the reader, the score that counts as naming, and the safety ramp."""

    reader: str = "embedding"
    threshold: float = 0.7
    soft_safety: bool = True
    soft_from: float = 0.4
    named: str = "keep"  # keep: the named member stays as the prompt has it; add: add its concept
    # False: safety concepts always act at full strength (the default gate). An attack found prompts with
    # no harm word that the plain model still draws harm for; a gate that weakens safety by the prompt's
    # words lets them through (docs/attacks.md), so only fair groups are gated by default.
    weaken_safety: bool = True

    def __post_init__(self) -> None:
        if self.reader not in READERS:
            raise HsteerError(f"unknown gate reader {self.reader!r}; use one of {', '.join(READERS)}")
        if self.named not in ("keep", "add"):
            raise HsteerError(f"gate named={self.named!r}: use 'keep' or 'add'")
        if not 0.0 <= self.soft_from < self.threshold <= 1.0:
            raise HsteerError(f"gate needs 0 <= soft_from < threshold <= 1, got {self.soft_from}, {self.threshold}")

    def strength(self, score: float) -> float:
        """The safety concept's scale factor for a prompt with this harm score."""
        if not self.weaken_safety:
            return 1.0
        if not self.soft_safety:
            return 1.0 if score >= self.threshold else 0.0
        return float(min(1.0, max(0.0, (score - self.soft_from) / (self.threshold - self.soft_from))))


#: Named gates: the measured candidates (README table). The default, "embedding", gates fair groups and
#: leaves safety at full strength; "embedding-soft" / "-hard" also scale safety by the prompt's harm score,
#: which keeps harmless prompts untouched but opens the hole the attack harness found.
GATES: Mapping[str, GateConfig] = MappingProxyType({
    "token": GateConfig("token", soft_safety=False),
    "embedding": GateConfig("embedding", weaken_safety=False),
    "embedding-soft": GateConfig("embedding"),
    "embedding-hard": GateConfig("embedding", soft_safety=False),
    "context": GateConfig("context"),
})
DEFAULT_GATE = "embedding"


def gate_config(gate: str | GateConfig | None) -> GateConfig:
    """A gate by name (`GATES`) or as given; None is the default gate."""
    if isinstance(gate, GateConfig):
        return gate
    name = DEFAULT_GATE if gate is None else gate
    if name not in GATES:
        raise HsteerError(f"unknown gate {name!r}; use one of {', '.join(GATES)}")
    return GATES[name]


def training_pairs(concept: Concept) -> list[tuple[str, str]]:
    """(without, with) prompt pairs that differ by what the concept is about.

    A concept moves its neutral prompt toward its target. Where the target adds words (an attribute
    concept: "a photo of a figure" -> "a photo of a circle figure") the target side has the attribute;
    where it drops words (a safety concept: "a photo of a violent figure" -> "a photo of a figure") the
    neutral side has the harm; a negative prompt is the harm itself. Identity pairs (harmless prompts kept
    as they are) say nothing.
    """
    meta = concept.meta
    pairs = [(str(a), str(b)) for a, b in (meta.get("pairs") or [])]
    if not pairs and meta.get("target"):
        pairs = [(str(meta.get("neutral") or ""), str(meta["target"]))]
    out = []
    for neutral, target in pairs:
        added, dropped = set(target.split()) - set(neutral.split()), set(neutral.split()) - set(target.split())
        if added:
            out.append((neutral, target))
        elif dropped:
            out.append((target, neutral))
    negative = meta.get("negative")
    if negative:
        neutral = str(meta.get("neutral") or "")
        out.append((neutral, f"{neutral} {negative}".strip()))
    return out


@dataclass
class _Encoder:
    """One tokenizer and text encoder of the pipeline, with what the readers need of them."""

    tokenizer: object
    encoder: torch.nn.Module

    def ids(self, text: str) -> list[int]:
        special = {self.tokenizer.bos_token_id, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        return [i for i in self.tokenizer(text, truncation=True).input_ids if i not in special]

    @torch.no_grad()
    def vectors(self, text: str, reader: str) -> tuple[list[int], torch.Tensor]:
        """The text's token ids and one vector per token (input embeddings, or last hidden states)."""
        ids = self.ids(text)
        device = next(self.encoder.parameters()).device
        if reader != "context":
            table = self.encoder.get_input_embeddings()
            return ids, table(torch.tensor(ids, device=device, dtype=torch.long)).float().cpu()
        full = self.tokenizer(text, truncation=True, return_tensors="pt").input_ids.to(device)
        states = self.encoder(full, output_hidden_states=True).hidden_states[-1][0].float().cpu()
        keep = [n for n, i in enumerate(full[0].tolist()) if i in set(ids)]
        return [full[0, n].item() for n in keep], states[keep]


def _encoders(pipe) -> list[_Encoder]:
    found = []
    for suffix in ("", "_2"):
        tokenizer, encoder = getattr(pipe, f"tokenizer{suffix}", None), getattr(pipe, f"text_encoder{suffix}", None)
        if tokenizer is not None and encoder is not None:
            found.append(_Encoder(tokenizer, encoder))
    if not found:
        raise HsteerError(f"{type(pipe).__name__} has no tokenizer and text encoder to read prompts with; "
                          "pass respect_prompt=False")
    return found


@dataclass
class _Keys:
    """A concept's key tokens, per encoder: their ids and unit vectors."""

    ids: list[set[int]] = field(default_factory=list)
    vectors: list[torch.Tensor] = field(default_factory=list)
    centre: list[torch.Tensor] = field(default_factory=list)


class PromptGate:
    """Reads prompts against a bank's concepts; built once per (pipeline, bank, gate) and cached per prompt."""

    def __init__(self, pipe: Pipeline, bank: ConceptBank, config: GateConfig | str | None = None) -> None:
        self.config = gate_config(config)
        self.bank = bank
        self._encoders = _encoders(pipe)
        self._keys = {c.name: self._concept_keys(c) for c in bank}
        self._cache: dict[str, dict[str, float]] = {}

    def _concept_keys(self, concept: Concept) -> _Keys | None:
        pairs = training_pairs(concept)
        if not pairs:
            return None
        keys = _Keys()
        for enc in self._encoders:
            ids, vecs, neutral = set(), [], []
            for without, with_ in pairs:
                plain = set(enc.ids(without))
                tokens, vectors = enc.vectors(with_, self.config.reader)
                for token, vector in zip(tokens, vectors):
                    if token not in plain:
                        ids.add(token)
                        vecs.append(vector)
                neutral.append(enc.vectors(without, self.config.reader)[1])
            if not vecs:
                return None
            centre = torch.cat(neutral).mean(0) if self.config.reader == "context" else torch.zeros_like(vecs[0])
            keys.ids.append(ids)
            keys.vectors.append(F.normalize(torch.stack(vecs) - centre, dim=-1))
            keys.centre.append(centre)
        return keys

    def scores(self, prompt: str) -> dict[str, float]:
        """Concept name -> how strongly the prompt names what the concept is about, in [0, 1]."""
        if prompt not in self._cache:
            read = {enc_n: self._encoders[enc_n].vectors(prompt, self.config.reader)
                    for enc_n in range(len(self._encoders))}
            self._cache[prompt] = {name: self._score(keys, read) for name, keys in self._keys.items()
                                   if keys is not None}
        return self._cache[prompt]

    def _score(self, keys: _Keys, read: dict[int, tuple[list[int], torch.Tensor]]) -> float:
        per_encoder = []
        for n, (ids, vectors) in read.items():
            if self.config.reader == "token":
                per_encoder.append(1.0 if keys.ids[n] & set(ids) else 0.0)
            elif len(ids):
                sims = F.normalize(vectors - keys.centre[n], dim=-1) @ keys.vectors[n].T
                per_encoder.append(float(sims.max().clamp(0.0, 1.0)))
            else:
                per_encoder.append(0.0)
        return sum(per_encoder) / len(per_encoder)

    def named(self, prompt: str, members: Sequence[str]) -> tuple[str, float] | None:
        """The member of a group the prompt names, with its score, or None."""
        scores = self.scores(prompt)
        ranked = sorted(((scores.get(m, 0.0), m) for m in members), reverse=True)
        if not ranked or ranked[0][0] < self.config.threshold:
            return None
        if len(ranked) > 1 and ranked[1][0] >= ranked[0][0]:
            return None  # two members named as strongly: the prompt does not decide the group
        return ranked[0][1], ranked[0][0]

    def harm(self, prompt: str, members: Sequence[str]) -> float:
        """The prompt's harm score against a safety group (the strongest of its concepts)."""
        scores = self.scores(prompt)
        return max((scores.get(m, 0.0) for m in members), default=0.0)
