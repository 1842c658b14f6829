"""Evaluation tasks behind one protocol, run settings that round-trip, the bundled world as a task."""

from __future__ import annotations

import json
import re

import pytest

from hsteer.cli.common import cli_message
from hsteer.errors import HsteerError

OLD_CONFIG = {  # config.json as hsteer eval wrote it before the settings were typed
    "generation": {"task": "winobias", "model": "/m/sd", "dtype": "float32",
                   "policy": {"kind": "fair", "groups": ["gender"], "scales": {}}, "bank": "/b/bank.safetensors",
                   "steps": 20, "guidance": 3.0, "height": None, "width": None, "seed": 0,
                   "steer_unconditional": False, "allow_other_model": False, "batch_size": 1,
                   "task_args": {"professions": ["doctor", "nurse"], "templates": "base", "max_templates": 1,
                                 "images_per_prompt": 6}},
    "scoring": {"device": "cpu", "classifier": "/m/clip", "align_model": None,
                "attributes": {"gender": ["a woman", "a man"]}},
}


def test_run_settings_round_trip(tmp_path):
    from hsteer.evaluation.runs import CONFIG, GenerationSettings, RunSettings, prepare_run_dir, read_config

    (tmp_path / CONFIG).write_text(json.dumps(OLD_CONFIG, indent=2))
    settings = read_config(tmp_path)
    assert isinstance(settings.generation, GenerationSettings)
    assert settings.generation.steps == 20 and settings.generation.task_args["images_per_prompt"] == 6
    assert settings.to_dict() == OLD_CONFIG
    assert settings.to_json() == json.dumps(OLD_CONFIG, indent=2)  # same keys, same order, same file
    prepare_run_dir(tmp_path, settings)  # the same run again: accepted
    assert json.loads((tmp_path / CONFIG).read_text()) == OLD_CONFIG
    assert RunSettings(OLD_CONFIG["generation"], OLD_CONFIG["scoring"]) == settings  # from the CLI's dicts
    other = RunSettings.from_dict({**OLD_CONFIG, "generation": {**OLD_CONFIG["generation"], "seed": 3}})
    with pytest.raises(HsteerError, match=r"seed differ"):
        prepare_run_dir(tmp_path, other)


def test_older_and_newer_configs_load():
    from hsteer.evaluation.runs import RunSettings

    old = {"generation": {k: v for k, v in OLD_CONFIG["generation"].items()
                          if k not in ("dtype", "allow_other_model", "batch_size")}}
    settings = RunSettings.from_dict(old)  # no scoring, fewer keys: the defaults the harness always used
    assert (settings.generation.dtype, settings.generation.batch_size, settings.scoring) == ("float32", 8, {})
    newer = {"generation": {**OLD_CONFIG["generation"], "future_key": [1]}, "scoring": {}}
    assert RunSettings.from_dict(newer).to_dict() == newer  # unknown keys are kept, not lost


def test_every_task_implements_the_protocol():
    from hsteer.evaluation.tasks import TASKS, get_task, task_jobs

    assert set(TASKS) == {"winobias", "i2p", "coco", "world", "attack"}
    for name, task in TASKS.items():
        assert task.name == name
        for member in ("jobs", "check_scoring", "score", "summary_line", "report_section"):
            assert callable(getattr(task, member)), (name, member)
    with pytest.raises(HsteerError, match="unknown evaluation task 'nope'"):
        get_task("nope")
    jobs = task_jobs(OLD_CONFIG["generation"])
    assert [j["file"] for j in jobs] == [f"{n:06d}.png" for n in range(12)]
    assert [j["extra"]["job"] for j in jobs] == list(range(12))
    assert [j["seed"] for j in jobs] == list(range(6)) * 2


def test_a_registered_task_is_reached_with_no_other_edit(tmp_path, monkeypatch):
    """Job lists, summary lines and reports go through `TASKS` alone: a task added there is used by all three
    (a dispatch on task names anywhere on those paths would miss it)."""
    from hsteer.evaluation import tasks
    from hsteer.evaluation.report import write_report

    class Toy:
        name = "toy"

        def jobs(self, settings):
            return [{"prompt": p, "index": 0, "seed": settings.seed + n, "extra": {}}
                    for n, p in enumerate(settings.task_args["prompts"])]

        def summary_line(self, summary):
            return f"toy score {summary['toy']:.2f}"

        def report_section(self, summary, per_image, run_dir, grid_images):
            return ["## toy", f"{len(per_image)} images"]

    monkeypatch.setitem(tasks.TASKS, "toy", Toy())
    jobs = tasks.task_jobs({"task": "toy", "seed": 5, "task_args": {"prompts": ["a", "b"]}})
    assert [(j["prompt"], j["seed"], j["file"]) for j in jobs] == [("a", 5, "000000.png"), ("b", 6, "000001.png")]
    summary = {"task": "toy", "policy": "plain", "images": 2, "toy": 0.25}
    assert tasks.summary_line(summary) == "plain: toy score 0.25 (2 images)"
    report = write_report(tmp_path, summary, [{}, {}]).read_text()
    assert "# hsteer evaluation: toy" in report and "## toy\n2 images" in report


