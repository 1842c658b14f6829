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
from hsteer.generation.guard import Guard, GuardConfig, without_group
from hsteer.generation.plan import GenerationPlan, plan_generation
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
from hsteer.checks import check_pipeline
from hsteer.outputs import OutputFolder, check_generate_settings, check_images_finite
from hsteer.policies import Policy

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


def image_jobs(prompts: Sequence[str], num_images: int, seed: int) -> Iterator[tuple[str, int, int]]:
    """(prompt, index, seed) per image, streamed: the i-th image of any prompt has seed `seed + i`."""
    check_generate_settings(prompts, num_images, seed, 1, 0.0, 1, None, None)
    return _seeded(prompts, num_images, seed)


def _seeded(prompts: Sequence[str], num_images: int, seed: int) -> Iterator[tuple[str, int, int]]:
    """`image_jobs` on checked settings."""
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
    run_steps, run_guidance, _ = sampling_for(pipe, steps, guidance)  # the model's defaults, for the checks
    plan = plan_generation(prompts, sampling=(run_steps, run_guidance), num_images_per_prompt=num_images_per_prompt,
                           seed=seed, bank=bank, policy=policy, steps=steps, guidance=guidance, height=height,
                           width=width, batch_size=batch_size, steer_unconditional=steer_unconditional,
                           allow_other_model=allow_other_model, out_dir=out_dir, progress=progress,
                           negative_prompt=negative_prompt, overwrite=overwrite, resume=resume,
                           keep_images=keep_images, window=window, image=image, strength=strength,
                           mask_image=mask_image, pipe_kwargs=pipe_kwargs, respect_prompt=respect_prompt, gate=gate,
                           guard=guard)
    return generate_planned(pipe, plan)


def generate_planned(pipe: Pipeline, plan: GenerationPlan) -> GenerationOutput:
    """Run a checked plan (`hsteer.generation.plan.plan_generation`) on `pipe`, trusting it: only what needs
    the pipeline is resolved here, once (its default sampling, the site, the image size and the concept
    shape there, the bank's fit to the model), then the images are made as `generate` describes."""
    if not isinstance(plan, GenerationPlan):
        raise HsteerError(f"plan must be a GenerationPlan, made by hsteer.generation.plan_generation(...); got "
                          f"{type(plan).__name__}")
    check_pipeline(pipe)
    steps, guidance, sampled_from = sampling_for(pipe, plan.steps, plan.guidance)
    plan = plan.at_steps(steps)
    bank, policy = plan.bank, plan.policy
    prompt_reader = prompt_gate(pipe, bank, policy, plan.respect_prompt, plan.gate)
    if plan.guard is not None:
        check_x0_readable(pipe.scheduler)
    prepared = policy.prepare(pipe)  # the pipeline the policy's images are made with (SLD: its safe pipeline)
    site = _site(prepared, bank)
    height, width, shape = _resolution_and_shape(prepared, plan.height, plan.width, plan.image, site)
    if policy.needs_bank:
        bank.check_compatible(pipe, shape, allow_other_model=plan.allow_other_model)
    folder = (OutputFolder(plan.out_dir, overwrite=plan.overwrite, resume=plan.resume) if plan.out_dir is not None
              else None)
    work = _job_stream(plan, prompt_reader, folder is not None, sampled_from)
    settings = dict(steps=steps, guidance=guidance, height=height, width=width, window=plan.window,
                    strength=plan.strength)
    return _generate_into(folder, prepared, work, bank, policy.name, settings, plan.total,
                          _Where(site, shape), batch_size=plan.batch_size,
                          steer_unconditional=plan.steer_unconditional, progress=plan.progress,
                          negative_prompt=plan.negative_prompt, keep_images=plan.keep_images,
                          pipe_kwargs=dict(plan.pipe_kwargs) if plan.pipe_kwargs is not None else None,
                          guard=plan.guard)


