"""Generation with concepts: plain, fair, safe, or explicit, on any SD / SDXL pipeline, in batches.

Every image has its own seed (`seed + i` for the i-th image of a prompt) and, under a policy, its
own concepts: a fair batch mixes concepts image by image in one U-Net call. The manifest records for
each image exactly what is needed to regenerate it alone.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hsteer.hspace.bank import ConceptBank
from hsteer.errors import HsteerError
from hsteer.fileio import atomic_png, atomic_write_text
from hsteer.outputs import OutputFolder, check_generate_settings, check_images_finite, check_policy, manifest_line
from hsteer.model.geometry import pipeline_hspace_shape, resolve_resolution
from hsteer.hspace.steering import SteeringConfig, steer

# --- policies -------------------------------------------------------------------------------------


def require_bank(bank: ConceptBank | None, policy_name: str) -> ConceptBank:
    """The bank a steering policy draws from; the one check that it was given."""
    if bank is None:
        raise HsteerError(f"the {policy_name} policy needs a bank of concepts (CLI: --bank FILE; Python: bank=...)")
    return bank


@dataclass(frozen=True)
class PlainPolicy:
    """No concept: the unmodified model."""

    name: str = "plain"

    def assign(self, bank: ConceptBank | None, image_seed: int) -> list[tuple[str, float]]:
        return []


@dataclass(frozen=True)
class FairPolicy:
    """One concept per group for each image, drawn uniformly from the image's seed, summed with per-group scales.

    The draw is stratified: the combinations of the groups' concepts are shuffled (by a permutation
    seeded with `seed // K`, K the number of combinations) and image seed s takes combination `s % K`.
    Each image's concepts are thus uniform and depend on its seed alone, and any K consecutive seeds
    cover every combination exactly once, so a fair batch is balanced, not just balanced on average.
    """

    groups: tuple[str, ...]
    scales: dict[str, float] = field(default_factory=dict)
    name: str = "fair"

    def __post_init__(self) -> None:
        check_policy(self.groups, self.scales)

    def assign(self, bank: ConceptBank | None, image_seed: int) -> list[tuple[str, float]]:
        bank = require_bank(bank, self.name)
        if not self.groups:
            raise HsteerError("fair generation needs at least one group, e.g. --fair gender")
        members = [sorted(c.name for c in bank.group(group)) for group in self.groups]
        combos = list(itertools.product(*members))
        block, position = divmod(image_seed, len(combos))
        order = list(range(len(combos)))
        random.Random(f"hsteer-fair-{block}").shuffle(order)
        chosen = combos[order[position]]
        return [(name, float(self.scales.get(group, 1.0))) for group, name in zip(self.groups, chosen)]


@dataclass(frozen=True)
class SafePolicy:
    """The sum of every concept of the safety group."""

    group: str = "safety"
    scale: float = 1.0
    name: str = "safe"

    def __post_init__(self) -> None:
        check_policy((self.group,), {self.group: self.scale})

    def assign(self, bank: ConceptBank | None, image_seed: int) -> list[tuple[str, float]]:
        return [(c.name, self.scale) for c in require_bank(bank, self.name).group(self.group)]


@dataclass(frozen=True)
class ConceptPolicy:
    """Named concepts with scales for every image (e.g. {"woman": 0.5, "man": 0.5} interpolates)."""

    concepts: tuple[tuple[str, float], ...]
    name: str = "concepts"

    def __post_init__(self) -> None:
        check_policy((), {}, self.concepts)

    def assign(self, bank: ConceptBank | None, image_seed: int) -> list[tuple[str, float]]:
        bank = require_bank(bank, self.name)
        for concept, _ in self.concepts:
            bank[concept]  # unknown names fail with the bank's list
        return list(self.concepts)


Policy = PlainPolicy | FairPolicy | SafePolicy | ConceptPolicy


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


# --- outputs --------------------------------------------------------------------------------------


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
        data = asdict(self)
        extra = data.pop("extra")
        return {**data, **extra}

    def to_json(self) -> str:
        return manifest_line(self.to_dict())


@dataclass
class GenerationOutput:
    """Images with what was applied to each (the SLD-style record of the steering)."""

    images: list[Any]
    records: list[ImageRecord]
    count: int = -1  # images made, also when they were written and not kept

    def __len__(self) -> int:
        return self.count if self.count >= 0 else len(self.images)


def delta_for(bank: ConceptBank, concepts: Sequence[tuple[str, float]], shape: tuple[int, ...]) -> torch.Tensor:
    """Sum of scale * concept over `concepts` (zeros when empty)."""
    total = torch.zeros(shape)
    for name, scale in concepts:
        total += scale * bank[name].delta()
    if not bool(torch.isfinite(total).all()):
        used = ", ".join(f"{n}={s:g}" for n, s in concepts)
        raise HsteerError(f"the steering delta of {used} is NaN or infinite (a damaged concept, or a scale too "
                          "large); check the bank with `hsteer bank show`, or lower the scale")
    return total


@dataclass
class ImageJob:
    """One image to make: prompt, its index among the prompt's images, its seed, its concepts, its file name."""

    prompt: str
    index: int
    seed: int
    concepts: list[tuple[str, float]] = field(default_factory=list)
    file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def image_jobs(prompts: Sequence[str], num_images: int, seed: int) -> Iterator[tuple[str, int, int]]:
    """(prompt, index, seed) per image, streamed: the i-th image of any prompt has seed `seed + i`."""
    check_generate_settings(prompts, num_images, seed, 1, 0.0, 1, None, None)
    return ((p, i, seed + i) for p in prompts for i in range(num_images))


