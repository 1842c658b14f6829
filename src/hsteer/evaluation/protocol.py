"""The one interface every attribute classifier implements (world probes, CLIP zero-shot, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class AttributeClassifier(Protocol):
    """Maps images to one label per attribute group.

    `attributes`: group name -> the labels it can return (e.g. {"gender": ("woman", "man")}).
    `classify(images)`: group name -> one label per image, for every group in `attributes`
    (a classifier may return extra keys, e.g. the world probes also read "profession" and "harm").
    """

    attributes: dict[str, tuple[str, ...]]

    def classify(self, images: Sequence[Any]) -> dict[str, list[str]]:
        """Per attribute group, each image's attribute label, in the images' order."""
