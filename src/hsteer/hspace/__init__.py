"""Layer 2, the h-space: the steering hook on the U-Net mid-block, and banks of learned concepts."""

from hsteer.hspace.bank import Concept, ConceptBank
from hsteer.hspace.steering import SteeringConfig, active_hooks, apply_steering, remove_steering, steer

__all__ = ["Concept", "ConceptBank", "SteeringConfig", "active_hooks", "apply_steering", "remove_steering", "steer"]