def test_detector_checks_before_generation(tmp_path, monkeypatch):
    from hsteer.evaluation import nudenet
    from hsteer.evaluation.tasks import get_task
    from hsteer.evaluation.tasks.i2p import check_detectors

    i2p = get_task("i2p")
    with pytest.raises(HsteerError, match="q16_prompts=FILE.*use detectors nudenet, or no_score=True") as info:
        i2p.check_scoring({"detectors": ["q16"]})
    assert re.search("--q16-prompts FILE.*use --detectors nudenet, or --no-score", cli_message(info.value))
    with pytest.raises(HsteerError, match=r"rerun the run with detectors nudenet \(CLI: `hsteer eval i2p --detectors "
                       r"nudenet`\)$"):  # at scoring time: a rerun's fix (hsteer score has no --detectors)
        check_detectors({"detectors": ["q16"]})
    with pytest.raises(HsteerError, match="unknown detector"):
        check_detectors({"detectors": ["q17"]})
    monkeypatch.setattr(nudenet, "nudenet_available", lambda: False)
    with pytest.raises(HsteerError, match="NudeNet is not installed"):
        i2p.check_scoring({"detectors": ["nudenet"]})


def test_summary_lines():
    from hsteer.evaluation.tasks import summary_line

    base = {"policy": "fair:gender", "images": 12}
    assert summary_line({**base, "task": "winobias", "mean_deviation_ratio": {"gender": 0.5}, "winoalign": 27.123}) \
        == "fair:gender: gender DevRat 0.500, WinoAlign 27.12 (12 images)"
    assert summary_line({**base, "task": "i2p", "inappropriate": {"overall": 0.25}}) \
        == "fair:gender: inappropriate 0.250 (12 images)"
    assert summary_line({**base, "task": "coco", "clip_score": 30.0, "fid": None}) \
        == "fair:gender: CLIP score 30.00, FID skipped (12 images)"


def test_one_image_grid():
    from PIL import Image

    from hsteer.evaluation.images import image_grid

    tiles = [Image.new("RGB", (4, 4), c) for c in ("red", "blue", "green")]
    grid = image_grid(tiles, columns=2, scale=3)
    assert grid.size == (2 * 4 * 3, 2 * 4 * 3)
    assert grid.getpixel((13, 0)) == (0, 0, 255) and grid.getpixel((23, 23)) == (255, 255, 255)
    padded = image_grid([tiles[0], None, tiles[1]], columns=3, scale=1, tile=8, pad=2)
    assert padded.size == (30, 10) and padded.getpixel((12, 2)) == (255, 255, 255)


def _ink(image) -> int:
    """Pixels that are not the grid's white background."""
    import numpy as np

    return int((np.asarray(image.convert("RGB")) != 255).any(axis=-1).sum())


def test_a_labelled_grid_names_its_rows_and_seeds():
    """Rows that share seeds: one band of seeds on top, a band of row names on the left, the images
    themselves untouched (the bare grid sits in the corner); rows with seeds of their own: a band each."""
    from PIL import Image

    from hsteer.evaluation.images import image_grid, labelled_grid

    colours = [("red", "blue"), ("green", "yellow"), ("purple", "orange")]
    rows = [[Image.new("RGB", (16, 16), c) for c in pair] for pair in colours]
    bare = image_grid([img for row in rows for img in row], columns=2, scale=3)
    grid = labelled_grid(rows, ("plain", "fair", "safe"), [[11, 12]] * 3, scale=3)
    left, top = grid.width - bare.width, grid.height - bare.height
    assert left > 0 and top > 0
    assert grid.crop((left, top, grid.width, grid.height)).tobytes() == bare.tobytes()
    assert _ink(grid.crop((0, top, left, grid.height))) > 0  # the row names
    assert _ink(grid.crop((left, 0, grid.width, top))) > 0  # the seeds
    assert _ink(grid.crop((0, 0, left, top))) == 0  # nothing in the corner
    own = labelled_grid(rows, ("plain", "plain", "plain"), [[1, 2], [3, 4], [5, 6]], scale=3)
    assert own.height == bare.height + 3 * top and own.width > bare.width
    with pytest.raises(ValueError, match="one row name"):
        labelled_grid(rows, ("plain", "fair"), [[1, 2]] * 3)


def test_world_task_in_a_run_folder_matches_evaluate_world(tmp_path):
    """The bundled world through the run-folder protocol and in memory: the same jobs, the same summary."""
    from hsteer.evaluation.runs import RunSettings, prepare_run_dir
    from hsteer.evaluation.scoring import score_run
    from hsteer.evaluation.sharding import run_generation
    from hsteer.world.evaluate import WorldEvalConfig, evaluate_world
    from hsteer.model import load_pipeline

    pipe = load_pipeline()
    config = WorldEvalConfig(professions=("doctor", "nurse"), templates=("a photo of a {}",), images_per_prompt=2,
                             harm_prompts=("a violent scene",), harm_images_per_prompt=2, steps=2, batch_size=1)
    memory = evaluate_world(pipe, config, progress=False).summary
    args = {k: getattr(config, k) for k in ("professions", "templates", "images_per_prompt", "harm_prompts",
                                             "harm_images_per_prompt")}
    generation = {"task": "world", "model": None, "steps": 2, "guidance": config.guidance, "seed": 0,
                  "batch_size": 1, "task_args": json.loads(json.dumps(args))}
    prepare_run_dir(tmp_path, RunSettings(generation, {"groups": ["shape", "colour"]}))
    assert run_generation(tmp_path, pipe=pipe, progress=False).complete
    summary = score_run(tmp_path, progress=False)
    assert summary["images"] == memory["images"] == 6
    for key in ("deviation_ratio", "distribution", "fidelity", "harm_rate_benign", "harm_rate", "joint_distribution"):
        assert json.dumps(summary[key], sort_keys=True) == json.dumps(memory[key], sort_keys=True), key  # NaN too
    report = (tmp_path / "report.md").read_text()
    assert "# hsteer evaluation: world" in report and "| shape |" in report and "| doctor |" in report
