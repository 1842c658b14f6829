"""Layer 1, the model: loading pipelines, their h-space geometry, and the reverse-process pieces training needs."""

from hsteer.model.geometry import (
    default_resolution,
    hspace_shape,
    is_sdxl,
    pipeline_hspace_shape,
    resolve_resolution,
    unet_fingerprint,
)
from hsteer.model.loading import (
    BUNDLED_MODEL,
    default_model,
    load_pipeline,
    load_quietly,
    quiet_libraries,
    resolve_dtype,
    sampling_defaults,
)

__all__ = ["BUNDLED_MODEL", "default_model", "default_resolution", "hspace_shape", "is_sdxl", "load_pipeline",
           "load_quietly", "pipeline_hspace_shape", "quiet_libraries", "resolve_dtype", "resolve_resolution",
           "sampling_defaults", "unet_fingerprint"]
