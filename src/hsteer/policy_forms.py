"""The text forms of policies that the CLI and the web page share: ratios ('woman=0.3,man=0.7'), step
windows ('0.0,0.6') and explicit concepts ('square=0.8'), each parsed into the value or policy object the
library takes, with a one-line error that shows the form to write."""

from __future__ import annotations

import math
from collections.abc import Iterable

from hsteer.errors import HsteerError
from hsteer.policies import MAX_RATIO, ConceptPolicy
from hsteer.steering.hook import check_window


def parse_ratios(specs: Iterable[str]) -> dict[str, float]:
    """'woman=0.3,man=0.7' (repeatable) -> {"woman": 0.3, "man": 0.7}; weights finite and >= 0."""
    out: dict[str, float] = {}
    for spec in specs:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, value = item.partition("=")
            try:
                weight = float(value)
            except ValueError:
                raise HsteerError(f"bad ratio {item!r}: write NAME=WEIGHT,..., e.g. woman=0.3,man=0.7") from None
            if not math.isfinite(weight) or weight < 0 or weight > MAX_RATIO:
                raise HsteerError(f"bad ratio {item!r}: a weight is a number from 0 to {MAX_RATIO:g}, "
                                  "e.g. woman=0.3,man=0.7")
            out[name.strip()] = weight
    return out


def parse_window(spec: str | None) -> tuple[float, float] | None:
    """'0.0,0.6' -> (0.0, 0.6): steer only the first 60% of the denoising steps."""
    if not spec:
        return None
    start, _, end = spec.partition(",")
    try:
        return check_window(float(start), float(end))
    except ValueError:
        raise HsteerError(f"bad window {spec!r}: write START,END as fractions, e.g. 0.0,0.6") from None


def parse_concept_specs(specs: Iterable[str]) -> ConceptPolicy:
    """'name' or 'name=scale' -> ConceptPolicy."""
    pairs = []
    for spec in specs:
        name, _, scale = spec.partition("=")
        try:
            pairs.append((name.strip(), float(scale) if scale else 1.0))
        except ValueError:
            raise HsteerError(f"bad concept {spec!r}: write NAME or NAME=SCALE, e.g. square=0.8") from None
    return ConceptPolicy(tuple(pairs))
