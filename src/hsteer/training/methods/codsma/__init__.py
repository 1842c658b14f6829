"""CoDSMa: one concept vector c at the steering site, trained on the steered trainer's latents."""

from hsteer.training.methods.codsma.config import CodsmaConfig
from hsteer.training.methods.codsma.step import codsma_step
from hsteer.training.registry import METHODS, Method
from hsteer.training.steered import train_steered

METHOD = METHODS.register(Method(
    name="codsma", title="CoDSMa", config=CodsmaConfig, trainer=train_steered, step=codsma_step,
    summary="one vector c; || eps(z_t; h + c, neutral) - eps_target ||^2", group_training=True))

__all__ = ["METHOD", "CodsmaConfig", "codsma_step"]
