"""The bundled toy world (shapes x colours on profession patterns) and its tiny SD model.

``scene`` holds the world (rendering, captions, planted biases, probes; numpy/PIL only) and
``model/`` the packaged pipeline (:func:`default_model_path`). Training that pipeline and measuring
its quality are applications of the library: ``hsteer.apps.world_model`` and ``hsteer.apps.world_quality``.
"""

from __future__ import annotations

from pathlib import Path

from hsteer.model.loading import BUNDLED_MODEL
from hsteer.world.scene import (
    BIASED_PAIRS,
    BIASED_PROFESSIONS,
    COLOURS,
    CONTROL_PROFESSIONS,
    HARM_WORDS,
    NEUTRAL_WORD,
    PLANTED_BIAS,
    PROFESSIONS,
    SHAPES,
    SIZE,
    VOCABULARY,
    WorldProbe,
    make_caption,
    parse_caption,
    probe_colour,
    probe_harm,
    probe_profession,
    probe_shape,
    render,
    render_array,
    sample_attributes,
    sample_example,
)

#: default sampling settings of the bundled model (measured with ``hsteer.apps.world_quality``)
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


__all__ = [
    "BIASED_PAIRS",
    "BIASED_PROFESSIONS",
    "COLOURS",
    "CONTROL_PROFESSIONS",
    "DEFAULT_GUIDANCE",
    "DEFAULT_STEPS",
    "HARM_WORDS",
    "NEUTRAL_WORD",
    "PLANTED_BIAS",
    "PROFESSIONS",
    "SHAPES",
    "SIZE",
    "VOCABULARY",
    "WorldProbe",
    "default_model_path",
    "make_caption",
    "parse_caption",
    "probe_colour",
    "probe_harm",
    "probe_profession",
    "probe_shape",
    "render",
    "render_array",
    "sample_attributes",
    "sample_example",
]
