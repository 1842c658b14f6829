"""The bundled toy-world model's folder and its default sampling settings.

Kept apart from the world's build and evaluations (`hsteer.world`'s higher modules), so that any layer
may read them.
"""

from __future__ import annotations

from pathlib import Path

from hsteer.model.loading import BUNDLED_MODEL

#: default sampling settings of the bundled model (measured with ``hsteer.world.quality``)
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 4.0


def default_model_path() -> Path:
    """Folder of the bundled toy-world ``StableDiffusionPipeline``.

    Raises ``FileNotFoundError`` when the package was built without the model.
    """
    if not (BUNDLED_MODEL / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the bundled toy-world model is missing ({BUNDLED_MODEL}/model_index.json); train one with "
            f"`hsteer world train --out {BUNDLED_MODEL}`"
        )
    return BUNDLED_MODEL


__all__ = ["DEFAULT_GUIDANCE", "DEFAULT_STEPS", "default_model_path"]
