"""Generation with concepts: plain, fair, safe, or explicit, on any SD / SDXL pipeline, in batches.

Every image has its own seed (`seed + i` for the i-th image of a prompt) and, under a policy, its
own concepts: a fair batch mixes concepts image by image in one U-Net call. The manifest records for
each image exactly what is needed to regenerate it alone.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from hsteer.hspace.bank import ConceptBank
from hsteer.errors import HsteerError
from hsteer.fileio import atomic_png, atomic_write_text
from hsteer.outputs import OutputFolder, check_generate_settings, check_images_finite, check_policy, manifest_line
from hsteer.model.geometry import pipeline_hspace_shape, resolve_resolution
from hsteer.hspace.attach import attach_pipeline, detach_pipeline, suspended
from hsteer.hspace.steering import SteeringConfig, check_window, steer

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
    """One concept per group for each image, drawn from the image's seed, summed with per-group scales.

    The draw is stratified: the combinations of the groups' concepts fill a block of K slots (each
    combination as many slots as its share of K), the slots are shuffled (by a permutation seeded with
    `seed // K`) and image seed s takes slot `s % K`. Each image's concepts thus depend on its seed alone,
    and any K consecutive seeds (aligned on a multiple of K) hold every combination exactly its share,
    so a fair batch is balanced, not just balanced on average.

    `ratios` (concept -> weight) makes a group non-uniform, e.g. {"woman": 0.3, "man": 0.7}. Weights are
    normalised within their group and rounded to the nearest fraction with denominator <= 100
    (`Fraction.limit_denominator(100)`, then renormalised); K is the least common multiple of the
    combinations' denominators (10 for 0.3/0.7; 3 for 1/3, 2/3). A group without ratios is uniform; a
    group with some must give every member (0 never draws that concept). Uniform groups give K = the
    number of combinations, the draws of hsteer before ratios existed.
    """

    groups: tuple[str, ...]
    scales: dict[str, float] = field(default_factory=dict)
    name: str = "fair"
    ratios: dict[str, float] = field(default_factory=dict)

    def _slots(self, bank: ConceptBank) -> list[tuple[str, ...]]:
        """The block: each combination repeated by its share (sorted members; uniform: each once)."""
        members = [sorted(c.name for c in bank.group(group)) for group in self.groups]
        known = {name for names in members for name in names}
        unknown = sorted(set(self.ratios) - known)
        if unknown:
            raise HsteerError(f"--ratio names {', '.join(unknown)}, not a concept of the groups "
                              f"{', '.join(self.groups)} (their concepts: {', '.join(sorted(known))})")
        weights = [_group_weights(group, names, self.ratios) for group, names in zip(self.groups, members)]
        combos = list(itertools.product(*members))
        shares = [math.prod(weights[g][name] for g, name in enumerate(combo)) for combo in combos]
        block = math.lcm(*(share.denominator for share in shares))
        if block > 100_000:
            raise HsteerError(f"these ratios need blocks of {block} images to balance exactly; use simpler "
                              "ratios (e.g. tenths)")
        return [combo for combo, share in zip(combos, shares) for _ in range(int(share * block))]

    def __post_init__(self) -> None:
        check_policy(self.groups, self.scales)

    def assign(self, bank: ConceptBank | None, image_seed: int) -> list[tuple[str, float]]:
        bank = require_bank(bank, self.name)
        if not self.groups:
            raise HsteerError("fair generation needs at least one group, e.g. --fair gender")
        slots = self._slots(bank)
        block, position = divmod(image_seed, len(slots))
        order = list(range(len(slots)))
        random.Random(f"hsteer-fair-{block}").shuffle(order)
        chosen = slots[order[position]]
        return [(name, float(self.scales.get(group, 1.0))) for group, name in zip(self.groups, chosen)]


def _group_weights(group: str, names: list[str], ratios: dict[str, float]) -> dict[str, Fraction]:
    """Each member's share of its group as a fraction (uniform without ratios)."""
    given = {n: ratios[n] for n in names if n in ratios}
    if not given:
        return {n: Fraction(1, len(names)) for n in names}
    missing = [n for n in names if n not in given]
    if missing:
        raise HsteerError(f"--ratio gives some concepts of group {group!r} but not {', '.join(missing)}; "
                          "give every member (0 to never draw one)")
    if any(not math.isfinite(v) or v < 0 for v in given.values()) or sum(given.values()) <= 0:
        raise HsteerError(f"ratios of group {group!r} must be >= 0 with a positive sum, got {given}")
    total = sum(given.values())
    rounded = {n: Fraction(v / total).limit_denominator(100) for n, v in given.items()}
    norm = sum(rounded.values())
    return {n: r / norm for n, r in rounded.items()}


