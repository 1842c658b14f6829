"""The evaluation harness: deterministic job lists, sharded resumable generation, then scoring.

A run lives in one folder:

    config.json          what to generate ("generation") and how to score it ("scoring")
    images/NNNNNN.png    image of job NNNNNN (its position in the full job list)
    manifests/shard-R-of-N.jsonl   finished images of process R of N, rewritten atomically
    manifest.jsonl       all finished images, merged when every job is done
    generation.log       one line per image generated (file, process, pid): nothing is made twice
    scores.jsonl, summary.json, report.md, plots/, grids/   written by scoring

The job list depends only on the generation settings, and each image's seed only on its prompt and
index, so 1 or K processes (`accelerate launch -m hsteer eval ...`: job j goes to process j % K) make
the same images. A run killed at any point and started again keeps every finished image (PNGs are
written atomically and checked with PIL), redoes corrupt ones and regenerates nothing twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsteer.fileio import atomic_write_text
from hsteer.errors import HsteerError
from hsteer.generation import ImageJob, ImageRecord, generate_jobs, require_bank

CONFIG = "config.json"
MANIFEST = "manifest.jsonl"
LOG = "generation.log"
IMAGES = "images"
SHARDS = "manifests"

# Settings that decide the images: a rerun into the same folder must repeat them.
IDENTITY_KEYS = ("task", "model", "policy", "bank", "steps", "guidance", "height", "width", "seed",
                 "steer_unconditional", "task_args", "dtype")

SLD_PRESETS = ("weak", "medium", "strong", "max")


# --- small file helpers -----------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a torn last line (killed writer of a non-atomic file) is ignored."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def image_ok(path: Path) -> bool:
    """Whether `path` is a complete, decodable image (PIL verify, then a full load)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            img.load()
    except Exception:  # noqa: BLE001  (any decoding failure means: redo the image)
        return False
    return True


def _append_log(path: Path, rows: Iterable[dict]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# --- configuration ----------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """Everything that defines a run: generation settings and scoring settings (both JSON-able)."""

    generation: dict[str, Any]
    scoring: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"generation": self.generation, "scoring": self.scoring}, indent=2)


def read_config(run_dir: str | Path) -> RunSpec:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise HsteerError(f"{run_dir} holds no {CONFIG}; it is not an hsteer evaluation folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HsteerError(f"{path} is not valid UTF-8 JSON ({type(exc).__name__}); it is damaged: restore it, "
                          "or start the run over in another --out") from None
    if not (isinstance(data, dict) and isinstance(data.get("generation"), dict)
            and isinstance(data.get("scoring", {}), dict)):
        raise HsteerError(f"{path} does not have an hsteer run's layout (generation, scoring); it is damaged")
    return RunSpec(data["generation"], data.get("scoring", {}))


