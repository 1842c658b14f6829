"""RespoDiff: a responsible-attribute module (RAM) and a semantic-alignment module (SAM), trained in turn
on the steered trainer's latents."""

from hsteer.training.methods.respodiff.config import RespoDiffConfig
from hsteer.training.methods.respodiff.step import respodiff_step
from hsteer.training.registry import METHODS, Method, MethodOption
from hsteer.training.steered import train_steered

METHOD = METHODS.register(Method(
    name="respodiff", title="RespoDiff", config=RespoDiffConfig, trainer=train_steered, step=respodiff_step,
    summary="ram on that loss, sam on lam * || eps(h + ram + sam, neutral) - eps(h, neutral) ||^2",
    options=(MethodOption("lr_sam", "learning rate of SAM.", "RespoDiff's SAM learning rate", 1e-8, 10.0),
             MethodOption("lam", "weight lambda of L_sem.", "RespoDiff's lambda", 0.0, 1e3))))

__all__ = ["METHOD", "RespoDiffConfig", "respodiff_step"]
