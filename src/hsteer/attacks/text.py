"""Prompts as token sequences an attack can change: the candidate vocabulary and differentiable encoding.

Why a candidate vocabulary: an attack's output is a *text* prompt (the pipeline and the prompt-aware gate
read text), so every adversarial token must come back as itself when its text is tokenized again. A
candidate is a token whose decoded word tokenizes to exactly that one token, in every tokenizer of the
pipeline. Tokens that only occur inside words (BPE pieces without the end-of-word mark) are left out:
written as text they would merge with their neighbours into other tokens.

SDXL has two tokenizers and two text encoders, SD3 up to three (CLIP-L, CLIP-G, T5), FLUX two (CLIP for
the pooled vector, T5 for the sequence). Our choice: a candidate is a *word* every tokenizer reads as one
token (for SDXL's CLIP-L and OpenCLIP-G tokenizers, which share the vocabulary, that is every one-token
word; T5's vocabulary narrows it); each adversarial position holds one continuous vector per encoder,
each in its own encoder's input embedding table, and the projection picks the one word whose embeddings
are closest in all tables together (summed cosine similarity), so every encoder always reads the same
word. A slot the pipeline leaves empty (the bundled DiT has no T5) has no vector.

Differentiable encoding: the pipeline's own `encode_prompt` runs on the projected text while a forward
hook on each encoder's input embedding table replaces the adversarial positions' rows by
`projected + (continuous - continuous.detach())`: the forward pass is exactly the discrete prompt's
(the one generation will see), and the gradient reaches the continuous vectors (straight-through).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hsteer.errors import HsteerError
from hsteer.model.diffusion import TextCondition, encode_unconditional
from hsteer.model.families import family_for
from hsteer.model.sites import denoiser_of

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

POSITIONS = ("prefix", "suffix")


def encoders(pipe: Pipeline) -> list[tuple[object, torch.nn.Module]]:
    """The pipeline's (tokenizer, text encoder) pairs, in its slots' order: one for SD 1.x/2.x, two for SDXL
    and FLUX, up to three for SD3 (an empty slot is skipped)."""
    found = []
    for suffix in ("", "_2", "_3"):
        tokenizer, encoder = getattr(pipe, f"tokenizer{suffix}", None), getattr(pipe, f"text_encoder{suffix}", None)
        if tokenizer is not None and encoder is not None:
            found.append((tokenizer, encoder))
    if not found:
        raise HsteerError(f"{type(pipe).__name__} has no tokenizer and text encoder; an attack needs text prompts")
    return found


def content_ids(tokenizer, text: str) -> list[int]:
    """The text's token ids without the special tokens (untruncated)."""
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    return [i for i in tokenizer(text, truncation=False).input_ids if i not in special]


@dataclass
class Vocabulary:
    """The candidate words, and per encoder their token ids and unit embedding vectors."""

    words: list[str]
    ids: list[torch.Tensor]  # per encoder: (V,) long
    units: list[torch.Tensor]  # per encoder: (V, D) float, unit rows

    def __len__(self) -> int:
        return len(self.words)

    def index(self, word: str) -> int:
        """The position of `word` in the vocabulary (ValueError where it is not in it)."""
        return self.words.index(word)

    def nearest(self, vectors: Sequence[torch.Tensor], top: int = 1) -> torch.Tensor:
        """(k, top) candidate indices closest to each position's vectors (cosine summed over the encoders)."""
        score = sum(F.normalize(v.detach().float(), dim=-1) @ u.T for v, u in zip(vectors, self.units))
        return score.topk(min(top, len(self)), dim=-1).indices


def _one_token_word(tokenizer, token_id: int) -> str | None:
    word = tokenizer.decode([token_id]).strip()
    if not word or any(ch.isspace() for ch in word):
        return None
    return word if content_ids(tokenizer, word) == [token_id] else None


def build_vocabulary(pipe: Pipeline, exclude: Sequence[str] = ()) -> Vocabulary:
    """Every word each tokenizer of `pipe` reads as one token, except the `exclude`d words (case-insensitive)."""
    pairs = encoders(pipe)
    banned = {w.lower() for w in exclude}
    first = pairs[0][0]
    special = {first.bos_token_id, first.eos_token_id, first.pad_token_id}
    words, ids = [], [[] for _ in pairs]
    for token_id in range(len(first)):
        word = None if token_id in special else _one_token_word(first, token_id)
        if word is None or word.lower() in banned or word in words:
            continue
        others = [content_ids(tok, word) for tok, _ in pairs[1:]]
        if any(len(o) != 1 for o in others):
            continue
        words.append(word)
        for n, token in enumerate([token_id] + [o[0] for o in others]):
            ids[n].append(token)
    if not words:
        raise HsteerError("no candidate tokens are left for the attack (every one-token word was excluded)")
    id_tensors = [torch.tensor(i, dtype=torch.long) for i in ids]
    units = [F.normalize(enc.get_input_embeddings().weight.detach().float().cpu()[i], dim=-1)
             for (_, enc), i in zip(pairs, id_tensors)]
    return Vocabulary(words, id_tensors, units)


