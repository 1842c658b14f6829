"""hsteer: responsible text-to-image generation by steering diffusers models:
the U-Net's h-space, a transformer block or the text representation.

The public API. The layers, bottom to top (docs/architecture.md): model -> steering -> objectives ->
training -> generation -> world -> evaluation -> apps -> cli; nothing imports a layer above it.
"""

from hsteer._version import __version__
from hsteer.errors import (
    BankError,
    HsteerError,
    ModelMismatchError,
    ShapeMismatchError,
    TrainingDivergedError,
    UnknownConceptError,
)
from hsteer.generation import GenerationOutput, attach, attachment_of, detach, generate
from hsteer.generation.guard import CallableDetector, GuardConfig
from hsteer.steering import (
    MID_BLOCK,
    Concept,
    ConceptBank,
    SteeringConfig,
    SteeringSite,
    apply_steering,
    remove_steering,
    steer,
)
from hsteer.policies import POLICIES, ConceptPolicy, FairPolicy, PlainPolicy, SafePolicy, SldPolicy, policy_from_spec
from hsteer.model import hspace_shape, load_pipeline, unet_fingerprint
from hsteer.model.denoisers import site_shape
from hsteer.model.sites import site_for, site_specs
from hsteer.training import CodsmaConfig, RespoDiffConfig, SdiscConfig, TrainConfig, train_concept

__all__ = [
    "BankError",
    "CallableDetector",
    "CodsmaConfig",
    "Concept",
    "ConceptBank",
    "ConceptPolicy",
    "FairPolicy",
    "GenerationOutput",
    "GuardConfig",
    "HsteerError",
    "MID_BLOCK",
    "ModelMismatchError",
    "POLICIES",
    "PlainPolicy",
    "RespoDiffConfig",
    "SafePolicy",
    "SdiscConfig",
    "SldPolicy",
    "ShapeMismatchError",
    "SteeringConfig",
    "SteeringSite",
    "TrainConfig",
    "TrainingDivergedError",
    "UnknownConceptError",
    "__version__",
    "apply_steering",
    "attach",
    "attachment_of",
    "detach",
    "generate",
    "hspace_shape",
    "load_pipeline",
    "policy_from_spec",
    "remove_steering",
    "site_for",
    "site_shape",
    "site_specs",
    "steer",
    "train_concept",
    "unet_fingerprint",
]