def _resolution_and_shape(pipe, height: int | None, width: int | None) -> tuple[int, int, tuple[int, int, int]]:
    """The image size (the model's native one where not given) and the h-space shape at that size."""
    height, width = resolve_resolution(pipe, height, width)
    return height, width, pipeline_hspace_shape(pipe, height, width)


def generate(pipe, prompts: str | Sequence[str], *, num_images_per_prompt: int = 1, seed: int = 0,
             bank: ConceptBank | None = None, policy: Policy | None = None, steps: int = 50,
             guidance: float = 7.5, height: int | None = None, width: int | None = None, batch_size: int = 8,
             steer_unconditional: bool = False, allow_other_model: bool = False, out_dir: str | Path | None = None,
             progress: bool = True, negative_prompt: str | None = None, overwrite: bool = False,
             resume: bool = False, keep_images: bool = True) -> GenerationOutput:
    """Generate `num_images_per_prompt` images per prompt under `policy`, `batch_size` images per U-Net batch.

    With `out_dir`, images are written as PNGs with `manifest.jsonl` (one JSON object per image), each
    line appended as its image is written. A folder that already holds files is refused unless
    `overwrite` or `resume` (which makes only the missing images, with the same settings); see
    `hsteer.outputs`. `keep_images=False` returns no images (for runs too large to hold in memory).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    policy = policy or PlainPolicy()
    check_generate_settings(prompts, num_images_per_prompt, seed, steps, guidance, batch_size, height, width)
    height, width, shape = _resolution_and_shape(pipe, height, width)
    if not isinstance(policy, PlainPolicy):
        require_bank(bank, policy.name).check_compatible(pipe.unet, shape, allow_other_model=allow_other_model)
        policy.assign(bank, seed)  # unknown concepts or groups fail before any folder is touched
    folder = OutputFolder(out_dir, overwrite=overwrite, resume=resume) if out_dir is not None else None
    work: Iterable[ImageJob] = (ImageJob(p, i, s, policy.assign(bank, s), f"{n:05d}.png" if folder else None)
                                for n, (p, i, s) in enumerate(image_jobs(prompts, num_images_per_prompt, seed)))
    settings = dict(steps=steps, guidance=guidance, height=height, width=width)
    if folder is not None and folder.done:
        work = folder.pending(work, lambda job: _record(job, policy.name, **settings).to_dict())
    total = len(prompts) * num_images_per_prompt - (len(folder.done) if folder else 0)
    return generate_jobs(pipe, work, bank, policy.name, batch_size=batch_size, steer_unconditional=steer_unconditional,
                         progress=progress, negative_prompt=negative_prompt, total=total, keep_images=keep_images,
                         sink=folder.add if folder else None, **settings)


def _record(job: ImageJob, policy_name: str, *, steps: int, guidance: float, height: int, width: int) -> ImageRecord:
    return ImageRecord(job.file, job.prompt, job.seed, [{"name": n, "scale": s} for n, s in job.concepts],
                       policy_name, steps, guidance, height, width, job.index, dict(job.extra))


def generate_jobs(pipe, jobs: Iterable[ImageJob], bank: ConceptBank | None, policy_name: str, *, steps: int,
                  guidance: float, height: int | None = None, width: int | None = None, batch_size: int = 8,
                  steer_unconditional: bool = False, out_dir: str | Path | None = None, progress: bool = True,
                  negative_prompt: str | None = None, sink: Callable[[dict[str, Any], Any], None] | None = None,
                  total: int | None = None, keep_images: bool = True) -> GenerationOutput:
    """Generate explicit jobs in batches (each with its own seed and concepts); PNGs go to `out_dir/job.file`.

    The lower-level entry point of `generate`, for harnesses that shard, skip finished images or choose
    file names themselves. Writes no manifest; `sink(row, image)` is called for each finished image.
    `jobs` may be a stream. An image with NaN or infinite values stops the run before it is written.
    """
    from tqdm.auto import tqdm

    height, width, shape = _resolution_and_shape(pipe, height, width)
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
    images, records, count = [], [], 0
    device = pipe.unet.device
    gen_device = "cpu" if device.type == "mps" else device
    total = len(jobs) if total is None and isinstance(jobs, Sequence) else total
    bar = tqdm(total=total, disable=not progress, desc=f"generate ({policy_name})", unit="img")
    stream = iter(jobs)
    while batch := list(itertools.islice(stream, batch_size)):
        config = None
        if any(job.concepts for job in batch):
            delta = torch.stack([delta_for(require_bank(bank, policy_name), job.concepts, shape) for job in batch])
            config = SteeringConfig(delta, steer_unconditional=steer_unconditional)
        generators = [torch.Generator(gen_device).manual_seed(job.seed) for job in batch]
        kwargs = {}
        if negative_prompt:
            kwargs["negative_prompt"] = [negative_prompt] * len(batch)
        with steer(pipe, config):
            result = pipe([job.prompt for job in batch], num_inference_steps=steps, guidance_scale=guidance,
                          height=height, width=width, generator=generators, output_type="np", **kwargs)
        check_images_finite(result.images, batch, guidance)
        for job, image in zip(batch, pipe.numpy_to_pil(result.images)):
            record = _record(job, policy_name, steps=steps, guidance=guidance, height=height, width=width)
            if sink is not None:
                sink(record.to_dict(), image)
            elif out_path is not None and job.file:
                atomic_png(out_path / job.file, image)
            count += 1
            if keep_images:
                images.append(image)
                records.append(record)
        bar.update(len(batch))
    bar.close()
    return GenerationOutput(images, records, count)


def write_manifest(path: Path, records: Sequence[ImageRecord]) -> None:
    atomic_write_text(path, "".join(r.to_json() + "\n" for r in records))
