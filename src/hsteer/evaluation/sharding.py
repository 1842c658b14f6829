"""Sharded, resumable generation of a run folder.

The job list depends only on the generation settings, and each image's seed only on its prompt and
index, so 1 or K processes (`accelerate launch -m hsteer eval ...`: job j goes to process j % K) make
the same images. A run killed at any point and started again keeps every finished image (PNGs are
written atomically and checked with PIL), redoes corrupt ones and regenerates nothing twice.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsteer.evaluation.baselines import policy_from_spec
from hsteer.evaluation.manifests import merge_manifests
from hsteer.checks import check_text
from hsteer.evaluation.runs import (IMAGES, LOG, SHARDS, GenerationSettings, append_log, check_run_layout, image_ok,
                                    load_records, read_config, write_jsonl)
from hsteer.errors import field_errors
from hsteer.fileio import FolderLock
from hsteer.steering.bankcheck import check_bank_windows
from hsteer.outputs import check_own_file
from hsteer.evaluation.tasks import task_jobs
from hsteer.generation import ImageJob, ImageRecord, generate_jobs
from hsteer.generation.draws import draw_for, prompt_gate
from hsteer.generation.plan import guard_for_run
from hsteer.generation.guard import without_group
from hsteer.evaluation.guard_detectors import guard_from_spec
from hsteer.policies import require_bank

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


#: A killed writer's temporary file of image NNNNNN.png (`fileio.atomic_path`): .NNNNNN.png.RANDOM.png
_TEMP_IMAGE = re.compile(r"\.(\d+\.png)\..+\.png")


@dataclass
class GenerationReport:
    total: int  # jobs in the whole run
    mine: int  # jobs of this process
    skipped: int  # already finished
    redone: int  # corrupt files found and regenerated
    generated: int  # made by this call
    complete: bool  # every job of the run is finished (known on the main process after the merge)
    processes: int = 1  # processes sharing the run (the counts above are this process's)


def process_state(device: str | None = "cpu"):
    """accelerate's PartialState (process index and count; one process when not launched by accelerate).

    On CPU it is created with cpu=True so that K CPU processes (gloo) are seen as K, not as K copies of one.
    """
    import torch
    from accelerate import PartialState

    cpu = str(device or "cpu").startswith("cpu") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def record_for(job: ImageJob, generation: GenerationSettings, policy_name: str, height: int, width: int) -> dict:
    """The manifest row of one sharded job, as `generate` writes it (the job's own guidance where it has
    one)."""
    rec = ImageRecord(job.file, job.prompt, job.seed, [{"name": n, "scale": s} for n, s in job.concepts],
                      policy_name, int(generation.steps), float(job.extra.get("guidance", generation.guidance)),
                      height, width, job.index, dict(job.extra))
    if generation.window:
        rec.extra["window"] = [float(v) for v in generation.window]
    return json.loads(rec.to_json())


@dataclass
class Shard:
    """One process's share of a run: its jobs, the finished records, and what is left to make."""

    run_dir: Path
    rank: int
    world: int
    jobs: list[ImageJob]
    done: dict[str, dict] = field(default_factory=dict)
    todo: list[ImageJob] = field(default_factory=list)
    redone: int = 0  # corrupt or partial images removed, or images whose record disagrees with their job
    suspect: set[str] = field(default_factory=set)  # decodable images whose record disagrees: made again
    lock: Any = None  # this shard's `FolderLock`: one process per shard of a run folder

    @property
    def path(self) -> Path:
        """This shard's manifest file in the run folder (one per rank, so processes never write the same
        file)."""
        return self.run_dir / SHARDS / f"shard-{self.rank:03d}-of-{self.world:03d}.jsonl"

    def flush(self) -> None:
        """Rewrite this process's shard manifest (job order) with every finished record."""
        order = {job.file: n for n, job in enumerate(self.jobs)}
        write_jsonl(self.path, sorted(self.done.values(), key=lambda r: order.get(r["file"], 0)))

    def log(self, files: list[str], event: str) -> None:
        """Append one event per file to the run's shared log, with this process's rank, pid and time."""
        append_log(self.run_dir / LOG, [{"file": f, "event": event, "process": self.rank, "processes": self.world,
                                         "pid": os.getpid(), "time": time.time()} for f in files])

    def sort_out(self, records: dict[str, dict]) -> None:
        """Split the jobs into done (image decodes, its record agrees with its job) and todo; delete images
        that do not decode. Every image name is checked first (a link or a folder there is one error that
        changes nothing); a record that disagrees with its job (prompt, index, seed, concepts) is never
        kept: its image is made again."""
        images = self.run_dir / IMAGES
        fix = "move it away, or use another run_dir; nothing was changed"
        with field_errors("run_dir"):
            present = {job.file: check_own_file(images / job.file, "an image hsteer wrote", fix) for job in self.jobs}
        for job in self.jobs:
            path = images / job.file
            valid = present[job.file] and image_ok(path)
            record = records.get(job.file)
            if valid and record is not None and record_matches(record, job):
                self.done[job.file] = record
                continue
            if valid and record is not None:
                self.suspect.add(job.file)  # replaced atomically when made again
                self.redone += 1
            elif not valid and present[job.file]:
                path.unlink()
                self.redone += 1
            self.todo.append(job)  # a valid image without a record is recorded, not made again (`recover`)

    def remove_temporaries(self) -> None:
        """Remove the temporary files a killed writer left for this shard's images (never another's)."""
        mine = {job.file for job in self.jobs}
        for path in (self.run_dir / IMAGES).glob(".*.png"):
            match = _TEMP_IMAGE.fullmatch(path.name)
            if match and match.group(1) in mine:
                path.unlink(missing_ok=True)

    def recover(self, generation: GenerationSettings, label: str, height: int, width: int) -> None:
        """Record the images a killed run wrote but could not record; keep only the missing ones to make."""
        recovered = [job for job in self.todo
                     if job.file not in self.suspect and (self.run_dir / IMAGES / job.file).is_file()]
        for job in recovered:
            self.done[job.file] = record_for(job, generation, label, height, width)
        if recovered:
            self.log([job.file for job in recovered], "recovered")
        self.todo = [job for job in self.todo if job.file not in self.done]


