"""The batch engine: `generate` and `generate_jobs`, on any SD / SDXL pipeline.

Every image has its own seed (`seed + i` for the i-th image of a prompt) and, under a policy, its own
concepts: a fair batch mixes concepts image by image in one denoiser call. Each batch is one pipeline
call steered by one layer (`steering.attach.only_layer`), the arming `attach` and `steer` use too. The
manifest records for each image exactly what is needed to regenerate it alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hsteer.errors import HsteerError
from hsteer.fileio import atomic_png
from hsteer.gate import GateConfig
from hsteer.generation.deltas import window_deltas
from hsteer.generation.draws import draw_for, prompt_gate
from hsteer.generation.guard import Guard, GuardConfig, build_guard, without_group
from hsteer.generation.x0 import X0Capture, check_x0_readable
from hsteer.generation.records import GenerationOutput, ImageJob, ImageRecord
from hsteer.steering.attach import Layer, only_layer, steering_of
from hsteer.steering.bank import ConceptBank
from hsteer.steering.hook import check_window
from hsteer.model.loading import sampling_for
from hsteer.model.sites import MID_BLOCK, SteeringSite
from hsteer.steering.siteshape import site_shape
from hsteer.model.denoisers import call_defaults
from hsteer.model.geometry import resolve_resolution
from hsteer.model.sites import denoiser_of
from hsteer.checks import check_flags, check_pipeline, check_steering_args, check_strength, prompt_list
from hsteer.steering.bankcheck import check_bank_windows
from hsteer.outputs import OutputFolder, check_generate_settings, check_images_finite
from hsteer.policies import Policy, PlainPolicy, check_policy_object, require_bank

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


def image_jobs(prompts: Sequence[str], num_images: int, seed: int) -> Iterator[tuple[str, int, int]]:
    """(prompt, index, seed) per image, streamed: the i-th image of any prompt has seed `seed + i`."""
    check_generate_settings(prompts, num_images, seed, 1, 0.0, 1, None, None)
    return ((p, i, seed + i) for p in prompts for i in range(num_images))


def _resolution_and_shape(pipe, height: int | None, width: int | None, image: Any = None,
                          site: SteeringSite | None = None) -> tuple[int, int, tuple[int, ...] | None]:
    """The image size (the init image's, else the model's native one, where not given) and the shape of a
    concept at `site` at that size (None without a site: nothing is steered)."""
    if image is not None and not (height and width):
        size = _image_size(image)
        if size is not None:
            height, width = height or size[0], width or size[1]
    height, width = resolve_resolution(pipe, height, width)
    return height, width, site_shape(pipe, site, height, width) if site is not None else None


def _site(pipe, bank: ConceptBank | None) -> SteeringSite | None:
    """Where this run steers: the bank's site, else the site of the pipeline's own steering, else nowhere."""
    if bank is not None:
        return bank.site_of(pipe)
    steering = steering_of(pipe)
    return steering.site if steering is not None else None


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


def generate(pipe: Pipeline, prompts: str | Sequence[str], *, num_images_per_prompt: int = 1, seed: int = 0,
             bank: ConceptBank | None = None, policy: Policy | None = None, steps: int | None = None,
             guidance: float | None = None, height: int | None = None, width: int | None = None, batch_size: int = 8,
             steer_unconditional: bool = False, allow_other_model: bool = False, out_dir: str | Path | None = None,
             progress: bool = True, negative_prompt: str | None = None, overwrite: bool = False,
             resume: bool = False, keep_images: bool = True, window: tuple[float, float] | None = None,
             image: Any = None, strength: float | None = None, mask_image: Any = None,
             pipe_kwargs: dict[str, Any] | None = None, respect_prompt: bool = True,
             gate: str | GateConfig | None = None, guard: GuardConfig | None = None) -> GenerationOutput:
    """Generate `num_images_per_prompt` images per prompt under `policy`, `batch_size` images per U-Net batch.

    With `out_dir`, images are written as PNGs with `manifest.jsonl` (one JSON object per image), each
    line appended as its image is written. A folder that already holds files is refused unless
    `overwrite` or `resume` (which makes only the missing images, with the same settings); see
    `hsteer.outputs`. `keep_images=False` returns no images (for runs too large to hold in memory).
    `steps` and `guidance` not given are the model's (`hsteer.model.card.sampling_for`: its card's, e.g. 20
    and 4.0 on the bundled model, else the pipeline's or SD's 50 and 7.5); each row's `defaults` says where
    each value came from.
    `window=(start, end)` steers only those fractions of the denoising steps (`SteeringConfig`).
    `image`, `strength` and `mask_image` go to img2img / inpaint pipelines (one image for every prompt,
    or a list with one per prompt); `pipe_kwargs` to the pipeline call as they are.
    `respect_prompt` (the default) gates each image's concepts by its prompt (`hsteer.gate`, the gate named
    by `gate`): a fair group the prompt names is not redrawn, the safety concept acts as far as the prompt
    carries harm; the manifest says why (`gate`). `respect_prompt=False`: the papers' blind steering.
    `guard` (`hsteer.generation.guard.GuardConfig`): the safety concepts act only on images whose predicted
    clean image the guard's detector flags at its decision step; with a fair policy, the fair concepts are
    drawn as always and safety is added to flagged images. Each manifest row's `guard` says the detector,
    its score, the decision and whether the image was redrawn.
    """
    prompts = prompt_list("prompts", prompts)
    steps, guidance, sampled_from = sampling_for(pipe, steps, guidance)
    policy = check_policy_object(policy or PlainPolicy())
    window = check_steering_args(pipe, bank, window=window, steer_unconditional=steer_unconditional,
                                 allow_other_model=allow_other_model)
    check_flags(overwrite=overwrite, resume=resume, keep_images=keep_images, progress=progress,
                respect_prompt=respect_prompt)
    strength = check_strength("strength", strength)
    check_generate_settings(prompts, num_images_per_prompt, seed, steps, guidance, batch_size, height, width,
                            negative_prompt=negative_prompt)
    height, width = _check_against_bank(pipe, bank, policy, steps, window, height, width, image, strength,
                                        allow_other_model)
    inputs = _prompt_inputs(prompts, image, mask_image)
    prompt_reader = prompt_gate(pipe, bank, policy, respect_prompt, gate)
    guarded = guard_for_run(guard, bank, policy, steps)
    if guarded is not None:
        check_x0_readable(pipe.scheduler)
    prepared = policy.prepare(pipe)  # the pipeline the policy's images are made with (SLD: its safe pipeline)
    folder = OutputFolder(out_dir, overwrite=overwrite, resume=resume) if out_dir is not None else None
    work = _job_stream(prompts, num_images_per_prompt, seed, policy, bank, prompt_reader, inputs,
                       guard.group if guarded is not None else None, folder is not None, sampled_from)
    settings = dict(steps=steps, guidance=guidance, height=height, width=width, window=window, strength=strength)
    return _generate_into(folder, prepared, work, bank, policy.name, settings, len(prompts) * num_images_per_prompt,
                          batch_size=batch_size, steer_unconditional=steer_unconditional, progress=progress,
                          negative_prompt=negative_prompt, keep_images=keep_images, pipe_kwargs=pipe_kwargs,
                          guard=guarded)


def _prompt_inputs(prompts: list[str], image: Any, mask_image: Any) -> dict[str, dict[str, Any]]:
    """Each prompt's img2img / inpaint inputs (`image`, `mask_image`): checked (one, or one per prompt) before
    any folder is touched or any image is made."""
    images, masks = _per_prompt(image, prompts, "image"), _per_prompt(mask_image, prompts, "mask_image")
    inputs = {p: ({"image": images[p]} if image is not None else {}) for p in prompts}
    if mask_image is not None:
        for p in prompts:
            inputs[p]["mask_image"] = masks[p]
    return inputs


def _job_stream(prompts: list[str], num_images: int, seed: int, policy: Policy, bank: ConceptBank | None,
                prompt_reader, inputs: dict[str, dict[str, Any]], guarded_group: str | None, numbered: bool,
                sampled_from: dict[str, Any]) -> Iterator[ImageJob]:
    """Each image's job, streamed (a run too large to hold is never listed): its seed, its concepts drawn
    under the prompt gate (without the guarded group, which the guard adds to flagged images only), its
    per-prompt inputs and, with an output folder, its file name."""

    def job(n: int, prompt: str, index: int, image_seed: int) -> ImageJob:
        concepts, notes = draw_for(policy, bank, prompt_reader, prompt, image_seed)
        if guarded_group is not None:
            concepts = without_group(concepts, bank, guarded_group)
            notes = [n for n in notes if not n.startswith(guarded_group)]
        return ImageJob(prompt, index, image_seed, concepts, f"{n:05d}.png" if numbered else None,
                        extra={**({"gate": notes} if notes else {}), "defaults": sampled_from},
                        inputs=dict(inputs[prompt]))

    return (job(n, *spec) for n, spec in enumerate(image_jobs(prompts, num_images, seed)))


def _generate_into(folder: OutputFolder | None, pipe, work: Iterable[ImageJob], bank: ConceptBank | None,
                   policy_name: str, settings: dict[str, Any], planned: int, **options) -> GenerationOutput:
    """`generate_jobs` on the run's jobs, into `folder` where there is one: a resumed folder makes only the
    images it lacks (a done image made with other settings stops the run), and its lock goes at once when
    the run ends, on an error too."""
    if folder is not None and folder.done:
        work = folder.pending(work, lambda job: _record(job, policy_name, **settings).to_dict())
    total = planned - (len(folder.done) if folder else 0)
    try:
        return generate_jobs(pipe, work, bank, policy_name, total=total, sink=folder.add if folder else None,
                             **options, **settings)
    finally:
        if folder is not None:
            folder.close()


def guard_for_run(config: GuardConfig | None, bank: ConceptBank | None, policy: Policy, steps: int) -> Guard | None:
    """The run's guard: flagged images get the guarded group at the policy's scale for it (1 if the policy
    does not draw the group, e.g. fair generation with a guard)."""
    if config is None:
        return None
    if not isinstance(config, GuardConfig):
        raise HsteerError(f"guard must be a GuardConfig (e.g. GuardConfig() for the bank's learned detector), "
                          f"got {type(config).__name__}")
    if bank is None:
        raise HsteerError("the guard adds the bank's safety concepts to flagged images: pass a bank (CLI: --bank)")
    members = {c.name for c in bank.group(config.group)}
    drawn = policy.assign(bank, 0) if policy.needs_bank else []
    scales = [s for n, s in drawn if n in members]
    return build_guard(config, bank, steps, scales[0] if scales else 1.0)


def _check_against_bank(pipe, bank: ConceptBank | None, policy: Policy, steps: int,
                        window: tuple[float, float] | None, height: int | None, width: int | None, image: Any,
                        strength: float | None, allow_other_model: bool) -> tuple[int, int]:
    """The call's resolution, once the bank fits the model at its site there and its concepts, groups,
    ratios and windows are valid (a window that steers no step fails here, before any folder is touched)."""
    site = require_bank(bank, policy).site_of(pipe) if policy.needs_bank else None
    height, width, shape = _resolution_and_shape(pipe, height, width, image, site)
    if policy.needs_bank:
        bank.check_compatible(pipe, shape, allow_other_model=allow_other_model)
        check_bank_windows(bank, policy.drawable(bank), steps, window, strength if image is not None else None,
                           label="window")
    return height, width


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


def generate_jobs(pipe: Pipeline, jobs: Iterable[ImageJob], bank: ConceptBank | None, policy_name: str, *,
                  steps: int,
                  guidance: float, height: int | None = None, width: int | None = None, batch_size: int = 8,
                  steer_unconditional: bool = False, out_dir: str | Path | None = None, progress: bool = True,
                  negative_prompt: str | None = None, sink: Callable[[dict[str, Any], Any], None] | None = None,
                  total: int | None = None, keep_images: bool = True, window: tuple[float, float] | None = None,
                  strength: float | None = None, pipe_kwargs: dict[str, Any] | None = None,
                  guard: Guard | None = None) -> GenerationOutput:
    """Generate explicit jobs in batches (each with its own seed and concepts); PNGs go to `out_dir/job.file`.

    The lower-level entry point of `generate`, for harnesses that shard, skip finished images or choose
    file names themselves. Writes no manifest; `sink(row, image)` is called for each finished image.
    `jobs` may be a stream. An image with NaN or infinite values stops the run before it is written.
    Generators and steering live on the pipeline's execution device (the GPU under
    `enable_model_cpu_offload()`). With `guard` (`build_guard`), each batch is decided image by image
    (`hsteer.generation.guard`) and each row records the decision.
    """
    from tqdm.auto import tqdm

    check_pipeline(pipe)
    stream = iter(jobs)
    batch = list(itertools.islice(stream, batch_size))
    first_image = next((job.inputs["image"] for job in batch if "image" in job.inputs), None)
    site = _site(pipe, bank)
    height, width, shape = _resolution_and_shape(pipe, height, width, first_image, site)
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
    images, records, count = [], [], 0
    call = _call_kwargs(pipe, steps, guidance, height, width, strength, pipe_kwargs)
    run = _batch_runner(pipe, bank, site, shape, window, call, steer_unconditional, policy_name, negative_prompt)
    total = len(jobs) if total is None and isinstance(jobs, Sequence) else total
    bar = tqdm(total=total, disable=not progress, desc=f"generate ({policy_name})", unit="img")
    while batch:
        if guard is None:
            pixels = run(batch)
        else:
            pixels, batch = _guarded(guard, batch, run, lambda step, decide: X0Capture(pipe, step, decide, height,
                                                                                       width))
        check_images_finite(pixels, batch, guidance)
        for job, image in zip(batch, pipe.numpy_to_pil(pixels)):
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


def _call_kwargs(pipe, steps: int, guidance: float, height: int, width: int, strength: float | None,
                 pipe_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The pipeline-call arguments every batch shares: sampling, the size where the pipeline takes one, the
    model's own call defaults, then `pipe_kwargs` as given and the img2img `strength` over them."""
    sizes = {k: v for k, v in (("height", height), ("width", width)) if _accepts(pipe, k)}
    call = {"num_inference_steps": steps, "guidance_scale": guidance, **sizes, **call_defaults(pipe),
            **(pipe_kwargs or {})}
    if strength is not None:
        call["strength"] = strength
    return call


