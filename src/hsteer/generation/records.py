"""What one image is and what was applied to it: the job to make, the manifest row, the output."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hsteer.outputs import manifest_line


@dataclass
class ImageJob:
    """One image to make: prompt, its index among the prompt's images, its seed, its concepts, its file name."""

    prompt: str
    index: int
    seed: int
    concepts: list[tuple[str, float]] = field(default_factory=list)
    file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)  # pipeline inputs of this image (init image, mask)


@dataclass
class ImageRecord:
    """One manifest line: enough to regenerate this image alone."""

    file: str | None
    prompt: str
    seed: int
    concepts: list[dict[str, Any]]
    policy: str
    steps: int
    guidance: float
    height: int
    width: int
    index: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record as a manifest row: its fields, with `extra`'s keys at the top level."""
        data = asdict(self)
        extra = data.pop("extra")
        return {**data, **extra}

    def to_json(self) -> str:
        """The record as one manifest line (JSON, no newline)."""
        return manifest_line(self.to_dict())


@dataclass
class GenerationOutput:
    """Images with what was applied to each (the SLD-style record of the steering)."""

    images: list[Any]
    records: list[ImageRecord]
    count: int = -1  # images made, also when they were written and not kept

    def __len__(self) -> int:
        return self.count if self.count >= 0 else len(self.images)