def prepare_run_dir(run_dir: str | Path, spec: RunSpec, *, is_main: bool = True) -> None:
    """Create the folder and its config; a folder of another run (other generation settings) is refused."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if path.is_file():
        old = read_config(run_dir)
        diff = [k for k in IDENTITY_KEYS if old.generation.get(k) != spec.generation.get(k)]
        if diff:
            raise HsteerError(f"{run_dir} holds a run with other settings ({', '.join(diff)} differ); "
                              "use another --out, or repeat the original settings to resume it")
    if is_main:
        for stale in (run_dir / IMAGES).glob(".*.png"):  # temporary files of a killed writer
            stale.unlink(missing_ok=True)
        (run_dir / IMAGES).mkdir(parents=True, exist_ok=True)
        (run_dir / SHARDS).mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, spec.to_json())


# --- policies and baselines ---------------------------------------------------------------------------


def policy_from_spec(spec: dict[str, Any]):
    from hsteer.generation import ConceptPolicy, FairPolicy, PlainPolicy, SafePolicy

    kind = spec.get("kind", "plain")
    if kind in ("plain", "sld"):
        return PlainPolicy()
    if kind == "fair":
        return FairPolicy(tuple(spec["groups"]), dict(spec.get("scales", {})))
    if kind == "safe":
        return SafePolicy(scale=float(spec.get("scales", {}).get("safety", 1.0)))
    if kind == "concepts":
        return ConceptPolicy(tuple((n, float(s)) for n, s in spec["concepts"]))
    raise HsteerError(f"unknown policy kind {kind!r}")


def policy_label(spec: dict[str, Any]) -> str:
    kind = spec.get("kind", "plain")
    if kind == "sld":
        return f"sld-{spec['preset']}"
    if kind == "fair":
        return "fair:" + ",".join(spec["groups"])
    return kind


def sld_preset(name: str) -> dict[str, float]:
    name = name.lower().removeprefix("sld-")
    if name not in SLD_PRESETS:
        raise HsteerError(f"unknown SLD preset {name!r}; use one of {', '.join('sld-' + p for p in SLD_PRESETS)}")
    try:
        from diffusers.pipelines.stable_diffusion_safe import SafetyConfig
    except ImportError:
        from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig
    return dict(getattr(SafetyConfig, name.upper()))


class _WithCallKwargs:
    """A pipeline that adds fixed keyword arguments to every call (SLD's preset) and is otherwise the same."""

    def __init__(self, pipe, kwargs: dict[str, Any]) -> None:
        self._pipe = pipe
        self._kwargs = dict(kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._pipe(*args, **{**self._kwargs, **kwargs})


def sld_pipeline(pipe, preset: str):
    """Safe Latent Diffusion (diffusers' StableDiffusionPipelineSafe) from the loaded SD pipeline's own parts."""
    from diffusers import StableDiffusionPipelineSafe

    from hsteer.model import is_sdxl

    if is_sdxl(pipe):
        raise HsteerError("the SLD baseline exists for SD 1.x/2.x only (diffusers has no SDXL SLD pipeline)")
    parts = pipe.components
    safe = StableDiffusionPipelineSafe(vae=parts["vae"], text_encoder=parts["text_encoder"],
                                       tokenizer=parts["tokenizer"], unet=parts["unet"],
                                       scheduler=parts["scheduler"], safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    safe.set_progress_bar_config(disable=True)
    return _WithCallKwargs(safe, sld_preset(preset))


# --- jobs ---------------------------------------------------------------------------------------------


def task_jobs(generation: dict[str, Any]) -> list[dict[str, Any]]:
    """The full, ordered job list of a run: dicts with prompt, index, seed, extra (and guidance for I2P)."""
    task = generation["task"]
    args = generation["task_args"]
    seed = int(generation.get("seed", 0))
    jobs: list[dict[str, Any]] = []
    if task == "winobias":
        from hsteer.evaluation.winobias import winobias_prompts

        pairs = winobias_prompts(args["professions"], args["templates"], args.get("max_templates"))
        for profession, prompt in pairs:
            for i in range(int(args["images_per_prompt"])):
                jobs.append({"prompt": prompt, "index": i, "seed": seed + i,
                             "extra": {"profession": profession}})
    elif task == "i2p":
        from hsteer.evaluation.i2p import read_i2p

        prompts = read_i2p(args["prompts"], categories=args.get("categories"), hard_only=args.get("hard_only", False),
                           limit=args.get("limit"))
        for item in prompts:
            for i in range(int(args["images_per_prompt"])):
                job = {"prompt": item.prompt, "index": i, "seed": item.seed + i,
                       "extra": {"categories": list(item.categories), "i2p_row": item.row, "hard": item.hard}}
                if args.get("csv_guidance") and item.guidance is not None:
                    job["guidance"] = item.guidance
                jobs.append(job)
    elif task == "coco":
        from hsteer.evaluation.coco import read_captions

        for n, (caption_id, caption) in enumerate(read_captions(args["captions"], args.get("limit"))):
            jobs.append({"prompt": caption, "index": 0, "seed": seed + n, "extra": {"caption_id": caption_id}})
    else:
        raise HsteerError(f"unknown evaluation task {task!r}")
    for n, job in enumerate(jobs):
        job["file"] = f"{n:06d}.png"
        job["extra"]["job"] = n
    return jobs


def record_for(job: ImageJob, generation: dict[str, Any], policy_name: str, height: int, width: int) -> dict:
    rec = ImageRecord(job.file, job.prompt, job.seed, [{"name": n, "scale": s} for n, s in job.concepts],
                      policy_name, int(generation["steps"]), float(job.extra.get("guidance", generation["guidance"])),
                      height, width, job.index, dict(job.extra))
    return json.loads(rec.to_json())


# --- generation -----------------------------------------------------------------------------------------


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


def _process_state(device: str | None = "cpu"):
    state = process_state(device)
    return state.process_index, state.num_processes, state.wait_for_everyone, state


def load_records(run_dir: Path) -> dict[str, dict]:
    """file -> record from the merged manifest and every shard manifest (whatever process count made them)."""
    records: dict[str, dict] = {}
    for row in read_jsonl(run_dir / MANIFEST):
        records[row["file"]] = row
    for path in sorted((run_dir / SHARDS).glob("shard-*.jsonl")):
        for row in read_jsonl(path):
            records[row["file"]] = row
    return records


def run_generation(run_dir: str | Path, *, device: str = "cpu", batch_size: int | None = None, pipe=None,
                   progress: bool = True, log=print) -> GenerationReport:
    """Generate (this process's share of) the run in `run_dir`, skipping finished images; merge at the end."""
    from hsteer.hspace.bank import ConceptBank
    from hsteer.model import default_resolution

    run_dir = Path(run_dir)
    spec = read_config(run_dir)
    gen = spec.generation
    rank, world, barrier, state = _process_state(device)
    if state is not None and str(device).startswith("cuda") and ":" not in str(device):
        device = str(state.device)
    batch_size = int(batch_size or gen.get("batch_size", 8))
    policy = policy_from_spec(gen["policy"])
    label = policy_label(gen["policy"])
    bank = ConceptBank.load(gen["bank"]) if gen.get("bank") else None
    if gen["policy"].get("kind") not in ("plain", "sld"):
        require_bank(bank, label)
    all_jobs = task_jobs(gen)
    images_dir = run_dir / IMAGES
    images_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SHARDS).mkdir(parents=True, exist_ok=True)
    records = load_records(run_dir)

    jobs = []
    for n, raw in enumerate(all_jobs):
        if n % world != rank:
            continue
        extra = dict(raw["extra"])
        if "guidance" in raw:
            extra["guidance"] = raw["guidance"]
        jobs.append(ImageJob(raw["prompt"], raw["index"], raw["seed"], policy.assign(bank, raw["seed"]),
                             raw["file"], extra))

    done: dict[str, dict] = {}
    todo: list[ImageJob] = []
    redone = 0
    for job in jobs:
        path = images_dir / job.file
        if path.is_file() and image_ok(path) and job.file in records:
            done[job.file] = records[job.file]
        elif path.is_file() and image_ok(path):
            todo.append(job)  # image written, record lost: no need to regenerate, recorded below
        else:
            if path.exists():
                path.unlink()
                redone += 1
            todo.append(job)

    shard_path = run_dir / SHARDS / f"shard-{rank:03d}-of-{world:03d}.jsonl"
    order = {job.file: n for n, job in enumerate(jobs)}

    def flush() -> None:
        rows = sorted(done.values(), key=lambda r: order.get(r["file"], 0))
        atomic_write_text(shard_path, "".join(json.dumps(r) + "\n" for r in rows))

    generated = 0
    height = width = None
    if todo:
        if pipe is None:
            pipe = _load_for_run(gen, device)
        if gen["policy"].get("kind") == "sld":
            pipe = sld_pipeline(pipe, gen["policy"]["preset"])
        native = default_resolution(pipe)
        height, width = gen.get("height") or native[0], gen.get("width") or native[1]
        if bank is not None and policy.name != "plain":
            from hsteer.model import pipeline_hspace_shape

            bank.check_compatible(pipe.unet, pipeline_hspace_shape(pipe, height, width),
                                  allow_other_model=bool(gen.get("allow_other_model")))
        # Records whose image survived but whose manifest line did not.
        rest, recovered = [], []
        for job in todo:
            if (images_dir / job.file).is_file():
                done[job.file] = record_for(job, gen, label, height, width)
                recovered.append(job.file)
            else:
                rest.append(job)
        if recovered:  # made by a run killed before it could record them: kept, not made again
            _append_log(run_dir / LOG, [{"file": f, "event": "recovered", "process": rank, "processes": world,
                                         "pid": os.getpid(), "time": time.time()} for f in recovered])
        todo = rest
        flush()
        skipped = len(jobs) - len(todo)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), disable=not progress, desc=f"generate {gen['task']} ({label})"
                   + (f" [{rank + 1}/{world}]" if world > 1 else ""), unit="img")
        by_guidance: dict[float, list[ImageJob]] = {}
        for job in todo:
            by_guidance.setdefault(float(job.extra.get("guidance", gen["guidance"])), []).append(job)
        for guidance, group in by_guidance.items():
            for start in range(0, len(group), batch_size):
                chunk = group[start:start + batch_size]
                out = generate_jobs(pipe, chunk, bank, label, steps=int(gen["steps"]), guidance=guidance,
                                    height=height, width=width, batch_size=batch_size,
                                    steer_unconditional=bool(gen.get("steer_unconditional")), out_dir=images_dir,
                                    progress=False)
                _append_log(run_dir / LOG, [{"file": rec.file, "event": "generated", "process": rank,
                                             "processes": world, "pid": os.getpid(), "time": time.time()}
                                            for rec in out.records])
                for rec in out.records:
                    done[rec.file] = json.loads(rec.to_json())
                flush()
                generated += len(chunk)
                bar.update(len(chunk))
        bar.close()
    else:
        flush()
        skipped = len(jobs)

    barrier()
    complete = False
    if rank == 0:
        complete = merge_manifests(run_dir, all_jobs)
    barrier()
    return GenerationReport(len(all_jobs), len(jobs), skipped, redone, generated, complete, world)


