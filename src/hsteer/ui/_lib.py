"""The only place where the UI imports the hsteer library.

The UI sits on top of the library (nothing in the library imports `hsteer.ui`). Keeping every import
here means a reorganisation of the library's modules is fixed in this one file.
"""

from __future__ import annotations

from hsteer import (
    BankError,
    Concept,
    ConceptBank,
    ConceptPolicy,
    FairPolicy,
    HsteerError,
    PlainPolicy,
    SafePolicy,
    TrainConfig,
    generate,
    load_pipeline,
    train_concept,
)
from hsteer import world
from hsteer.evaluation.world import WorldEvalConfig, evaluate_world
from hsteer.model import sampling_defaults

default_model_path = world.default_model_path

__all__ = [
    "BankError",
    "Concept",
    "ConceptBank",
    "ConceptPolicy",
    "FairPolicy",
    "HsteerError",
    "PlainPolicy",
    "SafePolicy",
    "TrainConfig",
    "WorldEvalConfig",
    "default_model_path",
    "evaluate_world",
    "generate",
    "load_pipeline",
    "sampling_defaults",
    "train_concept",
    "world",
]
