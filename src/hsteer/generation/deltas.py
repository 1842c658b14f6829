"""From drawn concepts to the deltas of one pipeline call, grouped by step window.

A concept acts in the window it was learned for (`Concept.window`, every step if none); an explicit
window applies to every concept. So a fair shape x colour batch adds shape late and colour early, in
`generate` and in an attached pipeline alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hsteer.errors import HsteerError
from hsteer.steering.attach import WindowDeltas
from hsteer.steering.bank import ConceptBank
from hsteer.steering.hook import check_window
from hsteer.policies import require_bank

Draw = Sequence[tuple[str, float]]


def delta_for(bank: ConceptBank, concepts: Draw, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum of scale * concept over `concepts` (zeros when empty)."""
    total = torch.zeros(shape)
    for name, scale in concepts:
        total += scale * bank[name].delta()
    if not bool(torch.isfinite(total).all()):
        used = ", ".join(f"{n}={s:g}" for n, s in concepts)
        raise HsteerError(f"the steering delta of {used} is NaN or infinite (a damaged concept, or a scale too "
                          "large); check the bank with `hsteer bank show`, or lower the scale")
    return total


def concept_window(bank: ConceptBank, name: str, window: tuple[float, float] | None) -> tuple[float, float]:
    """The step window concept `name` acts in: the explicit one, else the one it was learned for."""
    return check_window(*(window or bank[name].window or (0.0, 1.0)))


def window_deltas(bank: ConceptBank | None, draws: Sequence[Draw], shape: tuple[int, ...],
                  window: tuple[float, float] | None = None) -> list[WindowDeltas]:
    """The deltas of one call, one entry per step window (sorted), each `(images, C, h, w)`: image i's
    concepts of that window summed, zeros for images with none there. No concept at all: []."""
    if not any(draws):
        return []
    bank = require_bank(bank, "steering")
    windows = sorted({concept_window(bank, name, window) for draw in draws for name, _ in draw})
    out = []
    for start, end in windows:
        inside = [[(n, s) for n, s in draw if concept_window(bank, n, window) == (start, end)] for draw in draws]
        out.append(WindowDeltas(start, end, torch.stack([delta_for(bank, d, shape) for d in inside])))
    return out