def _batch_runner(pipe, bank: ConceptBank | None, site: SteeringSite | None, shape: tuple[int, ...] | None,
                  window: tuple[float, float] | None, call: dict[str, Any], steer_unconditional: bool,
                  policy_name: str, negative_prompt: str | None):
    """The function that makes one batch's pixels: one pipeline call steered by one layer holding the jobs'
    own concepts, with one generator per image on the pipeline's execution device (the CPU on MPS, whose
    generators differ)."""
    device = torch.device(getattr(pipe, "_execution_device", None) or denoiser_of(pipe).device)
    gen_device = "cpu" if device.type == "mps" else device

    def run(jobs: list[ImageJob], capture: X0Capture | None = None, bank_view: ConceptBank | None = None):
        layer = Layer(_batch_provider(bank_view or bank, jobs, shape, window),
                      steer_unconditional=steer_unconditional, label=policy_name)
        # a plain batch on an unsteered pipeline is called as it is (it may be a wrapper, e.g. the SLD baseline)
        steered = any(job.concepts for job in jobs) or steering_of(pipe) is not None
        with only_layer(pipe, layer, site or MID_BLOCK) if steered else contextlib.nullcontext(), \
                capture if capture is not None else contextlib.nullcontext():
            return pipe([job.prompt for job in jobs], output_type="np",
                        **_batch_kwargs(call, jobs, gen_device, negative_prompt)).images

    return run


