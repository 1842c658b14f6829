"""Encoded prompts as the denoisers consume them: one `TextCondition` per batch, whatever the family."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextCondition:
    """Encoded prompts, one row per sample; `added` holds SDXL's pooled text embeds and time ids, SD3's and
    FLUX's pooled embeds (`pooled`), SANA's attention mask (`mask`)."""

    embeds: torch.Tensor
    added: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def expand(self, n: int) -> TextCondition:
        """Repeat a single-row condition to `n` rows (no copy)."""
        if len(self) != 1:
            raise ValueError("only a one-row condition can be expanded")
        added = {k: v.expand(n, *v.shape[1:]) for k, v in self.added.items()} if self.added else None
        return TextCondition(self.embeds.expand(n, *self.embeds.shape[1:]), added)

    def select(self, index: torch.Tensor) -> TextCondition:
        """The condition of the rows `index` selects (the added conditioning too)."""
        added = {k: v[index] for k, v in self.added.items()} if self.added else None
        return TextCondition(self.embeds[index], added)

    @staticmethod
    def cat(conds: list[TextCondition]) -> TextCondition:
        """The conditions stacked along the batch (the added conditioning too, keyed as the first one's)."""
        added = None
        if conds[0].added:
            added = {k: torch.cat([c.added[k] for c in conds]) for k in conds[0].added}
        return TextCondition(torch.cat([c.embeds for c in conds]), added)