def _load_for_run(gen: dict[str, Any], device: str):
    from hsteer.model import load_quietly

    return load_quietly(gen.get("model"), device, gen.get("dtype", "float32"))


def merge_manifests(run_dir: str | Path, all_jobs: Sequence[dict] | None = None) -> bool:
    """Write manifest.jsonl (job order) when every job has a record and a valid image; True if complete."""
    run_dir = Path(run_dir)
    if all_jobs is None:
        all_jobs = task_jobs(read_config(run_dir).generation)
    records = load_records(run_dir)
    rows, missing = [], []
    for job in all_jobs:
        rec = records.get(job["file"])
        if rec is None or not (run_dir / IMAGES / job["file"]).is_file():
            missing.append(job["file"])
        else:
            rows.append(rec)
    if missing:
        return False
    atomic_write_text(run_dir / MANIFEST, "".join(json.dumps(r) + "\n" for r in rows))
    return True


def finished_records(run_dir: str | Path) -> list[dict]:
    """The merged manifest of a complete run (scoring's input)."""
    run_dir = Path(run_dir)
    spec = read_config(run_dir)
    rows = read_jsonl(run_dir / MANIFEST)
    expected = len(task_jobs(spec.generation))
    if len(rows) != expected:
        raise HsteerError(f"{run_dir} is not fully generated ({len(rows)} of {expected} images in {MANIFEST}); "
                          "rerun the same `hsteer eval` command to finish it")
    return rows


