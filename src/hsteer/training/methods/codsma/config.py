"""CoDSMa's settings: those every method shares; its one tensor c learns at `lr`."""

from __future__ import annotations

from dataclasses import dataclass

from hsteer.training.config import TrainConfig


@dataclass
class CodsmaConfig(TrainConfig):
    """CoDSMa: one vector c, || eps(z_t; h + c, neutral) - eps_target ||^2."""

    objective: str = "codsma"
