"""Layer 2, the h-space: the steering site and its one hook, steered pipeline calls, banks of learned
concepts, and banks on the Hugging Face Hub."""

from hsteer.hspace.bank import Concept, ConceptBank
from hsteer.hspace.hook import SteeringHook
from hsteer.hspace.hub import DEFAULT_WEIGHT_NAME
from hsteer.model.sites import MID_BLOCK, SteeringSite
from hsteer.hspace.steering import SteeringConfig, active_hooks, apply_steering, remove_steering, steer

__all__ = ["DEFAULT_WEIGHT_NAME", "MID_BLOCK", "Concept", "ConceptBank", "SteeringConfig", "SteeringHook",
           "SteeringSite", "active_hooks", "apply_steering", "remove_steering", "steer"]