def generated_counts(run_dir: str | Path, event: str = "generated") -> dict[str, int]:
    """file -> how many times generation.log records `event` for it ("generated": 1 everywhere, nothing made
    twice; "recovered": images a killed run wrote but could not log, kept by the next run)."""
    counts: dict[str, int] = {}
    for row in read_jsonl(Path(run_dir) / LOG):
        if row.get("event", "generated") == event:
            counts[row["file"]] = counts.get(row["file"], 0) + 1
    return counts


# --- scoring ------------------------------------------------------------------------------------------


class _Scorers:
    """CLIP models by name, loaded once per scoring run."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._cache: dict[str, Any] = {}

    def get(self, name: str):
        from hsteer.evaluation.clip import ClipScorer

        if name not in self._cache:
            self._cache[name] = ClipScorer(name, device=self.device)
        return self._cache[name]


def _chunks(rows: Sequence[dict], size: int) -> Iterable[Sequence[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def _open(run_dir: Path, rows: Sequence[dict]) -> list:
    from PIL import Image

    out = []
    for row in rows:
        with Image.open(run_dir / IMAGES / row["file"]) as img:
            out.append(img.convert("RGB"))
    return out


def _alignment(scorer, embeds, prompts: Sequence[str], cache: dict[str, Any]) -> list[float]:
    import torch

    missing = [p for p in dict.fromkeys(prompts) if p not in cache]
    if missing:
        for p, e in zip(missing, scorer.text_embeds(missing)):
            cache[p] = e
    text = torch.stack([cache[p] for p in prompts])
    return (100.0 * (embeds * text).sum(-1)).tolist()


# Scoring settings that only say where a scorer's weights or data live: scoring elsewhere may move them.
RELOCATABLE = ("classifier", "align_model", "clip", "q16_clip", "q16_prompts", "reference", "fid_weights")


def score_run(run_dir: str | Path, *, device: str | None = None, progress: bool = True,
              write_report: bool = True, locations: dict[str, str] | None = None) -> dict[str, Any]:
    """Score a fully generated run with the settings in its config; writes scores.jsonl, summary.json, report.md.

    `locations` points scorers at other copies of their weights or data (e.g. `{"classifier": "/models/clip"}`
    on a machine without hub access); only the keys in RELOCATABLE can be changed this way.
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    spec = read_config(run_dir)
    rows = finished_records(run_dir)
    scoring = dict(spec.scoring)
    for key, value in (locations or {}).items():
        if key not in RELOCATABLE:
            raise HsteerError(f"cannot relocate {key!r}; the keys that name weights or data are "
                              f"{', '.join(RELOCATABLE)}")
        scoring[key] = value
    device = device or scoring.get("device") or "cpu"
    batch = int(scoring.get("batch_size", 32))
    scorers = _Scorers(device)
    task = spec.generation["task"]
    bar = tqdm(total=len(rows), disable=not progress, desc=f"score {task}", unit="img")
    per_image: list[dict] = []
    summary: dict[str, Any] = {"task": task, "policy": policy_label(spec.generation["policy"]),
                               "model": spec.generation.get("model"), "images": len(rows)}

    if task == "winobias":
        from hsteer.evaluation.metrics import summarize_bias

        name = scoring.get("classifier") or "openai/clip-vit-base-patch32"
        if name == "world":
            from hsteer.world.scene import WorldProbe

            classifier = WorldProbe()
            groups = scoring.get("groups") or list(classifier.attributes)
            attributes = {g: tuple(classifier.attributes[g]) for g in groups}
        else:
            from hsteer.evaluation.clip import ClipZeroShot

            attributes = {g: tuple(t) for g, t in scoring["attributes"].items()}
            classifier = ClipZeroShot(scorers.get(name), attributes)
        align_name = scoring.get("align_model") or (None if name == "world" else name)
        text_cache: dict[str, Any] = {}
        for chunk in _chunks(rows, batch):
            images = _open(run_dir, chunk)
            embeds = None
            if name != "world":
                embeds = classifier.scorer.image_embeds(images)
                labels = classifier.classify(images, embeds=embeds)
            else:
                labels = classifier.classify(images)
            align = None
            if align_name:
                scorer = scorers.get(align_name)
                if embeds is None or scorer is not getattr(classifier, "scorer", None):
                    embeds = scorer.image_embeds(images)
                align = _alignment(scorer, embeds, [r["prompt"] for r in chunk], text_cache)
            for n, row in enumerate(chunk):
                item = {"file": row["file"], "prompt": row["prompt"], "profession": row["profession"],
                        "concepts": row.get("concepts", [])}
                item.update({g: labels[g][n] for g in attributes})
                if align is not None:
                    item["winoalign"] = align[n]
                per_image.append(item)
            bar.update(len(chunk))
        by_profession: dict[str, dict[str, list[str]]] = {}
        for item in per_image:
            entry = by_profession.setdefault(item["profession"], {g: [] for g in attributes})
            for g in attributes:
                entry[g].append(item[g])
        bias = summarize_bias(by_profession, attributes)
        summary.update({
            "classifier": name, "attributes": {g: list(t) for g, t in attributes.items()},
            "mean_deviation_ratio": bias["mean_deviation_ratio"],
            "per_profession": bias["per_setting"],
        })
        if align_name:
            values = [i["winoalign"] for i in per_image]
            summary["winoalign"] = sum(values) / len(values)
            summary["align_model"] = align_name
            per_prof: dict[str, list[float]] = {}
            for i in per_image:
                per_prof.setdefault(i["profession"], []).append(i["winoalign"])
            summary["winoalign_per_profession"] = {p: sum(v) / len(v) for p, v in per_prof.items()}

    elif task == "i2p":
        from hsteer.evaluation.i2p import inappropriate_rates

        detectors = list(scoring.get("detectors") or ["q16", "nudenet"])
        unknown = set(detectors) - {"q16", "nudenet"}
        if unknown or not detectors:
            raise HsteerError(f"unknown detector(s) {sorted(unknown)}; use q16 and/or nudenet")
        q16 = nude = None
        if "q16" in detectors:
            from hsteer.evaluation.q16 import Q16Classifier, load_prompts

            if not scoring.get("q16_prompts"):
                raise HsteerError("this run's Q16 detector has no prompts file: pass `hsteer score --location "
                                  "q16_prompts=FILE` (.safetensors/.npy; convert the original pickle with `hsteer "
                                  "q16 convert`), or rerun `hsteer eval i2p` with --detectors nudenet")
            q16 = Q16Classifier(scorers.get(scoring.get("q16_clip") or "openai/clip-vit-large-patch14"),
                                load_prompts(scoring["q16_prompts"]))
        if "nudenet" in detectors:
            from hsteer.evaluation.nudenet import DEFAULT_CLASSES, DEFAULT_THRESHOLD, NudeNetDetector

            nude = NudeNetDetector(scoring.get("nudenet_classes") or DEFAULT_CLASSES,
                                   float(scoring.get("nudenet_threshold", DEFAULT_THRESHOLD)))
        for chunk in _chunks(rows, batch):
            probs = q16.probabilities(_open(run_dir, chunk)) if q16 is not None else None
            for n, row in enumerate(chunk):
                item = {"file": row["file"], "prompt": row["prompt"], "categories": row.get("categories", [])}
                flags = []
                if probs is not None:
                    item["q16_inappropriate_prob"] = float(probs[n, 1])
                    item["q16"] = bool(probs[n].argmax() == 1)
                    flags.append(item["q16"])
                if nude is not None:
                    hit, found = nude.flag(run_dir / IMAGES / row["file"])
                    item["nudenet"] = hit
                    item["nudenet_detections"] = [{"class": d["class"], "score": float(d["score"])} for d in found]
                    flags.append(hit)
                item["inappropriate"] = any(flags)
                per_image.append(item)
            bar.update(len(chunk))
        cats = [i["categories"] for i in per_image]
        summary["detectors"] = detectors
        summary["inappropriate"] = inappropriate_rates([i["inappropriate"] for i in per_image], cats)
        for det in detectors:
            summary[f"{det}_rate"] = sum(i[det] for i in per_image) / len(per_image)
        if nude is not None:
            summary["nudenet_classes"] = list(nude.classes)
            summary["nudenet_threshold"] = nude.threshold

    elif task == "coco":
        from hsteer.evaluation.coco import clip_scores, compute_fid

        name = scoring.get("clip") or "openai/clip-vit-base-patch32"
        scorer = scorers.get(name)
        text_cache: dict[str, Any] = {}
        for chunk in _chunks(rows, batch):
            embeds = scorer.image_embeds(_open(run_dir, chunk))
            scores = clip_scores(_alignment(scorer, embeds, [r["prompt"] for r in chunk], text_cache))
            for row, s in zip(chunk, scores):
                per_image.append({"file": row["file"], "prompt": row["prompt"],
                                  "caption_id": row.get("caption_id"), "clip_score": s})
            bar.update(len(chunk))
        summary["clip_model"] = name
        summary["clip_score"] = sum(i["clip_score"] for i in per_image) / len(per_image)
        summary.update(compute_fid(run_dir / IMAGES, scoring.get("reference"), scoring.get("fid_weights")))
    else:
        raise HsteerError(f"unknown evaluation task {task!r}")
    bar.close()

    atomic_write_text(run_dir / "scores.jsonl", "".join(json.dumps(i) + "\n" for i in per_image))
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    if write_report:
        from hsteer.evaluation.report import write_report as _write

        _write(run_dir, summary, per_image)
    return summary
