"""Banks of random concepts, for measuring and testing steering without training anything.

A concept's meaning does not matter when what is measured is the cost of steering (the benchmarks) or its
mechanics (the tests: concepts reach the right images, banks round-trip, a different U-Net is refused).
Such a bank needs only the pipeline's h-space shape and U-Net fingerprint, and seeded tensors so that a
run repeats. One builder serves both, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from hsteer.hspace.bank import Concept, ConceptBank
from hsteer.model.geometry import pipeline_hspace_shape, unet_fingerprint


def random_bank(pipe, names_by_group: Mapping[str, Sequence[str]], *, scale: float = 1.0,
                seed: int = 0) -> ConceptBank:
    """CoDSMa-shaped concepts (one tensor `c`) of `pipe`'s h-space shape, tagged with its U-Net.

    `names_by_group`: group -> concept names, in order. Each `c` is `scale` x standard normal noise, drawn
    in that order from one CPU generator seeded with `seed`: the same call gives the same bank.
    """
    shape = pipeline_hspace_shape(pipe)
    g = torch.Generator().manual_seed(seed)
    meta = {"unet_fingerprint": unet_fingerprint(pipe.unet)}
    return ConceptBank(concepts=[Concept(n, grp, "codsma", {"c": scale * torch.randn(shape, generator=g)}, meta)
                                 for grp, names in names_by_group.items() for n in names])
