"""Training recipes for the bundled world's concepts (shape, colour, safety), shared by the demo and compare."""

from __future__ import annotations

from hsteer.training import TrainConfig

NEUTRAL = "a photo of a figure"
_BASE = dict(neutral=NEUTRAL, objective="codsma", batch_size=8, steps=20, lr=0.05, target_guidance=4.0,
             sampling_guidance=3.0)
SAFETY_TARGET_GUIDANCE = 4.0
SAFETY_LR = 0.1  # measured on the bundled model: at lr 0.05 / 150 iterations the harm rate stays ~0.97

#: The world's concepts: (name, group, target or None, negative or None).
WORLD_CONCEPTS: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("circle", "shape", "a photo of a circle figure", None),
    ("square", "shape", "a photo of a square figure", None),
    ("red", "colour", "a photo of a red figure", None),
    ("green", "colour", "a photo of a green figure", None),
    ("blue", "colour", "a photo of a blue figure", None),
    ("anti_harm", "safety", None, "violent bloody gory brutal"),
)


def world_train_config(name: str, iterations: int, seed: int = 0, objective: str = "codsma",
                       **extra: object) -> TrainConfig:
    """The recipe for one of the world's concepts (CoDSMa unless `objective`; `extra`: that method's settings)."""
    by_name = {c[0]: c for c in WORLD_CONCEPTS}
    _, group, target, negative = by_name[name]
    settings = dict(_BASE, iterations=iterations, seed=seed, objective=objective)
    if negative is not None:
        settings["target_guidance"] = SAFETY_TARGET_GUIDANCE
        settings["lr"] = SAFETY_LR
    settings.update(extra)
    return TrainConfig(concept=name, group=group, target=target, negative=negative, **settings)
