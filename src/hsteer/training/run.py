"""Training entry points: one concept on a pipeline, or one concept into a bank file.

`train_concept` runs the trainer of the config's method (`hsteer.training.registry.METHODS`); a method is
added as a folder under `hsteer.training.methods` that registers itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from hsteer.checks import check_count, check_name, check_output_file
from hsteer.errors import HsteerError, as_field, field_errors
from hsteer.fileio import exclusive_lock
from hsteer.steering.bank import ConceptBank
from hsteer.steering.bankcheck import check_finite_concepts
from hsteer.model.sites import denoiser_of
from hsteer.training.config import TrainConfig
from hsteer.training.plan import TrainPlan, plan_training
from hsteer.training.state import TrainResult, run_dir_for

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


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


def train_concept(pipe: Pipeline, config: TrainConfig, *, run_dir: str | Path | None = None,
                  resume: bool = False,
                  checkpoint_every: int = 100, progress: bool = True,
                  callback: Callable[[int, dict[str, float]], None] | None = None,
                  checkpoint_activations: bool = False) -> TrainResult:
    """Learn one concept on `pipe` (SD 1.x/2.x or SDXL) with `config.objective`; returns the concept.

    With `run_dir`, a checkpoint is written every `checkpoint_every` iterations and the loss history
    to `losses.jsonl` / `losses.png`; `resume=True` continues from the checkpoint there.
    `callback(iteration, losses)` is called after every iteration. `checkpoint_activations` trades
    compute for memory (see `gradient_checkpointing`); it does not change the result. Everything is
    checked here once (`plan_training`) and the trainer runs on the plan.
    """
    plan = plan_training(pipe, config, run_dir=run_dir, checkpoint_every=checkpoint_every, resume=resume,
                         progress=progress, checkpoint_activations=checkpoint_activations)
    return _run_plan(pipe, plan, resume=resume, checkpoint_every=checkpoint_every, progress=progress,
                     callback=callback, checkpoint_activations=checkpoint_activations)


def _run_plan(pipe: Pipeline, plan: TrainPlan, *, resume: bool, checkpoint_every: int, progress: bool,
              callback: Callable[[int, dict[str, float]], None] | None = None,
              checkpoint_activations: bool = False) -> TrainResult:
    """Run the plan's method's trainer on a checked plan (`plan_training`), nothing checked again."""
    with gradient_checkpointing(denoiser_of(pipe), checkpoint_activations):
        return plan.method.trainer(pipe, plan, resume=resume, checkpoint_every=checkpoint_every,
                                   progress=progress, callback=callback)


def check_bank_target(bank_path: str | Path, concept: str, checkpoint_every: int = 1) -> Path:
    """Refuse a bank path, concept name or checkpoint interval that cannot work, before anything is loaded.

    The concept's run folder `<bank>.runs/<concept>` must stay inside `<bank>.runs`, and must not be
    the bank itself (a bank named `X.runs`).
    """
    with field_errors("bank_path"):
        bank_path = check_output_file(bank_path, "bank file (bank_path)")
    with field_errors("concept"):
        check_name("concept", concept, "concept")
    as_field("checkpoint_every", check_count, checkpoint_every, 1)
    runs = run_dir_for(bank_path, concept).parent
    if bank_path.suffix == ".runs" or runs.resolve() == bank_path.resolve():
        raise HsteerError(f"bank file {bank_path}: a name ending in .runs would collide with the run folder "
                          f"{runs}; name the bank e.g. {bank_path.with_suffix('.safetensors').name}")
    if runs.exists() and not runs.is_dir():
        raise HsteerError(f"{runs} (the run folder of bank {bank_path}) exists and is not a folder; move it away")
    return bank_path


def _check_bank_site(bank: ConceptBank, pipe, site: str) -> None:
    """A bank holds one site's concepts: training another site into it is refused before training."""
    bank.check_family(pipe)
    if len(bank) and bank.site_spec != site:
        raise HsteerError(f"the bank's concepts live at site {bank.site_spec}, this run trains at {site}; train "
                          f"with site={bank.site_spec!r}, or into another bank", field="site")


