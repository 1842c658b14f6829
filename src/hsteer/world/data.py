"""What the toy-world model learns from: its word-level tokenizer, the rendered (image, caption) pairs, and
the captions tokenised once.

Kept apart from the training loop because the tokenizer files ship inside the bundled model and the data
are a pure function of the seed: both can be built and checked without training anything.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsteer.world import scene

MAX_LENGTH = 16
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
#: Characters other text falls back to, one token each (and each as a word end).
_FALLBACK_CHARACTERS = string.ascii_lowercase + string.digits + ".,'!?-"
_NO_MERGE = 1 << 60


# --------------------------------------------------------------------------- tokenizer


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP-style BPE of one lower-case word (mirrors ``CLIPTokenizer.bpe``)."""
    syms = list(word[:-1]) + [word[-1] + "</w>"]
    while len(syms) > 1:
        r, i = min((ranks.get((syms[i], syms[i + 1]), _NO_MERGE), i) for i in range(len(syms) - 1))
        if r == _NO_MERGE:
            break
        a, b = syms[i], syms[i + 1]
        out, j = [], 0
        while j < len(syms):
            if j < len(syms) - 1 and syms[j] == a and syms[j + 1] == b:
                out.append(a + b)
                j += 2
            else:
                out.append(syms[j])
                j += 1
        syms = out
    return syms


def _vocab_and_merges(words) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Special tokens, single characters, then merge chains until every word in `words` is one token."""
    vocab: dict[str, int] = {}

    def add(tok: str) -> None:
        vocab.setdefault(tok, len(vocab))

    for t in SPECIAL_TOKENS:
        add(t)
    for ch in _FALLBACK_CHARACTERS:
        add(ch)
        add(ch + "</w>")
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for _ in range(50):  # add merge chains until every word is a single token
        changed = False
        for w in words:
            pieces = _bpe(w, ranks)
            if len(pieces) > 1:
                changed = True
                cur = pieces[0]
                for p in pieces[1:]:
                    if (cur, p) not in ranks:
                        ranks[(cur, p)] = len(merges)
                        merges.append((cur, p))
                    cur += p
                    add(cur)
        if not changed:
            break
    assert all(len(_bpe(w, ranks)) == 1 for w in words)
    return vocab, merges


def _write_tokenizer_configs(directory: Path) -> None:
    """tokenizer_config.json and special_tokens_map.json: what ``CLIPTokenizer.from_pretrained`` reads."""
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": MAX_LENGTH,
                "bos_token": SPECIAL_TOKENS[0],
                "eos_token": SPECIAL_TOKENS[1],
                "unk_token": SPECIAL_TOKENS[1],
                "pad_token": SPECIAL_TOKENS[1],
                "do_lower_case": True,
                "clean_up_tokenization_spaces": True,
            },
            indent=2,
        )
    )
    (directory / "special_tokens_map.json").write_text(
        json.dumps(
            {"bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[1], "unk_token": SPECIAL_TOKENS[1],
             "pad_token": SPECIAL_TOKENS[1]},
            indent=2,
        )
    )


def build_tokenizer_files(directory: Path, words=scene.VOCABULARY) -> None:
    """Write vocab.json / merges.txt / configs of a word-level CLIP tokenizer.

    Every world word becomes exactly one token; other text falls back to single
    characters (lower-case letters, digits, a little punctuation).
    """
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocab_and_merges(words)
    (directory / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    )
    _write_tokenizer_configs(directory)


def load_tokenizer(directory: Path):
    """The tokenizer in `directory`, refused unless every world word is one token (the model relies on it)."""
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(directory))
    for w in scene.VOCABULARY:
        ids = tok(w, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise RuntimeError(f"tokenizer splits world word {w!r} into {ids}")
    return tok


# --------------------------------------------------------------------------- data


def render_dataset(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``n`` (image, caption) pairs from :func:`scene.sample_example`: uint8 (n,32,32,3), captions."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, scene.SIZE, scene.SIZE, 3), dtype=np.uint8)
    captions: list[str] = []
    for i in range(n):
        cap = scene.make_caption(rng)
        shape, colour, prof, harm = scene.sample_attributes(cap, rng)
        images[i] = scene.render_array(shape, colour, prof, harm, rng)
        captions.append(cap)
    return images, captions


def to_tensor(images_u8: np.ndarray):
    """uint8 (n, H, W, 3) images -> float (n, 3, H, W) in [-1, 1], the VAE's input range."""
    import torch

    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


@dataclass
class Captions:
    """Every distinct caption tokenised once; each training image points at its caption's row."""

    ids: object  # (distinct captions, MAX_LENGTH) token ids
    of_image: object  # caption row of each image
    empty: int  # row of the empty caption (caption dropout)

    @classmethod
    def build(cls, tokenizer, captions: list[str]) -> Captions:
        """Tokenise each distinct caption (and the empty one, for caption dropout) once; each image keeps
        its caption's index."""
        import torch

        uniq = sorted(set(captions) | {""})
        enc = tokenizer(uniq, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
        index = {c: i for i, c in enumerate(uniq)}
        return cls(enc.input_ids, torch.tensor([index[c] for c in captions]), index[""])
