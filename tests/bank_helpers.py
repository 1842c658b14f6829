"""Banks of random concepts, and a Hub cache holding banks, shared by the steering, attach, hub and UI tests."""

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


def hub_snapshot(cache, repo_id: str, files: dict, commit: str = "a" * 40, ref: str = "main"):
    """`models--OWNER--NAME/{refs,snapshots}` as huggingface_hub lays out a downloaded repo: `files` maps a path
    inside the repo to the bank saved there; `ref` (a branch or tag) points at `commit`."""
    from pathlib import Path

    root = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    for name, bank in files.items():
        bank.save(root / "snapshots" / commit / name)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return Path(cache)