def parse_ratios(specs: Iterable[str]) -> dict[str, float]:
    """'woman=0.3,man=0.7' (repeatable) -> {"woman": 0.3, "man": 0.7}."""
    out = {}
    for spec in specs:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, value = item.partition("=")
            try:
                out[name.strip()] = float(value)
            except ValueError:
                raise HsteerError(f"bad ratio {item!r}: write NAME=WEIGHT,..., e.g. woman=0.3,man=0.7") from None
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


def steering_configs(bank: ConceptBank | None, policy_name: str, batch: Sequence[ImageJob], shape: tuple[int, ...],
                     steer_unconditional: bool = False,
                     window: tuple[float, float] | None = None) -> list[SteeringConfig]:
    """The hooks of one batch: one per step window, each adding its concepts to the images that use them.

    A concept acts in the window it was learned for (`Concept.window`, every step if none); an explicit
    `window` applies to every concept. So a fair shape x colour batch adds shape late and colour early.
    """
    if not any(job.concepts for job in batch):
        return []
    bank = require_bank(bank, policy_name)

    def window_of(name: str) -> tuple[float, float]:
        return check_window(*(window or bank[name].window or (0.0, 1.0)))

    windows = sorted({window_of(name) for job in batch for name, _ in job.concepts})
    configs = []
    for start, end in windows:
        delta = torch.stack([delta_for(bank, [(n, s) for n, s in job.concepts if window_of(n) == (start, end)], shape)
                             for job in batch])
        configs.append(SteeringConfig(delta, steer_unconditional=steer_unconditional, start=start, end=end))
    return configs


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
    inputs: dict[str, Any] = field(default_factory=dict)  # pipeline inputs of this image (init image, mask)


def image_jobs(prompts: Sequence[str], num_images: int, seed: int) -> Iterator[tuple[str, int, int]]:
    """(prompt, index, seed) per image, streamed: the i-th image of any prompt has seed `seed + i`."""
    check_generate_settings(prompts, num_images, seed, 1, 0.0, 1, None, None)
    return ((p, i, seed + i) for p in prompts for i in range(num_images))


def _resolution_and_shape(pipe, height: int | None, width: int | None,
                          image: Any = None) -> tuple[int, int, tuple[int, int, int]]:
    """The image size (the init image's, else the model's native one, where not given) and the h-space
    shape at that size."""
    if image is not None and not (height and width):
        size = _image_size(image)
        if size is not None:
            height, width = height or size[0], width or size[1]
    height, width = resolve_resolution(pipe, height, width)
    return height, width, pipeline_hspace_shape(pipe, height, width)


