"""hsteer: responsible text-to-image generation by steering the h-space of diffusers U-Nets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hsteer")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

from hsteer.bank import Concept, ConceptBank  # noqa: E402
from hsteer.errors import (  # noqa: E402
    BankError,
    HsteerError,
    ModelMismatchError,
    ShapeMismatchError,
    TrainingDivergedError,
    UnknownConceptError,
)
from hsteer.generation import (  # noqa: E402
    ConceptPolicy,
    FairPolicy,
    GenerationOutput,
    PlainPolicy,
    SafePolicy,
    generate,
)
from hsteer.models import hspace_shape, load_pipeline, unet_fingerprint  # noqa: E402
from hsteer.steering import SteeringConfig, apply_steering, remove_steering, steer  # noqa: E402
from hsteer.training import TrainConfig, train_concept  # noqa: E402

__all__ = [
    "BankError",
    "Concept",
    "ConceptBank",
    "ConceptPolicy",
    "FairPolicy",
    "GenerationOutput",
    "HsteerError",
    "ModelMismatchError",
    "PlainPolicy",
    "SafePolicy",
    "ShapeMismatchError",
    "SteeringConfig",
    "TrainConfig",
    "TrainingDivergedError",
    "UnknownConceptError",
    "__version__",
    "apply_steering",
    "generate",
    "hspace_shape",
    "load_pipeline",
    "remove_steering",
    "steer",
    "train_concept",
    "unet_fingerprint",
]
