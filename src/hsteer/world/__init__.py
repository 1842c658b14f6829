"""The bundled toy world: its scene, its two tiny models, their build, quality checks and evaluations.

Low layers (the library below the applications may import them):

- ``scene``: the world itself (rendering, captions, planted biases, probes; numpy/PIL only);
- ``defaults``: the bundled model's folder (:func:`default_model_path`) and default sampling settings.

The rest builds on the library (evaluation, generation, training):

- ``model/`` and ``model_dit/``: the packaged U-Net and DiT pipelines;
- ``build_unet`` (``hsteer world train``) with ``data``, ``pipeline``, ``training_loop``, and ``build_dit``
  (``hsteer world train-dit``): how those models are trained;
- ``quality`` (``hsteer world quality``): the models' quality bar;
- ``evaluate``, ``gate_eval``, ``held_out``: the world's own evaluations (bias and harm under a policy, the
  gate on prompts that name an attribute, fair steering on held-out templates).

This package's ``__init__`` imports only the low layers.
"""

from __future__ import annotations

from hsteer.world.defaults import DEFAULT_GUIDANCE, DEFAULT_STEPS, default_model_path
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
