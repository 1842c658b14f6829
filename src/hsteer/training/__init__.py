"""Layer 4, training: a config per method, the steered trainer (CoDSMa, RespoDiff), SDisc, checkpoints."""

from hsteer.training.config import (
    CONFIGS,
    MODES,
    OBJECTIVES,
    CodsmaConfig,
    RespoDiffConfig,
    SdiscConfig,
    TrainConfig,
    config_class,
)
from hsteer.training.run import TRAINERS, gradient_checkpointing, train_concept, train_into_bank
from hsteer.training.state import TrainResult, concept_meta, run_dir_for

__all__ = ["CONFIGS", "MODES", "OBJECTIVES", "TRAINERS", "CodsmaConfig", "RespoDiffConfig", "SdiscConfig",
           "TrainConfig", "TrainResult", "concept_meta", "config_class", "gradient_checkpointing", "run_dir_for",
           "train_concept", "train_into_bank"]
