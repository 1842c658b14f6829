"""Banks of random concepts, for measuring and testing steering without training anything.

A concept's meaning does not matter when what is measured is the cost of steering (the benchmarks) or its
mechanics (the tests: concepts reach the right images, banks round-trip, a different U-Net is refused).
Such a bank needs only the pipeline's h-space shape and U-Net fingerprint, and seeded tensors so that a
run repeats. One builder serves both, so they cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Mapping, Sequence

import torch

from hsteer.steering.bank import Concept, ConceptBank
from hsteer.steering.siteshape import bind_site, site_meta, site_shape
from hsteer.model.geometry import unet_fingerprint
from hsteer.model.families import DEFAULT_FAMILY_KEY
from hsteer.model.sites import denoiser_of, family_of, site_for

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


def random_bank(pipe: Pipeline, names_by_group: Mapping[str, Sequence[str]], *, scale: float = 1.0,
                seed: int = 0, site: str | None = None, height: int | None = None,
                width: int | None = None) -> ConceptBank:
    """CoDSMa-shaped concepts (one tensor `c`) of `pipe`'s shape at `site` (its default site when None; the
    U-Net's h-space), at `height` x `width` (the native size when not given), tagged with its denoiser.

    `names_by_group`: group -> concept names, in order. Each `c` is `scale` x standard normal noise, drawn
    in that order from one CPU generator seeded with `seed`: the same call gives the same bank.
    """
    where = bind_site(pipe, site_for(pipe, site), height, width)
    shape = site_shape(pipe, where, height, width)
    g = torch.Generator().manual_seed(seed)
    meta = {"unet_fingerprint": unet_fingerprint(denoiser_of(pipe))}
    family = family_of(pipe)
    if site is not None or family != DEFAULT_FAMILY_KEY:  # U-Net mid-block banks stay as they always were
        meta.update(site_meta(where), family=family)
    return ConceptBank(concepts=[Concept(n, grp, "codsma", {"c": scale * torch.randn(shape, generator=g)}, dict(meta))
                                 for grp, names in names_by_group.items() for n in names])
