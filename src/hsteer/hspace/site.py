"""Steering sites: the submodule of a denoiser whose output a concept is added to.

Today's only site is the U-Net mid-block output, the "h-space" of SD 1.x, 2.x and SDXL. A site is a
parameter of the hook (not a constant inside it) so that transformer blocks or the text representation
can be added as further sites without a second hook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hsteer.errors import HsteerError


def base_module(module: torch.nn.Module) -> torch.nn.Module:
    """The module under a `torch.compile` wrapper (`OptimizedModule._orig_mod`), or the module itself."""
    return getattr(module, "_orig_mod", module)


@dataclass(frozen=True)
class SteeringSite:
    """A submodule of the denoiser, named by its attribute path, e.g. `"mid_block"` of a U-Net.

    `denoiser_attr` is the pipeline attribute holding the denoiser (`pipe.unet` for the U-Net models).
    """

    path: str = "mid_block"
    denoiser_attr: str = "unet"

    @property
    def label(self) -> str:
        return f"{self.denoiser_attr}.{self.path}"

    def denoiser(self, pipe_or_model):
        """The denoiser of a pipeline, or the model itself when given one (compile wrappers kept)."""
        model = getattr(pipe_or_model, self.denoiser_attr, pipe_or_model)
        if self.module(model, missing_ok=True) is None:
            raise HsteerError(f"{type(pipe_or_model).__name__} has no {self.label} to steer (hsteer steers the "
                              "U-Net mid-block of SD 1.x, 2.x and SDXL pipelines)")
        return model

    def module(self, denoiser, missing_ok: bool = False) -> torch.nn.Module | None:
        """The site's submodule inside `denoiser` (a compile wrapper is looked through)."""
        found = base_module(denoiser)
        for part in self.path.split("."):
            found = getattr(found, part, None)
            if found is None:
                if missing_ok:
                    return None
                raise HsteerError(f"{type(denoiser).__name__} has no {self.path} to steer")
        if not isinstance(found, torch.nn.Module):
            if missing_ok:
                return None
            raise HsteerError(f"{type(denoiser).__name__}.{self.path} is not a module")
        return found

    def is_pipeline(self, pipe_or_model) -> bool:
        return getattr(pipe_or_model, self.denoiser_attr, None) is not None


#: The U-Net mid-block output: hsteer's default and, today, only site.
MID_BLOCK = SteeringSite()
