"""The bundled toy world (shapes x colours on profession patterns) and its tiny SD model.

``scene`` holds the world (rendering, captions, planted biases, probes; numpy/PIL only),
``train`` trains the bundled diffusers pipeline from scratch on CPU, ``quality``
measures a trained model.  :func:`default_model_path` is the packaged pipeline folder.
"""

from __future__ import annotations

from pathlib import Path

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

#: default sampling settings of the bundled model (measured with ``hsteer.world.quality``)
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 4.0

_MODEL_DIR = Path(__file__).resolve().parent / "model"


def default_model_path() -> Path:
    """Folder of the bundled toy-world ``StableDiffusionPipeline``.

    Raises ``FileNotFoundError`` when the package was built without the model.
    """
    if not (_MODEL_DIR / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the bundled toy-world model is missing ({_MODEL_DIR}/model_index.json); train one with "
            f"`python -m hsteer.world.train --out {_MODEL_DIR} --vae-minutes 8 --unet-minutes 45`"
        )
    return _MODEL_DIR


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