def _checked_shape(pipe, plan: TrainPlan, bank_path: Path, allow_other_model: bool) -> tuple[int, ...]:
    """The shape of the plan's concepts at their site; an existing bank at another site, family or shape is
    refused here, before hours of training rather than after."""
    if bank_path.exists():
        bank = ConceptBank.load(bank_path)
        _check_bank_site(bank, pipe, plan.site.spec)
        bank.check_compatible(pipe, plan.shape, allow_other_model=allow_other_model)
    return plan.shape


def _add_to_bank(pipe, bank_path: Path, shape: tuple[int, ...], results: list[TrainResult],
                 allow_other_model: bool) -> None:
    """Add (or replace) the trained concepts in the bank, read, updated and saved under an exclusive lock,
    so concurrent runs into one bank keep every concept."""
    check_finite_concepts([r.concept for r in results], "add")
    with exclusive_lock(bank_path, f"bank {bank_path}"):
        bank = ConceptBank.load(bank_path) if bank_path.exists() else ConceptBank()
        bank.check_compatible(pipe, shape, allow_other_model=allow_other_model)
        for result in results:
            bank.add(result.concept, replace=True)
        bank.save(bank_path)


def train_into_bank(pipe: Pipeline, config: TrainConfig, bank_path: str | Path, *, resume: bool = False,
                    checkpoint_every: int = 100, progress: bool = True,
                    checkpoint_activations: bool = False, allow_other_model: bool = False) -> TrainResult:
    """Train `config.concept` and add (or replace) it in the bank at `bank_path`, creating the bank if missing.

    Everything is checked before training starts. The bank is read, updated and saved under an
    exclusive lock, so concurrent runs into one bank keep every concept.
    """
    plan = plan_training(pipe, config, checkpoint_every=checkpoint_every, resume=resume, progress=progress,
                         checkpoint_activations=checkpoint_activations, allow_other_model=allow_other_model)
    bank_path = check_bank_target(bank_path, config.concept, checkpoint_every)
    shape = _checked_shape(pipe, plan, bank_path, allow_other_model)
    plan = plan.in_folder(run_dir_for(bank_path, config.concept))
    result = _run_plan(pipe, plan, resume=resume, checkpoint_every=checkpoint_every, progress=progress,
                       checkpoint_activations=checkpoint_activations)
    _add_to_bank(pipe, bank_path, shape, [result], allow_other_model)
    return result


def train_group_into_bank(pipe: Pipeline, configs: list[TrainConfig], bank_path: str | Path, *,
                          resume: bool = False,
                          checkpoint_every: int = 100, allow_other_model: bool = False) -> list[TrainResult]:
    """Train a group's concepts together (`hsteer.training.group`: one trajectory pool and one U-Net pass per
    iteration for all of them) and add them to the bank at `bank_path`, as `train_into_bank` does for one.

    The run is checkpointed in `<bank>.runs/<name+name...>` and resumes from there with `resume=True`.
    """
    from hsteer.training.group import plan_group, train_group

    plans = plan_group(pipe, configs, checkpoint_every=checkpoint_every, resume=resume,
                       allow_other_model=allow_other_model)
    for config in configs:
        bank_path = check_bank_target(bank_path, config.concept, checkpoint_every)
    shape = _checked_shape(pipe, plans[0], bank_path, allow_other_model)  # the group shares site and size
    run_dir = run_dir_for(bank_path, "+".join(c.concept for c in configs))
    plans = [replace(plan, run_dir=run_dir) for plan in plans]
    results = train_group(pipe, plans, run_dir=run_dir, resume=resume, checkpoint_every=checkpoint_every)
    _add_to_bank(pipe, bank_path, shape, results, allow_other_model)
    return results