def _job_stream(plan: GenerationPlan, prompt_reader, numbered: bool, sampled_from: dict[str, Any]) -> Iterator[ImageJob]:
    """Each image's job, streamed (a run too large to hold is never listed): its seed, its concepts drawn
    under the prompt gate (without the guarded group, which the guard adds to flagged images only), its
    per-prompt inputs and, with an output folder, its file name."""
    policy, bank = plan.policy, plan.bank
    guarded_group = plan.guard.group if plan.guard is not None else None

    def job(n: int, prompt: str, index: int, image_seed: int) -> ImageJob:
        concepts, notes = draw_for(policy, bank, prompt_reader, prompt, image_seed)
        if guarded_group is not None:
            concepts = without_group(concepts, bank, guarded_group)
            notes = [n for n in notes if not n.startswith(guarded_group)]
        return ImageJob(prompt, index, image_seed, concepts, f"{n:05d}.png" if numbered else None,
                        extra={**({"gate": notes} if notes else {}), "defaults": sampled_from},
                        inputs=dict(plan.inputs[prompt]))

    jobs = _seeded(plan.prompts, plan.num_images_per_prompt, plan.seed)
    return (job(n, *spec) for n, spec in enumerate(jobs))


@dataclasses.dataclass(frozen=True)
class _Where:
    """Where a run steers, resolved once on its pipeline: the site (None: nowhere) and one image's concept
    shape there at the run's size."""

    site: SteeringSite | None
    shape: tuple[int, ...] | None


def _generate_into(folder: OutputFolder | None, pipe, work: Iterable[ImageJob], bank: ConceptBank | None,
                   policy_name: str, settings: dict[str, Any], planned: int, where: _Where,
                   **options) -> GenerationOutput:
    """`generate_jobs` on the run's jobs, into `folder` where there is one: a resumed folder makes only the
    images it lacks (a done image made with other settings stops the run), and its lock goes at once when
    the run ends, on an error too."""
    if folder is not None and folder.done:
        work = folder.pending(work, lambda job: _record(job, policy_name, **settings).to_dict())
    total = planned - (len(folder.done) if folder else 0)
    try:
        return _run_jobs(pipe, iter(work), bank, policy_name, where, total=total,
                         sink=folder.add if folder else None, **options, **settings)
    finally:
        if folder is not None:
            folder.close()


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
    check_pipeline(pipe)
    stream = iter(jobs)
    first = list(itertools.islice(stream, batch_size))
    first_image = next((job.inputs["image"] for job in first if "image" in job.inputs), None)
    site = _site(pipe, bank)
    height, width, shape = _resolution_and_shape(pipe, height, width, first_image, site)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    total = len(jobs) if total is None and isinstance(jobs, Sequence) else total
    return _run_jobs(pipe, itertools.chain(first, stream), bank, policy_name, _Where(site, shape), steps=steps,
                     guidance=guidance, height=height, width=width, batch_size=batch_size,
                     steer_unconditional=steer_unconditional, out_dir=out_dir, progress=progress,
                     negative_prompt=negative_prompt, sink=sink, total=total, keep_images=keep_images,
                     window=window, strength=strength, pipe_kwargs=pipe_kwargs, guard=guard)


def _run_jobs(pipe, stream: Iterator[ImageJob], bank: ConceptBank | None, policy_name: str, where: _Where, *,
              steps: int, guidance: float, height: int, width: int, batch_size: int, steer_unconditional: bool,
              progress: bool, negative_prompt: str | None, total: int | None, keep_images: bool,
              window: tuple[float, float] | None, strength: float | None, pipe_kwargs: dict[str, Any] | None,
              guard: Guard | None, sink: Callable[[dict[str, Any], Any], None] | None = None,
              out_dir: str | Path | None = None) -> GenerationOutput:
    """The batch loop of `generate_jobs` and `generate`, on a site, size and shape already resolved."""
    from tqdm.auto import tqdm

    out_path = Path(out_dir) if out_dir is not None else None
    images, records, count = [], [], 0
    call = _call_kwargs(pipe, steps, guidance, height, width, strength, pipe_kwargs)
    run = _batch_runner(pipe, bank, where.site, where.shape, window, call, steer_unconditional, policy_name,
                        negative_prompt)
    bar = tqdm(total=total, disable=not progress, desc=f"generate ({policy_name})", unit="img")
    batch = list(itertools.islice(stream, batch_size))
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