def _image_size(image: Any) -> tuple[int, int] | None:
    """(height, width) of a PIL image, an array `(H, W, C)` or a tensor `(..., C, H, W)`; lists: the first."""
    if isinstance(image, (list, tuple)):
        return _image_size(image[0]) if image else None
    if hasattr(image, "size") and not callable(image.size):  # PIL
        return int(image.size[1]), int(image.size[0])
    if isinstance(image, torch.Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    shape = getattr(image, "shape", None)
    return (int(shape[-3]), int(shape[-2])) if shape is not None and len(shape) >= 3 else None


def _accepts(pipe, name: str) -> bool:
    return name in inspect.signature(type(pipe).__call__).parameters


def generate(pipe, prompts: str | Sequence[str], *, num_images_per_prompt: int = 1, seed: int = 0,
             bank: ConceptBank | None = None, policy: Policy | None = None, steps: int = 50,
             guidance: float = 7.5, height: int | None = None, width: int | None = None, batch_size: int = 8,
             steer_unconditional: bool = False, allow_other_model: bool = False, out_dir: str | Path | None = None,
             progress: bool = True, negative_prompt: str | None = None, overwrite: bool = False,
             resume: bool = False, keep_images: bool = True, window: tuple[float, float] | None = None,
             image: Any = None, strength: float | None = None, mask_image: Any = None,
             pipe_kwargs: dict[str, Any] | None = None) -> GenerationOutput:
    """Generate `num_images_per_prompt` images per prompt under `policy`, `batch_size` images per U-Net batch.

    With `out_dir`, images are written as PNGs with `manifest.jsonl` (one JSON object per image), each
    line appended as its image is written. A folder that already holds files is refused unless
    `overwrite` or `resume` (which makes only the missing images, with the same settings); see
    `hsteer.outputs`. `keep_images=False` returns no images (for runs too large to hold in memory).
    `window=(start, end)` steers only those fractions of the denoising steps (`SteeringConfig`).
    `image`, `strength` and `mask_image` go to img2img / inpaint pipelines (one image for every prompt,
    or a list with one per prompt); `pipe_kwargs` to the pipeline call as they are.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    policy = policy or PlainPolicy()
    check_generate_settings(prompts, num_images_per_prompt, seed, steps, guidance, batch_size, height, width)
    height, width, shape = _resolution_and_shape(pipe, height, width, image)
    if not isinstance(policy, PlainPolicy):
        require_bank(bank, policy.name).check_compatible(pipe.unet, shape, allow_other_model=allow_other_model)
        policy.assign(bank, seed)  # unknown concepts or groups fail before any folder is touched
    images, masks = _per_prompt(image, prompts, "image"), _per_prompt(mask_image, prompts, "mask_image")
    folder = OutputFolder(out_dir, overwrite=overwrite, resume=resume) if out_dir is not None else None

    def job(n: int, prompt: str, index: int, image_seed: int) -> ImageJob:
        inputs = {"image": images[prompt]} if image is not None else {}
        if mask_image is not None:
            inputs["mask_image"] = masks[prompt]
        return ImageJob(prompt, index, image_seed, policy.assign(bank, image_seed),
                        f"{n:05d}.png" if folder else None, inputs=inputs)

    work: Iterable[ImageJob] = (job(n, *spec) for n, spec in enumerate(image_jobs(prompts, num_images_per_prompt,
                                                                                    seed)))
    settings = dict(steps=steps, guidance=guidance, height=height, width=width, window=window, strength=strength)
    if folder is not None and folder.done:
        work = folder.pending(work, lambda job: _record(job, policy.name, **settings).to_dict())
    total = len(prompts) * num_images_per_prompt - (len(folder.done) if folder else 0)
    return generate_jobs(pipe, work, bank, policy.name, batch_size=batch_size, steer_unconditional=steer_unconditional,
                         progress=progress, negative_prompt=negative_prompt, total=total, keep_images=keep_images,
                         sink=folder.add if folder else None, pipe_kwargs=pipe_kwargs, **settings)


def _per_prompt(value: Any, prompts: list[str], what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, (list, tuple)):
        if len(value) != len(prompts):
            raise HsteerError(f"{what}: give one for every prompt, or one list entry per prompt "
                              f"({len(value)} for {len(prompts)} prompts)")
        return dict(zip(prompts, value))
    return {p: value for p in prompts}


def _record(job: ImageJob, policy_name: str, *, steps: int, guidance: float, height: int, width: int,
            window: tuple[float, float] | None = None, strength: float | None = None) -> ImageRecord:
    """The manifest row of one image: enough to regenerate it alone."""
    extra = dict(job.extra)
    if window is not None:
        extra["window"] = list(check_window(*window))
    if strength is not None:
        extra["strength"] = strength
    return ImageRecord(job.file, job.prompt, job.seed, [{"name": n, "scale": s} for n, s in job.concepts],
                       policy_name, steps, guidance, height, width, job.index, extra)


def generate_jobs(pipe, jobs: Iterable[ImageJob], bank: ConceptBank | None, policy_name: str, *, steps: int,
                  guidance: float, height: int | None = None, width: int | None = None, batch_size: int = 8,
                  steer_unconditional: bool = False, out_dir: str | Path | None = None, progress: bool = True,
                  negative_prompt: str | None = None, sink: Callable[[dict[str, Any], Any], None] | None = None,
                  total: int | None = None, keep_images: bool = True, window: tuple[float, float] | None = None,
                  strength: float | None = None, pipe_kwargs: dict[str, Any] | None = None) -> GenerationOutput:
    """Generate explicit jobs in batches (each with its own seed and concepts); PNGs go to `out_dir/job.file`.

    The lower-level entry point of `generate`, for harnesses that shard, skip finished images or choose
    file names themselves. Writes no manifest; `sink(row, image)` is called for each finished image.
    `jobs` may be a stream. An image with NaN or infinite values stops the run before it is written.
    Generators and steering live on the pipeline's execution device (the GPU under
    `enable_model_cpu_offload()`).
    """
    from tqdm.auto import tqdm

    stream = iter(jobs)
    batch = list(itertools.islice(stream, batch_size))
    first_image = next((job.inputs["image"] for job in batch if "image" in job.inputs), None)
    height, width, shape = _resolution_and_shape(pipe, height, width, first_image)
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
    images, records, count = [], [], 0
    device = torch.device(getattr(pipe, "_execution_device", None) or pipe.unet.device)
    gen_device = "cpu" if device.type == "mps" else device
    sizes = {k: v for k, v in (("height", height), ("width", width)) if _accepts(pipe, k)}
    call = {"num_inference_steps": steps, "guidance_scale": guidance, **sizes, **(pipe_kwargs or {})}
    if strength is not None:
        call["strength"] = strength
    total = len(jobs) if total is None and isinstance(jobs, Sequence) else total
    bar = tqdm(total=total, disable=not progress, desc=f"generate ({policy_name})", unit="img")
    while batch:
        configs = steering_configs(bank, policy_name, batch, shape, steer_unconditional, window)
        kwargs = dict(call, generator=[torch.Generator(gen_device).manual_seed(job.seed) for job in batch])
        if negative_prompt:
            kwargs["negative_prompt"] = [negative_prompt] * len(batch)
        for key in ("image", "mask_image"):
            if any(key in job.inputs for job in batch):
                kwargs[key] = [job.inputs[key] for job in batch]
        with suspended(pipe), contextlib.ExitStack() as stack:
            for n, config in enumerate(configs):
                stack.enter_context(steer(pipe, config, name=f"hsteer-{n}"))
            result = pipe([job.prompt for job in batch], output_type="np", **kwargs)
        check_images_finite(result.images, batch, guidance)
        for job, image in zip(batch, pipe.numpy_to_pil(result.images)):
            record = _record(job, policy_name, steps=steps, guidance=guidance, height=height, width=width,
                             window=window, strength=strength)
            if sink is not None:
                sink(record.to_dict(), image)
            elif out_path is not None and job.file:
                atomic_png(out_path / job.file, image)
            count += 1
            if keep_images:
                images.append(image)
                records.append(record)
        bar.update(len(batch))
        batch = list(itertools.islice(stream, batch_size))
    bar.close()
    return GenerationOutput(images, records, count)


# --- attach once, then ordinary pipeline calls ------------------------------------------------------


def attach(pipe, bank: ConceptBank | None, policy: Policy, *, scale: float = 1.0,
           window: tuple[float, float] | None = None, steer_unconditional: bool = False,
           allow_other_model: bool = False):
    """Steer every later plain `pipe(...)` call with `policy`'s concepts from `bank`, until `detach(pipe)`.

    Each image's concepts are drawn from its seed, as `generate` does: with `generator=[g_0, ..., g_{B-1}]`
    (one per image, diffusers' layout prompt-major: prompt 0's images first), image i's seed is
    `g_i.initial_seed()`, so the same seeds give the same images as `generate(..., seed=...)` with the same
    policy. With one generator seeded s, image i of each prompt is drawn with seed s + i (its noise is
    then diffusers', from one generator). With none, images are numbered consecutively across calls
    from 0, so every block of images stays balanced. `hsteer.attachment_of(pipe).last` lists the concepts
    each image of the last call got.

    Calling `attach` again swaps policy, bank, scale or window in place: the hook stays, its buffer is
    overwritten, nothing is recompiled on a `torch.compile`d U-Net. Attach *before* compiling the U-Net.
    Works on SD 1.x/2.x/SDXL text-to-image, img2img and inpaint pipelines (attach each pipeline you call;
    `from_pipe` makes a new, unattached pipeline that shares the U-Net). The h-space shape is checked on
    every call (img2img: at the init image's size).
    """
    if not isinstance(policy, PlainPolicy):
        require_bank(bank, policy.name).check_compatible(pipe.unet, pipeline_hspace_shape(pipe),
                                                         allow_other_model=allow_other_model)
    if not isinstance(policy, PlainPolicy):
        policy.assign(bank, 0)  # unknown concepts, groups or ratios fail now, not in the middle of a call
        window = window or _common_window(bank, policy)
    start, end = check_window(*(window or (0.0, 1.0)))
    shape = tuple(bank.hspace_shape) if bank is not None and bank.hspace_shape else None

    def provider(seeds: list[int]):
        draws = [policy.assign(bank, s) for s in seeds]
        info = [[{"name": n, "scale": c} for n, c in concepts] for concepts in draws]
        if not any(draws):
            return None, info
        return torch.stack([delta_for(require_bank(bank, policy.name), d, shape) for d in draws]), info

    return attach_pipeline(pipe, provider, scale=scale, start=start, end=end,
                           steer_unconditional=steer_unconditional, policy_name=policy.name)


def _common_window(bank: ConceptBank, policy: Policy) -> tuple[float, float] | None:
    """The step window every concept the policy can draw was learned for; attach arms one window per call."""
    names = {name for seed in range(256) for name, _ in policy.assign(bank, seed)}
    windows = {bank[name].window for name in names}
    if len(windows) > 1:
        found = ", ".join(f"{n}: {bank[n].window or 'every step'}" for n in sorted(names))
        raise HsteerError(f"the policy's concepts act in different step windows ({found}); attach steers one "
                          "window per call: pass window=(start, end), or use hsteer.generate, which applies "
                          "each concept in its own window")
    return next(iter(windows), None)


def detach(pipe) -> None:
    """Stop steering `pipe`'s calls; its images are bit-identical to the unattached pipeline's again."""
    detach_pipeline(pipe)


def write_manifest(path: Path, records: Sequence[ImageRecord]) -> None:
    atomic_write_text(path, "".join(r.to_json() + "\n" for r in records))
