"""CLIP for evaluation: zero-shot attribute classification, image-text alignment (WinoAlign, CLIP score).

Any `CLIPModel` works: a hub id (default openai/clip-vit-base-patch32, as in docs/methods.md §5) or a
local folder saved with `save_pretrained` (model and processor side by side).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hsteer.errors import HsteerError

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
Q16_CLIP = "openai/clip-vit-large-patch14"

GENDER = ("a woman", "a man")
RACE = ("a black-race person", "a white-race person", "a Asian-race person")


def _features(out: Any) -> torch.Tensor:
    """transformers 4 returns the projected features; transformers 5 an output whose pooler_output they are."""
    if isinstance(out, torch.Tensor):
        return out
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise HsteerError(f"unexpected CLIP output {type(out).__name__}")


class ClipScorer:
    """A CLIP model with its processor: normalised image and text embeddings, 100 x cosine alignment."""

    def __init__(self, model: str | Path = DEFAULT_CLIP, *, device: str | torch.device = "cpu",
                 batch_size: int = 32) -> None:
        from transformers import CLIPModel, CLIPProcessor

        from hsteer.model import quiet_libraries

        quiet_libraries()
        self.name = str(model)
        local = Path(model)
        if local.exists() and not (local / "config.json").is_file():
            raise HsteerError(f"{model} is not a CLIP model folder (no config.json); pass a hub id or a folder "
                              "saved with CLIPModel.save_pretrained and CLIPProcessor.save_pretrained")
        try:
            self.model = CLIPModel.from_pretrained(str(model)).eval().to(device)
            self.processor = CLIPProcessor.from_pretrained(str(model))
        except OSError as exc:
            raise HsteerError(f"cannot load CLIP model {model!r}: {str(exc).splitlines()[0]} "
                              "(offline? pass a local CLIP folder)") from exc
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = int(getattr(self.model.config.text_config, "max_position_embeddings", 77))

    @property
    def dim(self) -> int:
        """The width of CLIP's joint image-text embedding (the projection dimension)."""
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def image_embeds(self, images: Sequence[Any]) -> torch.Tensor:
        """(N, D) unit-norm image embeddings (float32, CPU)."""
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = [img.convert("RGB") for img in images[start:start + self.batch_size]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            feats = _features(self.model.get_image_features(pixel_values=pixels)).float().cpu()
            out.append(torch.nn.functional.normalize(feats, dim=-1))
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)

    @torch.no_grad()
    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) unit-norm text embeddings; long texts are truncated to the model's context."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start:start + self.batch_size])
            tokens = self.processor(text=batch, return_tensors="pt", padding=True, truncation=True,
                                    max_length=self.max_length)
            tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
            feats = _features(self.model.get_text_features(**tokens)).float().cpu()
            out.append(torch.nn.functional.normalize(feats, dim=-1))
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)

    def alignment(self, images: Sequence[Any], texts: Sequence[str]) -> list[float]:
        """100 x cos(image_i, text_i) per pair: WinoAlign's logit, and the CLIP score before clamping at 0."""
        if len(images) != len(texts):
            raise ValueError("one text per image")
        unique = list(dict.fromkeys(texts))
        text = self.text_embeds(unique)
        index = {t: n for n, t in enumerate(unique)}
        img = self.image_embeds(images)
        rows = torch.tensor([index[t] for t in texts], dtype=torch.long)
        return (100.0 * (img * text[rows]).sum(-1)).tolist()


class ClipZeroShot:
    """An `AttributeClassifier`: per group, softmax over the attribute texts, argmax per image.

    attributes: group -> the texts (they are also the labels), e.g. {"gender": ("a woman", "a man")}.
    """

    def __init__(self, scorer: ClipScorer, attributes: Mapping[str, Sequence[str]]) -> None:
        if not attributes:
            raise HsteerError("attributes is empty; give each group's texts, e.g. {'gender': ('a woman', 'a man')}",
                              field="attributes")
        for group, texts in attributes.items():
            if len(texts) < 2:
                raise HsteerError(f"attribute group {group!r} needs at least two texts, got {list(texts)}")
            if len(set(texts)) != len(texts):
                raise HsteerError(f"attribute group {group!r} repeats a text: {list(texts)}")
        self.scorer = scorer
        self.attributes: dict[str, tuple[str, ...]] = {g: tuple(t) for g, t in attributes.items()}
        self._text = {g: scorer.text_embeds(list(t)) for g, t in self.attributes.items()}

    def probabilities(self, images: Sequence[Any], embeds: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per attribute group, each image's softmax over the group's text prompts (one row per image);
        pass `embeds` to reuse image embeddings already computed."""
        img = self.scorer.image_embeds(images) if embeds is None else embeds
        scale = float(self.scorer.model.logit_scale.detach().exp())
        return {g: torch.softmax(scale * img @ t.T, dim=-1) for g, t in self._text.items()}

    def classify(self, images: Sequence[Any], embeds: torch.Tensor | None = None) -> dict[str, list[str]]:
        """Per attribute group, each image's most probable attribute (zero-shot CLIP)."""
        probs = self.probabilities(images, embeds)
        return {g: [self.attributes[g][i] for i in p.argmax(-1).tolist()] for g, p in probs.items()}

    __call__ = classify
