"""Layer 2, steering: the steering sites' one hook (the U-Net's h-space, a transformer block or the text
representation), steered pipeline calls, banks of learned concepts, and banks on the Hugging Face Hub."""

from hsteer.steering.bank import Concept, ConceptBank
from hsteer.steering.hook import SteeringHook
from hsteer.steering.hub import DEFAULT_WEIGHT_NAME
from hsteer.model.sites import MID_BLOCK, SteeringSite
from hsteer.steering.scoped import SteeringConfig, active_hooks, apply_steering, remove_steering, steer

__all__ = ["DEFAULT_WEIGHT_NAME", "MID_BLOCK", "Concept", "ConceptBank", "SteeringConfig", "SteeringHook",
           "SteeringSite", "active_hooks", "apply_steering", "remove_steering", "steer"]
