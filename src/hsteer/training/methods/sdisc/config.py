"""SDisc's settings: how many target images it makes and how many epochs it learns over them."""

from __future__ import annotations

from dataclasses import dataclass

from hsteer.checks import check_count
from hsteer.errors import as_field
from hsteer.training.config import TrainConfig


@dataclass
class SdiscConfig(TrainConfig):
    """SDisc: c by the plain denoising loss on `sdisc_images` images of the target, `sdisc_epochs` epochs."""

    objective: str = "sdisc"
    sdisc_images: int = 64
    sdisc_epochs: int = 20

    def validate(self) -> None:
        """The common checks, and SDisc's image and epoch counts must be whole numbers from 1 to 10^7."""
        super().validate()
        for name in ("sdisc_images", "sdisc_epochs"):
            as_field(name, check_count, getattr(self, name), 1, 10**7)
