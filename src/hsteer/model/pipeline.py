"""The type of `pipe`: a loaded diffusers pipeline, as `hsteer.load_pipeline` or diffusers' own
`DiffusionPipeline.from_pretrained` returns it.

Every function of the library that takes `pipe` annotates it as `Pipeline`. Modules import it for type
checking only (`if TYPE_CHECKING: from hsteer.model.pipeline import Pipeline`, their annotations are
strings), so importing hsteer never loads diffusers' pipeline machinery (and transformers) for a type;
`hsteer.Pipeline` and `hsteer.model.pipeline.Pipeline` load it when first asked and are diffusers'
`DiffusionPipeline` itself, so `isinstance(pipe, hsteer.Pipeline)` works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeAlias

    from diffusers import DiffusionPipeline

    Pipeline: TypeAlias = DiffusionPipeline
    """A loaded diffusers pipeline (`diffusers.DiffusionPipeline`: Stable Diffusion 1.x/2.x, SDXL, SD3,
    FLUX, SANA or the bundled models), the `pipe` every hsteer function takes."""

__all__ = ["Pipeline"]


def __getattr__(name: str) -> Any:
    """`Pipeline`, diffusers' `DiffusionPipeline`, imported when first asked."""
    if name == "Pipeline":
        from diffusers import DiffusionPipeline

        return DiffusionPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
