"""hsteer: responsible text-to-image generation by steering diffusers models:
the U-Net's h-space, a transformer block or the text representation.

The public API: what a diffusers user touches to load a model, steer its images, learn concepts and
catch hsteer's errors, and nothing else.

- loading: `load_pipeline`, and `Pipeline`, the type of the `pipe` every function takes (diffusers'
  `DiffusionPipeline`; a pipeline loaded by diffusers itself works as well);
- generation: `generate` (images and a manifest, `GenerationOutput`), `attach` / `detach` (steer every
  later ordinary `pipe(...)` call);
- policies, what each image gets: `PlainPolicy`, `FairPolicy`, `SafePolicy`, `SldPolicy`, `ConceptPolicy`;
  their settings: `GateConfig` (the prompt-aware gate), `GuardConfig` and `CallableDetector` (the
  image-aware guard and a detector of your own);
- banks of learned concepts: `ConceptBank`, `Concept`;
- training: `TrainConfig` (`TrainConfig.for_objective(name, ...)` when the method is chosen at run time)
  and each method's config (`CodsmaConfig`, `RespoDiffConfig`, `SdiscConfig`), `train_concept`,
  `train_into_bank`, `TrainResult`;
- scoped steering with one explicit delta: `steer`, `SteeringConfig`;
- errors a caller catches: `HsteerError` (every error hsteer raises on purpose), `BankError` (a bank that
  is missing, corrupt or does not fit the model: its subclasses say which), `TrainingDivergedError`
  (retry with a lower learning rate);
- `__version__`.

Everything else (the sites and their shapes, the policy registry, the named-delta API, the attached
pipeline's inspection, the finer error classes) is imported from the module that defines it
(`hsteer.model.sites`, `hsteer.policies`, `hsteer.steering`, `hsteer.generation`, `hsteer.errors`, ...).
The layers, bottom to top, are in docs/architecture.md; no module inside the package imports this one.
"""

from typing import TYPE_CHECKING, Any

from hsteer._version import __version__
from hsteer.errors import BankError, HsteerError, TrainingDivergedError
from hsteer.gate import GateConfig
from hsteer.generation import GenerationOutput, attach, detach, generate
from hsteer.generation.guard import CallableDetector, GuardConfig
from hsteer.model import load_pipeline
from hsteer.policies import ConceptPolicy, FairPolicy, PlainPolicy, SafePolicy, SldPolicy
from hsteer.steering import Concept, ConceptBank, SteeringConfig, steer
from hsteer.training import (
    CodsmaConfig,
    RespoDiffConfig,
    SdiscConfig,
    TrainConfig,
    TrainResult,
    train_concept,
    train_into_bank,
)

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

__all__ = [
    "BankError",
    "CallableDetector",
    "CodsmaConfig",
    "Concept",
    "ConceptBank",
    "ConceptPolicy",
    "FairPolicy",
    "GateConfig",
    "GenerationOutput",
    "GuardConfig",
    "HsteerError",
    "Pipeline",
    "PlainPolicy",
    "RespoDiffConfig",
    "SafePolicy",
    "SdiscConfig",
    "SldPolicy",
    "SteeringConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "__version__",
    "attach",
    "detach",
    "generate",
    "load_pipeline",
    "steer",
    "train_concept",
    "train_into_bank",
]


def __getattr__(name: str) -> Any:
    """`Pipeline` (diffusers' `DiffusionPipeline`), imported when first asked: `import hsteer` does not load
    diffusers' pipeline machinery for a type."""
    if name == "Pipeline":
        from hsteer.model.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
