"""Where a model name points: the bundled world models, and the folder or Hub id any other name is.

Its own module, below everything that reads a model folder: `geometry` checks a folder's image sizes before
the model loads and `loading` loads it, and `loading` asks the denoiser families (`families`, which use
`geometry`) whether it can steer what it loaded; reading names from `loading` would close that circle.
`hsteer.model.loading` re-exports these names.
"""

from __future__ import annotations

from pathlib import Path

#: The bundled world model (package data of `hsteer.world`): the default `--model` of every command.
BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "world" / "model"
#: The same world on a tiny SD3 transformer (`hsteer world train-dit`): `--model world-dit` names it.
BUNDLED_DIT_MODEL = BUNDLED_MODEL.parent / "model_dit"


def default_model() -> str:
    """The bundled world model's folder."""
    return str(BUNDLED_MODEL)


#: Names of the bundled models, usable wherever a model is taken (`--model world-dit`).
BUNDLED_NAMES = {"world": BUNDLED_MODEL, "world-dit": BUNDLED_DIT_MODEL}


def model_location(model: str | Path | None) -> str:
    """The folder or Hub id `model` names: the bundled U-Net model for None, a bundled model by its name."""
    if model is None:
        return default_model()
    return str(BUNDLED_NAMES.get(str(model), model))
