"""Shapes at a site or a set of sites: what a concept holds there at an image size.

A single site's shape is `hsteer.model.denoisers.site_shape`'s. A set of sites (`SiteSet`) carries one
tensor per site, and what flows through steering is their flat concatenation: its shape is `(size,)`,
and the set is *bound* to the sites' shapes at that image size (`bind_site`) so that each site's hook
can take its slice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hsteer.errors import ShapeMismatchError
from hsteer.model.denoisers import site_shape as single_site_shape
from hsteer.model.sites import SiteSet, SteeringSite

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


def bind_site(pipe: Pipeline, site: SteeringSite | SiteSet, height: int | None = None,
              width: int | None = None) -> SteeringSite | SiteSet:
    """`site`, a set bound to its sites' shapes at `height` x `width` (a single site as it is). A set bound
    already (a bank's) must have the model's shapes at that size."""
    if not isinstance(site, SiteSet):
        return site
    shapes = tuple(single_site_shape(pipe, part, height, width) for part in site.sites)
    if site.shapes is not None and site.shapes != shapes:
        wrong = next(f"{part.spec}: {tuple(a)} vs the model's {tuple(b)}"
                     for part, a, b in zip(site.sites, site.shapes, shapes) if tuple(a) != tuple(b))
        raise ShapeMismatchError(f"the concepts' tensors do not fit the model's sites at this size ({wrong}); "
                                 "generate at the size they were learned at, or learn them for this model and size")
    return site.with_shapes(shapes)


def site_shape(pipe: Pipeline, site: SteeringSite | SiteSet, height: int | None = None,
               width: int | None = None) -> tuple[int, ...]:
    """The shape of one image's concept at `site` at `height` x `width` (native where not given): the
    site's own shape, or `(size,)` for a set of sites (their tensors flattened and concatenated)."""
    if isinstance(site, SiteSet):
        return (bind_site(pipe, site, height, width).size,)
    return single_site_shape(pipe, site, height, width)


def site_meta(site: SteeringSite | SiteSet) -> dict[str, Any]:
    """What a concept's meta records of its site: its spec, and for a set each site's shape."""
    meta: dict[str, Any] = {"site": site.spec}
    if isinstance(site, SiteSet):
        meta["site_shapes"] = {part.spec: list(shape) for part, shape in zip(site.sites, site.bound_shapes())}
    return meta
