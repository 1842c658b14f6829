"""Safe Latent Diffusion (SLD) as a pipeline: diffusers' safe pipeline built from a loaded SD pipeline's parts.

The SLD baseline changes the pipeline rather than adding concepts, so it lives with the pipelines; the
policy that names it (`hsteer.policies.SldPolicy`) hands it out from `prepare(pipe)`.
"""

from __future__ import annotations

from typing import Any

from hsteer.errors import HsteerError
from hsteer.model.geometry import is_sdxl

#: diffusers' SLD presets (`SafetyConfig.WEAK` ... `MAX`), by the lower-case name hsteer uses.
SLD_PRESETS = ("weak", "medium", "strong", "max")


def sld_preset(name: str) -> dict[str, float]:
    """The settings of an SLD preset (`medium` or `sld-medium`)."""
    name = name.lower().removeprefix("sld-")
    if name not in SLD_PRESETS:
        raise HsteerError(f"unknown SLD preset {name!r}; use one of {', '.join('sld-' + p for p in SLD_PRESETS)}")
    try:
        from diffusers.pipelines.stable_diffusion_safe import SafetyConfig
    except ImportError:
        from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig
    return dict(getattr(SafetyConfig, name.upper()))


class _WithCallKwargs:
    """A pipeline that adds fixed keyword arguments to every call (SLD's preset) and is otherwise the same."""

    def __init__(self, pipe: Any, kwargs: dict[str, Any]) -> None:
        self._pipe = pipe
        self._kwargs = dict(kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._pipe(*args, **{**self._kwargs, **kwargs})


def sld_pipeline(pipe: Any, preset: str) -> Any:
    """Safe Latent Diffusion (diffusers' StableDiffusionPipelineSafe) from the loaded SD pipeline's own parts;
    its `safety_concept` is the wrapped pipeline's (`.safety_concept` reads and sets it through the wrapper's
    `_pipe`)."""
    from diffusers import StableDiffusionPipelineSafe

    if getattr(pipe, "unet", None) is None:
        raise HsteerError(f"the SLD baseline exists for SD 1.x/2.x only (diffusers has no SLD pipeline for a "
                          f"{type(pipe).__name__}); use a bank's safety concept or a negative prompt instead")
    if is_sdxl(pipe):
        raise HsteerError("the SLD baseline exists for SD 1.x/2.x only (diffusers has no SDXL SLD pipeline)")
    parts = pipe.components
    safe = StableDiffusionPipelineSafe(vae=parts["vae"], text_encoder=parts["text_encoder"],
                                       tokenizer=parts["tokenizer"], unet=parts["unet"],
                                       scheduler=parts["scheduler"], safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    safe.set_progress_bar_config(disable=True)
    return _WithCallKwargs(safe, sld_preset(preset))
