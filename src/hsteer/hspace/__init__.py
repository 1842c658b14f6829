"""Layer 2, the h-space: the steering hook on the U-Net mid-block, banks of learned concepts, the persistent
(attach-mode, compile-friendly) hook, and banks on the Hugging Face Hub."""

from hsteer.hspace.attach import attachment_of
from hsteer.hspace.bank import Concept, ConceptBank
from hsteer.hspace.hub import DEFAULT_WEIGHT_NAME
from hsteer.hspace.steering import SteeringConfig, active_hooks, apply_steering, remove_steering, steer

__all__ = ["DEFAULT_WEIGHT_NAME", "Concept", "ConceptBank", "SteeringConfig", "active_hooks", "apply_steering",
           "attachment_of", "remove_steering", "steer"]
