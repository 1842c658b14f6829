"""The training methods, one folder each (config, optimiser step or trainer, registration): importing this
package registers them in `hsteer.training.registry.METHODS`, in the order the command line lists them."""

from hsteer.training.methods.codsma import CodsmaConfig
from hsteer.training.methods.respodiff import RespoDiffConfig
from hsteer.training.methods.sdisc import SdiscConfig

__all__ = ["CodsmaConfig", "RespoDiffConfig", "SdiscConfig"]