def _guarded(guard: Guard, batch: list[ImageJob], run, capture_factory) -> tuple[Any, list[ImageJob]]:
    """One guarded batch: its images, and its jobs with the concepts each image got and its decision."""
    pixels, concepts, decisions = guard.run(batch, lambda jobs, capture=None, bank=None: run(jobs, capture, bank),
                                            capture_factory)
    jobs = [dataclasses.replace(job, concepts=drawn, extra={**job.extra, "guard": decision.to_dict()})
            for job, drawn, decision in zip(batch, concepts, decisions)]
    return pixels, jobs


def _batch_kwargs(call: dict[str, Any], batch: Sequence[ImageJob], gen_device, negative_prompt: str | None) -> dict:
    """The pipeline call of one batch: one generator per image (its seed), and its per-image inputs."""
    kwargs = dict(call, generator=[torch.Generator(gen_device).manual_seed(job.seed) for job in batch])
    if negative_prompt:
        kwargs["negative_prompt"] = [negative_prompt] * len(batch)
    for key in ("image", "mask_image"):
        if any(key in job.inputs for job in batch):
            kwargs[key] = [job.inputs[key] for job in batch]
    return kwargs


def _batch_provider(bank: ConceptBank | None, batch: Sequence[ImageJob], shape: tuple[int, ...],
                    window: tuple[float, float] | None):
    """The layer provider of one batch: the jobs' own concepts, in the jobs' order (one image each)."""
    draws = [list(job.concepts) for job in batch]
    windows = window_deltas(bank, draws, shape, window) if any(draws) else []

    def provide(seeds: list[int], prompts: list[str | None]):
        if len(seeds) != len(batch):
            raise HsteerError(f"the pipeline made {len(seeds)} images for a batch of {len(batch)} jobs")
        return windows, [[{"name": n, "scale": s} for n, s in draw] for draw in draws]

    return provide
