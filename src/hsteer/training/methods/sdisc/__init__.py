"""SDisc (Li et al., CVPR 2024), the baseline: c learned by the plain denoising loss on images of the target."""

from hsteer.training.methods.sdisc.config import SdiscConfig
from hsteer.training.methods.sdisc.trainer import train_sdisc
from hsteer.training.registry import METHODS, Method, MethodOption

METHOD = METHODS.register(Method(
    name="sdisc", title="SDisc", config=SdiscConfig, trainer=train_sdisc,
    summary="c by the plain denoising loss on images of the target prompt, conditioned on neutral",
    counts_iterations=False, pairs=False, baseline=True,
    options=(MethodOption("sdisc_images", "target-prompt images generated with the plain model.", "SDisc images",
                          1, 4096, whole=True),
             MethodOption("sdisc_epochs", "epochs over those images.", "SDisc epochs", 1, 1000, whole=True))))

__all__ = ["METHOD", "SdiscConfig", "train_sdisc"]
