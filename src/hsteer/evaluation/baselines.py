"""Policies of a run folder (from their JSON spec) and the SLD baseline (diffusers' safe pipeline)."""

from __future__ import annotations

from typing import Any

from hsteer.errors import HsteerError

SLD_PRESETS = ("weak", "medium", "strong", "max")


def policy_from_spec(spec: dict[str, Any]):
    from hsteer.generation import ConceptPolicy, FairPolicy, PlainPolicy, SafePolicy

    kind = spec.get("kind", "plain")
    if kind in ("plain", "sld"):
        return PlainPolicy()
    if kind == "fair":
        return FairPolicy(tuple(spec["groups"]), dict(spec.get("scales", {})))
    if kind == "safe":
        return SafePolicy(scale=float(spec.get("scales", {}).get("safety", 1.0)))
    if kind == "concepts":
        return ConceptPolicy(tuple((n, float(s)) for n, s in spec["concepts"]))
    raise HsteerError(f"unknown policy kind {kind!r}")


def policy_label(spec: dict[str, Any]) -> str:
    kind = spec.get("kind", "plain")
    if kind == "sld":
        return f"sld-{spec['preset']}"
    if kind == "fair":
        return "fair:" + ",".join(spec["groups"])
    return kind


def sld_preset(name: str) -> dict[str, float]:
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

    def __init__(self, pipe, kwargs: dict[str, Any]) -> None:
        self._pipe = pipe
        self._kwargs = dict(kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._pipe(*args, **{**self._kwargs, **kwargs})


def sld_pipeline(pipe, preset: str):
    """Safe Latent Diffusion (diffusers' StableDiffusionPipelineSafe) from the loaded SD pipeline's own parts."""
    from diffusers import StableDiffusionPipelineSafe

    from hsteer.model import is_sdxl

    if is_sdxl(pipe):
        raise HsteerError("the SLD baseline exists for SD 1.x/2.x only (diffusers has no SDXL SLD pipeline)")
    parts = pipe.components
    safe = StableDiffusionPipelineSafe(vae=parts["vae"], text_encoder=parts["text_encoder"],
                                       tokenizer=parts["tokenizer"], unet=parts["unet"],
                                       scheduler=parts["scheduler"], safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    safe.set_progress_bar_config(disable=True)
    return _WithCallKwargs(safe, sld_preset(preset))
