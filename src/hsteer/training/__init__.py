"""Layer 4, training: the settings every method shares (config), the registered methods (registry, one
folder each under methods/), the steered trainer, group training, checkpoints and the entry points."""

from hsteer.training.config import MODES, TrainConfig, config_class
from hsteer.training.methods import CodsmaConfig, RespoDiffConfig, SdiscConfig
from hsteer.training.registry import METHODS, Method, MethodOption
from hsteer.training.run import gradient_checkpointing, train_concept, train_into_bank
from hsteer.training.state import TrainResult, concept_meta, run_dir_for

#: The method names, and name -> config class (read from `METHODS`).
OBJECTIVES = METHODS.names()
CONFIGS = {method.name: method.config for method in METHODS}

__all__ = ["CONFIGS", "METHODS", "MODES", "OBJECTIVES", "CodsmaConfig", "Method", "MethodOption", "RespoDiffConfig",
           "SdiscConfig", "TrainConfig", "TrainResult", "concept_meta", "config_class", "gradient_checkpointing",
           "run_dir_for", "train_concept", "train_into_bank"]