def compose(prompt: str, words: Sequence[str], position: str) -> str:
    """The prompt with the adversarial words before it (prefix) or after it (suffix)."""
    if position not in POSITIONS:
        raise HsteerError(f"unknown position {position!r}; use prefix or suffix")
    adv = " ".join(words)
    return f"{adv} {prompt}" if position == "prefix" else f"{prompt} {adv}"


def _lead(tokenizer) -> tuple[int, int]:
    """(tokens before a text's own, special tokens around it): CLIP (1, 2) with its start and end tokens,
    T5 (0, 1) with its end token alone."""
    ids = tokenizer("", truncation=False).input_ids
    bos = tokenizer.bos_token_id
    lead = 0
    while bos is not None and lead < len(ids) and ids[lead] == bos:
        lead += 1
    return lead, len(ids)


def adversarial_positions(pipe: Pipeline, prompt: str, k: int, position: str) -> list[list[int]]:
    """Per encoder, the k sequence positions (after any start token) the adversarial words take; checked to
    fit in the encoder's context so that no word of the prompt is cut off."""
    out = []
    for tokenizer, _ in encoders(pipe):
        n = len(content_ids(tokenizer, prompt))
        lead, special = _lead(tokenizer)
        room = int(tokenizer.model_max_length) - special
        if n + k > room:
            raise HsteerError(f"the prompt {prompt!r} takes {n} tokens; with {k} adversarial tokens it exceeds the "
                              f"text encoder's {room}; use fewer tokens or a shorter prompt", field="tokens")
        start = lead if position == "prefix" else lead + n
        out.append(list(range(start, start + k)))
    return out


def initial_vectors(vocab: Vocabulary, choice: torch.Tensor, pipe: Pipeline) -> list[torch.Tensor]:
    """Per encoder, the (k, D) input embeddings of the chosen candidates: the continuous start."""
    return [enc.get_input_embeddings().weight.detach().float()[vocab.ids[n][choice].to(
        enc.get_input_embeddings().weight.device)].clone().requires_grad_(True)
        for n, (_, enc) in enumerate(encoders(pipe))]


@contextlib.contextmanager
def straight_through(pipe: Pipeline, positions: list[list[int]], chosen_ids: list[torch.Tensor],
                     vectors: Sequence[torch.Tensor]) -> Iterator[None]:
    """While inside, each encoder's input embeddings at `positions` carry `vectors`' gradient (values unchanged)."""
    handles = []
    for n, (_, encoder) in enumerate(encoders(pipe)):
        pos, ids, vec = positions[n], chosen_ids[n], vectors[n]

        def hook(module, inputs, output, pos=pos, ids=ids, vec=vec):
            if output.dim() != 3 or output.shape[1] <= pos[-1]:
                return output
            seen = inputs[0][:, pos].cpu() if inputs and torch.is_tensor(inputs[0]) else None
            if seen is not None and not bool((seen == ids.view(1, -1)).all()):
                raise HsteerError("the adversarial tokens did not land where expected; the prompt's tokenization "
                                  "changed around them")
            out = output.clone()
            delta = (vec - vec.detach()).to(out.dtype)
            out[:, pos] = out[:, pos] + delta.unsqueeze(0)
            return out

        handles += [table.register_forward_hook(hook) for table in _lookups(encoder)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _lookups(encoder: torch.nn.Module) -> list[torch.nn.Module]:
    """The embedding modules that look the encoder's tokens up in its input table. Usually the table itself;
    T5's encoder looks up through its own `embed_tokens`, which shares the weight of the `shared` table the
    encoder hands out, so every embedding module holding that weight is hooked (the one called fires)."""
    table = encoder.get_input_embeddings()
    found = [m for m in encoder.modules() if isinstance(m, torch.nn.Embedding) and m.weight is table.weight]
    return found or [table]


def encode_prompt_grad(pipe: Pipeline, text: str, template: TextCondition) -> TextCondition:
    """One prompt encoded as the pipeline's conditional branch (its family's encoding), with gradients (see
    `straight_through`); inputs that depend on the image size, not the text (SDXL's time ids), are taken
    from `template` (the unconditional condition of the run's size)."""
    cond = family_for(pipe).encode_text(pipe, [text], denoiser_of(pipe).device, None, None)
    if template.added and cond.added and "time_ids" in template.added:
        cond.added["time_ids"] = template.added["time_ids"][:1]
    return cond


def unconditional(pipe: Pipeline, negative_prompt: str | None, height: int, width: int) -> TextCondition:
    """The guidance base: the negative prompt's encoding, else the pipeline's own unconditional branch."""
    base = encode_unconditional(pipe, height, width)
    if not negative_prompt:
        return base
    with torch.no_grad():
        cond = encode_prompt_grad(pipe, negative_prompt, base)
    return TextCondition(cond.embeds.detach(), {k: v.detach() for k, v in cond.added.items()} if cond.added else None)