def record_matches(record: dict, job: ImageJob) -> bool:
    """Whether a manifest record describes its job's image: same prompt, index, seed and concepts."""
    concepts = [{"name": n, "scale": s} for n, s in job.concepts]
    if (record.get("guard") or {}).get("flagged") and isinstance(record.get("concepts"), list):
        record = {**record, "concepts": record["concepts"][:len(concepts)]}  # the guard appended the safety group
    return (record.get("prompt") == job.prompt and record.get("index") == job.index
            and record.get("seed") == job.seed and record.get("concepts", concepts) == concepts)


def check_run_plan(gen: GenerationSettings, all_jobs: list[dict], policy, bank) -> None:
    """What a run will do, checked before its folder is touched or a model loads: every prompt is UTF-8
    text, and every concept the policy can draw acts on at least one of the steps (its stored window,
    or the run's window)."""
    for job in all_jobs:
        check_text(f"the prompt of image {job['file']}", job["prompt"])
    if policy.needs_bank and bank is not None:
        window = tuple(gen.window) if gen.window else None
        check_bank_windows(bank, policy.drawable(bank), int(gen.steps), window)


def check_run_settings(generation: dict) -> None:
    """`check_run_plan` for the "generation" settings of a run not written yet (the CLI, before
    `prepare_run_dir`): the bank is loaded and the job list built as `run_generation` will."""
    from hsteer.steering.bank import ConceptBank

    gen = GenerationSettings.from_dict(generation)
    policy = policy_from_spec(gen.policy)
    bank = ConceptBank.load(gen.bank) if gen.bank and policy.needs_bank else None
    check_run_plan(gen, task_jobs(gen), policy, bank)


def _open_shard(run_dir: Path, guard: dict | None, rank: int, world: int, all_jobs: list[dict], policy,
                bank, reader=None) -> Shard:
    (run_dir / IMAGES).mkdir(parents=True, exist_ok=True)
    (run_dir / SHARDS).mkdir(parents=True, exist_ok=True)
    jobs = []
    for n, raw in enumerate(all_jobs):
        if n % world != rank:
            continue
        extra = dict(raw["extra"])
        if "guidance" in raw:
            extra["guidance"] = raw["guidance"]
        concepts, notes = draw_for(policy, bank, reader, raw["prompt"], raw["seed"])
        if guard is not None:  # the guarded group comes only with a flagged decision
            guarded = str(guard.get("group", "safety"))
            concepts = without_group(concepts, bank, guarded)
            notes = [note for note in notes if not note.startswith(guarded)]
        if notes:
            extra["gate"] = notes
        jobs.append(ImageJob(raw["prompt"], raw["index"], raw["seed"], concepts, raw["file"], extra))
    shard = Shard(run_dir, rank, world, jobs)
    shard.lock = FolderLock(run_dir, f"{run_dir} is being generated by another hsteer process (process {rank + 1} "
                                     f"of {world}); wait until it has finished, then rerun the same command",
                            name=f".lock-shard-{rank:03d}-of-{world:03d}")
    try:
        shard.remove_temporaries()
        shard.sort_out(load_records(run_dir))
    except BaseException:
        shard.lock.release()
        raise
    return shard


