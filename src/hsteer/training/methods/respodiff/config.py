"""RespoDiff's settings: RAM learns at `lr`, SAM at `lr_sam` on its loss weighted by `lam`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hsteer.checks import check_float
from hsteer.errors import as_field
from hsteer.training.config import TrainConfig


@dataclass
class RespoDiffConfig(TrainConfig):
    """RespoDiff: RAM on CoDSMa's loss (at `lr`), SAM on lam * L_sem (at `lr_sam`), alternating."""

    objective: str = "respodiff"
    lr_sam: float = 1e-3
    lam: float = 0.5

    modules: ClassVar[tuple[str, ...]] = ("ram", "sam")

    def learning_rates(self) -> dict[str, str]:
        """Which config field is the learning rate of each of RespoDiff's parameter sets (RAM, SAM)."""
        return {"ram": "lr", "sam": "lr_sam"}

    def validate(self) -> None:
        """The common checks, and `lam` must be a non-negative number."""
        super().validate()
        as_field("lam", check_float, self.lam, 0.0)
