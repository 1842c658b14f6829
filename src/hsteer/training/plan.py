"""A training run's plan: its config checked once, at the API edge, and what the model makes of it
(site, size, shape, folder) resolved once.

`plan_training` (one concept; `hsteer.training.group.plan_group` for a group) is the one place a config is
validated and its site, image size and concept shape are resolved on a pipeline. What they return, a
frozen `TrainPlan`, is what the trainers take (the steered trainer, SDisc's, group training): they trust
it and neither re-validate the config nor resolve the site again, so a run checks its settings once and
every part of it trains at the same site and size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from hsteer.checks import (check_count, check_flags, check_output_dir, check_pipeline, check_text, check_texts,
                           check_window_covers_steps)
from hsteer.errors import HsteerError, as_field, field_errors
from hsteer.model.geometry import resolve_resolution
from hsteer.model.sites import SiteSet, SteeringSite, site_for
from hsteer.steering.siteshape import bind_site, site_shape
from hsteer.training.config import TrainConfig
from hsteer.training.registry import METHODS, Method

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


@dataclass(frozen=True)
class TrainPlan:
    """One concept's run, checked and resolved on its pipeline (`plan_training`): what the trainers trust.

    config: the validated settings; method: its registered method (`METHODS.of(config)`), which supports
    the model's family and the site; site: the site resolved on the model, a set of sites bound to its
    shapes at height x width; height, width: the image size the run trains at (the model's native one
    where the config gives none); shape: one image's concept at the site; run_dir: the run's folder
    (checkpoints, loss log, SDisc's latents; None: the run keeps nothing on disk).
    """

    config: TrainConfig
    method: Method
    site: SteeringSite | SiteSet
    height: int
    width: int
    shape: tuple[int, ...]
    run_dir: Path | None = None

    def in_folder(self, run_dir: str | Path) -> TrainPlan:
        """This plan with its run folder, checked as an output folder: for a run whose folder is named only
        once the plan is made (`train_into_bank`: the bank's `<bank>.runs/<concept>`)."""
        check_output_dir(run_dir, "run_dir")
        return replace(self, run_dir=Path(run_dir))


def check_config(config: TrainConfig) -> None:
    """The model-free checks of a config, as `hsteer train` checks its options, so that the Python API fails
    with one line instead of a tokenizer's TypeError: a TrainConfig (validated) whose prompts are UTF-8 text
    and whose step window covers at least one of its steps."""
    if not isinstance(config, TrainConfig):
        raise HsteerError(f"config must be a TrainConfig, e.g. hsteer.CodsmaConfig(concept='woman', group='gender', "
                          f"neutral='a person', target='a woman'), got {type(config).__name__}")
    config.validate()
    for key in ("neutral", "target", "negative"):
        if getattr(config, key) is not None:
            with field_errors(key):
                check_text(f"the {key} prompt ({key})", getattr(config, key))
    with field_errors("pairs"):
        check_texts("a prompt of pairs (pairs)", config.pairs or ())
    if config.window is not None:
        with field_errors("window"):
            check_window_covers_steps(*config.window, config.steps)


def check_run_args(run_dir: str | Path | None = None, checkpoint_every: int = 1, **flags: object) -> None:
    """A run's own arguments, beside its config: a checkpoint interval of 1 or more, an output folder for
    the run, switches that are True or False."""
    as_field("checkpoint_every", check_count, checkpoint_every, 1)
    if run_dir is not None:
        check_output_dir(run_dir, "run_dir")
    check_flags(**flags)


def resolve_plan(pipe: Pipeline, config: TrainConfig, run_dir: str | Path | None = None) -> TrainPlan:
    """The plan of a config already checked (`check_config`) on a checked pipeline: the method must support
    the model's family and site, the site is resolved once (a site this model does not have fails here,
    before anything runs) and bound to the resolved image size, and the concept's shape is taken there."""
    method = METHODS.of(config)
    method.check_supports(pipe, config.site)
    site = site_for(pipe, config.site)
    height, width = resolve_resolution(pipe, config.height, config.width)
    site = bind_site(pipe, site, height, width)  # a set of sites: bound to its shapes at this size
    shape = site_shape(pipe, site, height, width)
    return TrainPlan(config, method, site, height, width, shape, Path(run_dir) if run_dir is not None else None)


def plan_training(pipe: Pipeline, config: TrainConfig, *, run_dir: str | Path | None = None,
                  checkpoint_every: int = 1, **flags: object) -> TrainPlan:
    """Check one concept's run once, at the API edge (`train_concept`, `train_into_bank`), and resolve it
    into the plan its trainer trusts: a loaded pipeline, the config (`check_config`), the run's own
    arguments (`check_run_args`), then the site, size and shape on the model (`resolve_plan`)."""
    check_pipeline(pipe, "pipe")
    check_config(config)
    check_run_args(run_dir, checkpoint_every, **flags)
    return resolve_plan(pipe, config, run_dir)
