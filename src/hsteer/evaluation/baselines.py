"""Policies of a run folder (from their JSON spec) and the SLD baseline (diffusers' safe pipeline)."""

from __future__ import annotations

from typing import Any

from hsteer.errors import HsteerError
from hsteer.policies import SLD_PRESETS, ConceptPolicy, PlainPolicy, policy_from_spec

__all__ = ["SLD_PRESETS", "check_baseline_run", "policy_from_spec", "policy_label", "sld_pipeline", "sld_preset",
           "targeted_by_spec"]


# Generation settings a plain baseline run must share with the steered run it is the baseline of.
BASELINE_KEYS = ("task", "model", "dtype", "steps", "guidance", "height", "width", "seed")


def check_baseline_run(base_dir, generation) -> None:
    """Refuse a baseline folder that is not a plain run of the same model, sampling and seeds.

    Prompts are matched image by image when scoring (same prompt and seed), so its task arguments may differ.
    """
    from pathlib import Path

    from hsteer.evaluation.runs import read_config

    base = read_config(Path(base_dir)).generation
    if type(policy_from_spec(base.policy)) is not PlainPolicy:
        raise HsteerError(f"--baseline-run {base_dir} is a {policy_label(base.policy)} run; it must be plain")
    ours, theirs = generation.to_dict(), base.to_dict()
    diff = [k for k in BASELINE_KEYS if ours.get(k) != theirs.get(k)]
    if diff:
        raise HsteerError(f"--baseline-run {base_dir} was made with other settings ({', '.join(diff)} differ); "
                          "it needs the same model, sampling and seeds")


def targeted_by_spec(spec: dict[str, Any], bank_path: str | None = None) -> set[str]:
    """The attribute groups a run's policy steers (read from its bank for explicit concepts)."""
    policy = policy_from_spec(spec)
    bank = None
    if isinstance(policy, ConceptPolicy) and bank_path:
        from hsteer.hspace.bank import ConceptBank

        bank = ConceptBank.load(bank_path)
    return policy.targeted_groups(bank)


def policy_label(spec: dict[str, Any]) -> str:
    """The compact tag of a run's policy (e.g. `fair:gender`, `sld-medium`)."""
    return policy_from_spec(spec).label


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
