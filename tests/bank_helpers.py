"""A bank of random concepts for a pipeline, shared by the steering and attach tests."""

import torch

from hsteer import ConceptBank
from hsteer.hspace.bank import Concept
from hsteer.model import pipeline_hspace_shape, unet_fingerprint


def random_bank(pipe, names=("woman", "man"), group="gender") -> ConceptBank:
    """Concepts of the pipeline's h-space shape and U-Net, seeded, large enough to change images."""
    shape = pipeline_hspace_shape(pipe)
    g = torch.Generator().manual_seed(3)
    meta = {"unet_fingerprint": unet_fingerprint(pipe.unet)}
    return ConceptBank(concepts=[Concept(n, group, "codsma", {"c": torch.randn(shape, generator=g) * 3}, meta)
                                 for n in names])
