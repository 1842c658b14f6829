"""The only place where the UI imports the hsteer library, from the modules that define each name (never
the `hsteer` facade: nothing inside the package imports it).

The UI sits on top of the library (nothing in the library imports `hsteer.ui`). Keeping every import
here means a reorganisation of the library's modules is fixed in this one file.
"""

from __future__ import annotations

import hsteer.world as world
from hsteer.errors import BankError, HsteerError
from hsteer.generation import generate
from hsteer.model import load_pipeline
from hsteer.policies import POLICIES, ConceptPolicy, FairPolicy, PlainPolicy, SafePolicy
from hsteer.steering import Concept, ConceptBank
from hsteer.training import RespoDiffConfig, SdiscConfig, TrainConfig, train_concept
from hsteer.apps.recipes import WORLD_CONCEPTS, world_train_config
from hsteer.checks import check_count, check_float, check_name, check_seed
from hsteer.evaluation.leakage import fmt_ci
from hsteer.world.evaluate import WorldEvalConfig, evaluate_world
from hsteer.generation.guard import GuardConfig
from hsteer.steering.hub import hub_bank_file, parse_hub_spec
from hsteer.steering.scoped import check_window
from hsteer.model import sampling_defaults
from hsteer.steering.siteshape import site_shape
from hsteer.model.geometry import resolve_resolution
from hsteer.model.loading import BUNDLED_NAMES, model_location
from hsteer.model.sites import denoiser_of, family_of, site_for
from hsteer.policies import Policy
from hsteer.policy_forms import parse_window
from hsteer.training.config import OBJECTIVES, config_class
from hsteer.training.registry import METHODS

default_model_path = world.default_model_path

__all__ = [
    "BUNDLED_NAMES",
    "BankError",
    "Concept",
    "ConceptBank",
    "ConceptPolicy",
    "FairPolicy",
    "GuardConfig",
    "HsteerError",
    "METHODS",
    "OBJECTIVES",
    "POLICIES",
    "PlainPolicy",
    "Policy",
    "RespoDiffConfig",
    "SafePolicy",
    "SdiscConfig",
    "TrainConfig",
    "WORLD_CONCEPTS",
    "WorldEvalConfig",
    "check_count",
    "check_float",
    "check_name",
    "check_seed",
    "check_window",
    "config_class",
    "default_model_path",
    "denoiser_of",
    "family_of",
    "model_location",
    "resolve_resolution",
    "site_for",
    "site_shape",
    "evaluate_world",
    "fmt_ci",
    "generate",
    "hub_bank_file",
    "load_pipeline",
    "parse_hub_spec",
    "parse_window",
    "sampling_defaults",
    "train_concept",
    "world",
    "world_train_config",
]
