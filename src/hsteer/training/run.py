"""Training entry points: one concept on a pipeline, or one concept into a bank file.

`TRAINERS` maps each objective to the function that learns it; adding a method means adding a config
class (`hsteer.training.config`) and a trainer here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from hsteer.errors import HsteerError
from hsteer.hspace.bank import ConceptBank
from hsteer.model.geometry import pipeline_hspace_shape
from hsteer.training.config import TrainConfig
from hsteer.training.sdisc import train_sdisc
from hsteer.training.state import TrainResult, run_dir_for
from hsteer.training.steered import train_steered

#: objective -> trainer(pipe, config, *, run_dir, resume, checkpoint_every, progress, callback) -> TrainResult
TRAINERS: dict[str, Callable[..., TrainResult]] = {"codsma": train_steered, "respodiff": train_steered,
                                                   "sdisc": train_sdisc}


@contextlib.contextmanager
def gradient_checkpointing(unet, enabled: bool = True) -> Iterator[None]:
    """Recompute the up blocks' activations in backward instead of keeping them (diffusers' own switch).

    It trades about one extra up-block forward per training pass for most of the step's activation
    memory; the gradients are the same. The U-Net's previous setting is restored on exit.
    """
    before = bool(getattr(unet, "is_gradient_checkpointing", False))
    if not enabled or before:
        yield
        return
    if not getattr(unet, "_supports_gradient_checkpointing", False):
        raise HsteerError(f"{type(unet).__name__} does not support gradient checkpointing; train without it")
    unet.enable_gradient_checkpointing()
    try:
        yield
    finally:
        unet.disable_gradient_checkpointing()


def train_concept(pipe, config: TrainConfig, *, run_dir: str | Path | None = None, resume: bool = False,
                  checkpoint_every: int = 100, progress: bool = True,
                  callback: Callable[[int, dict[str, float]], None] | None = None,
                  checkpoint_activations: bool = False) -> TrainResult:
    """Learn one concept on `pipe` (SD 1.x/2.x or SDXL) with `config.objective`; returns the concept.

    With `run_dir`, a checkpoint is written every `checkpoint_every` iterations and the loss history
    to `losses.jsonl` / `losses.png`; `resume=True` continues from the checkpoint there.
    `callback(iteration, losses)` is called after every iteration. `checkpoint_activations` trades
    compute for memory (see `gradient_checkpointing`); it does not change the result.
    """
    config.validate()
    with gradient_checkpointing(pipe.unet, checkpoint_activations):
        return TRAINERS[config.objective](pipe, config, run_dir=run_dir, resume=resume,
                                          checkpoint_every=checkpoint_every, progress=progress, callback=callback)


def train_into_bank(pipe, config: TrainConfig, bank_path: str | Path, *, resume: bool = False,
                    checkpoint_every: int = 100, progress: bool = True,
                    checkpoint_activations: bool = False) -> TrainResult:
    """Train `config.concept` and add (or replace) it in the bank at `bank_path`, creating the bank if missing."""
    bank_path = Path(bank_path)
    bank = ConceptBank.load(bank_path) if bank_path.exists() else None
    if bank is not None:  # fail before hours of training, not after
        bank.check_compatible(pipe.unet, pipeline_hspace_shape(pipe, config.height, config.width))
    result = train_concept(pipe, config, run_dir=run_dir_for(bank_path, config.concept), resume=resume,
                           checkpoint_every=checkpoint_every, progress=progress,
                           checkpoint_activations=checkpoint_activations)
    bank = ConceptBank.load(bank_path) if bank_path.exists() else ConceptBank()
    bank.add(result.concept, replace=True)
    bank.save(bank_path)
    return result
