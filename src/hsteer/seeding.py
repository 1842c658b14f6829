"""Where every derived seed comes from: one named rule per random stream.

A run is given one seed; each of its random streams (training iteration i, the fast mode's trajectory pool,
SDisc's target images and its epoch order, the world model's quality prompt sets) derives its own seed from
it by a fixed rule. The rules live here, named, because the numbers they produce are part of every result:
a resumed run repeats an iteration exactly because its seed depends only on (seed, iteration), and the
demo's and the benchmarks' published figures change if any rule does. Keep the arithmetic as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: Iteration i of a run with seed s draws from seed s * ITERATION_STRIDE + i: a prime larger than any
#: iteration count a run takes (checked by `checks.check_seed(..., scale=ITERATION_STRIDE)`), so two runs'
#: iterations never share a seed.
ITERATION_STRIDE = 1_000_003

#: The fast mode's trajectory pool starts from seed s * POOL_MULTIPLIER + POOL_OFFSET, a rule of its own
#: (kept as first chosen: every concept trained in fast mode depends on it).
POOL_MULTIPLIER = 7919
POOL_OFFSET = 17

#: SDisc's target image i is generated from seed s * SDISC_IMAGE_STRIDE + i: every image its own seed.
SDISC_IMAGE_STRIDE = 100_003
#: SDisc's epoch order and noise come from seed s + SDISC_ORDER_OFFSET, not s (that one starts the tensors).
SDISC_ORDER_OFFSET = 1

#: Image i of prompt set k in the world model's quality report: seed s * ITERATION_STRIDE + k *
#: QUALITY_SET_STRIDE + i, so the sets (each under QUALITY_SET_STRIDE images) never share a seed.
QUALITY_SET_STRIDE = 100_000


def iteration_seed(seed: int, iteration: int) -> int:
    """The seed of training iteration `iteration`: a function of (seed, iteration) only, so resuming repeats it."""
    return seed * ITERATION_STRIDE + iteration


def iteration_generator(seed: int, iteration: int) -> torch.Generator:
    """A CPU generator seeded for training iteration `iteration` (see `iteration_seed`)."""
    import torch

    return torch.Generator("cpu").manual_seed(iteration_seed(seed, iteration))


def pool_seed(seed: int) -> int:
    """The seed of the fast mode's first trajectory pool (its warm-up noise)."""
    return seed * POOL_MULTIPLIER + POOL_OFFSET


def sdisc_image_seed(seed: int, image: int) -> int:
    """The seed of SDisc's target image number `image`."""
    return seed * SDISC_IMAGE_STRIDE + image


def sdisc_order_seed(seed: int) -> int:
    """The seed of SDisc's epoch order and training noise."""
    return seed + SDISC_ORDER_OFFSET


def quality_seed(seed: int, prompt_set: int, image: int) -> int:
    """The seed of image `image` of prompt set number `prompt_set` in the world model's quality report."""
    return seed * ITERATION_STRIDE + prompt_set * QUALITY_SET_STRIDE + image