def run_generation(run_dir: str | Path, *, device: str = "cpu", batch_size: int | None = None,
                   pipe: Pipeline | None = None,
                   progress: bool = True, log=print) -> GenerationReport:
    """Generate (this process's share of) the run in `run_dir`, skipping finished images; merge at the end."""
    from hsteer.steering.bank import ConceptBank

    run_dir = Path(run_dir)
    gen = read_config(run_dir).generation
    state = process_state(device)
    if str(device).startswith("cuda") and ":" not in str(device):
        device = str(state.device)
    policy = policy_from_spec(gen.policy)
    label = policy.label
    bank = ConceptBank.load(gen.bank) if gen.bank else None
    if policy.needs_bank:
        require_bank(bank, label)
    all_jobs = task_jobs(gen)
    check_run_plan(gen, all_jobs, policy, bank)
    check_run_layout(run_dir)
    reader = None
    if policy.needs_bank and gen.respect_prompt:  # the gate reads prompts with the model's text encoder
        pipe = _pipeline_for_run(gen, pipe, device)
        reader = prompt_gate(pipe, bank, policy, True, gen.gate)
    shard = _open_shard(run_dir, gen.guard, state.process_index, state.num_processes, all_jobs, policy, bank, reader)
    try:
        generated = 0
        if shard.todo:
            pipe = pipe if reader is not None else _pipeline_for_run(gen, pipe, device)
            generated = _generate(shard, gen, pipe, policy, label, bank, int(batch_size or gen.batch_size), progress)
        else:
            shard.flush()
        state.wait_for_everyone()
        complete = merge_manifests(run_dir, all_jobs) if state.process_index == 0 else False
        state.wait_for_everyone()
    finally:
        shard.lock.release()  # at once, on an error too: not when the shard is collected
    return GenerationReport(len(all_jobs), len(shard.jobs), len(shard.jobs) - generated, shard.redone, generated,
                            complete, shard.world)


def _pipeline_for_run(gen: GenerationSettings, pipe, device: str):
    """The given pipeline or the run's model, as the run's policy prepares it (SLD: diffusers' safe pipeline)."""
    if pipe is None:
        from hsteer.model import load_quietly

        pipe = load_quietly(gen.model, device, gen.dtype)
    return policy_from_spec(gen.policy).prepare(pipe)


def _generate(shard: Shard, gen: GenerationSettings, pipe, policy, label: str, bank, batch_size: int,
              progress: bool) -> int:
    """Make the shard's missing images in batches (one guidance scale per batch); returns how many."""
    from tqdm.auto import tqdm

    from hsteer.model import resolve_resolution
    from hsteer.steering.siteshape import site_shape

    height, width = resolve_resolution(pipe, gen.height, gen.width)
    if bank is not None and policy.needs_bank:
        bank.check_compatible(pipe, site_shape(pipe, bank.site_of(pipe), height, width),
                              allow_other_model=bool(gen.allow_other_model))
    shard.recover(gen, label, height, width)
    shard.flush()
    where = f" [{shard.rank + 1}/{shard.world}]" if shard.world > 1 else ""
    bar = tqdm(total=len(shard.todo), disable=not progress, desc=f"generate {gen.task} ({label}){where}", unit="img")
    generated = 0
    guard = guard_for_run(guard_from_spec(gen.guard), bank, policy, int(gen.steps)) if gen.guard else None
    for guidance, chunk in _batches(shard.todo, gen.guidance, batch_size):
        out = generate_jobs(pipe, chunk, bank, label, steps=int(gen.steps), guidance=guidance, height=height,
                            width=width, batch_size=batch_size, steer_unconditional=bool(gen.steer_unconditional),
                            out_dir=shard.run_dir / IMAGES, progress=False,
                            window=tuple(gen.window) if gen.window else None, guard=guard)
        shard.log([rec.file for rec in out.records], "generated")
        shard.done.update({rec.file: json.loads(rec.to_json()) for rec in out.records})
        shard.flush()
        generated += len(chunk)
        bar.update(len(chunk))
    bar.close()
    return generated


def _batches(jobs: list[ImageJob], guidance: float, size: int) -> Iterator[tuple[float, list[ImageJob]]]:
    """(guidance, up to `size` jobs) in job order within each guidance scale (I2P may set one per prompt)."""
    by_guidance: dict[float, list[ImageJob]] = {}
    for job in jobs:
        by_guidance.setdefault(float(job.extra.get("guidance", guidance)), []).append(job)
    for scale, group in by_guidance.items():
        for start in range(0, len(group), size):
            yield scale, group[start:start + size]
