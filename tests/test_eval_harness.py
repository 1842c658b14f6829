"""The evaluation harness end to end on tiny local models: sharding, resuming, corrupt files, baselines, reports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_eval_scoring import DATA, build_clip

ENTRY = "hsteer"  # python -m hsteer / accelerate launch -m hsteer


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return build_clip(tmp_path_factory.mktemp("tiny-clip-h"))


@pytest.fixture(scope="module")
def fair_bank(sd_dir, tmp_path_factory) -> Path:
    from hsteer import ConceptBank
    from hsteer.steering.bank import Concept
    from hsteer.model import load_pipeline, pipeline_hspace_shape, unet_fingerprint

    pipe = load_pipeline(sd_dir)
    shape, fp = pipeline_hspace_shape(pipe), unet_fingerprint(pipe.unet)
    torch.manual_seed(0)
    bank = ConceptBank(concepts=[Concept(n, "gender", "codsma", {"c": 3 * torch.randn(shape)},
                                         {"neutral": "a person", "target": f"a {n}", "unet_fingerprint": fp})
                                 for n in ("woman", "man")])
    return bank.save(tmp_path_factory.mktemp("bank") / "bank.safetensors")


def cli():
    from hsteer.cli import main

    return main


def run_cli(*args, ok=True):
    result = CliRunner().invoke(cli(), [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def winobias_args(sd_dir, clip_dir, bank, out, images=6, steps=20):
    return ["eval", "winobias", "--model", sd_dir, "--classifier", clip_dir, "--attributes", "a woman", "a man",
            "--professions", "doctor,nurse", "--max-templates", "1", "--images-per-prompt", images,
            "--steps", steps, "--guidance", "3", "--batch-size", "1", "--bank", bank, "--fair", "gender",
            "--out", out, "--quiet"]


def pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def manifest(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "manifest.jsonl").read_text().splitlines()]


def assert_same_run(a: Path, b: Path) -> None:
    rows_a, rows_b = manifest(a), manifest(b)
    assert rows_a == rows_b
    for row in rows_a:
        # Same seed and concepts; a different batch composition (a resumed or sharded run batches the
        # remaining images differently) changes CPU matmul rounding by at most one uint8 level.
        diff = np.abs(pixels(a / "images" / row["file"]) - pixels(b / "images" / row["file"]))
        assert diff.max() <= 1, (row["file"], int(diff.max()))


@pytest.fixture(scope="module")
def reference(sd_dir, clip_dir, fair_bank, tmp_path_factory) -> Path:
    """An uninterrupted single-process run: 2 professions x 1 template x 6 images, fair gender policy."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_cli(*winobias_args(sd_dir, clip_dir, fair_bank, out), "--no-score")
    return out


def test_reference_run_layout(reference):
    from hsteer.evaluation.runs import generated_counts

    rows = manifest(reference)
    assert [r["file"] for r in rows] == [f"{n:06d}.png" for n in range(12)]
    assert [r["seed"] for r in rows] == list(range(6)) * 2
    assert [r["profession"] for r in rows] == ["doctor"] * 6 + ["nurse"] * 6
    assert [r["prompt"] for r in rows] == ["Image of doctor"] * 6 + ["Image of nurse"] * 6
    names = [r["concepts"][0]["name"] for r in rows]
    assert set(names) == {"woman", "man"} and names[:6] == names[6:]  # per image seed, not per position
    assert generated_counts(reference) == {r["file"]: 1 for r in rows}
    assert not (reference / "summary.json").exists()  # --no-score


def test_two_accelerate_processes_make_the_same_images(reference, sd_dir, clip_dir, fair_bank, tmp_path):
    from hsteer.evaluation.runs import read_jsonl

    out = tmp_path / "sharded"
    # `--cpu --num_processes 2` runs ONE process in accelerate (its simple launcher); the multi-process
    # launcher with CPU tensors gives two gloo processes, which PartialState(cpu=True) sees as two.
    accelerate = str(Path(sys.executable).with_name("accelerate"))  # the venv's, whatever PATH holds
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(29400 + os.getpid() % 500),
           "-m", ENTRY, *map(str, winobias_args(sd_dir, clip_dir, fair_bank, out)), "--no-score"]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = read_jsonl(out / "generation.log")
    assert {(row["process"], row["processes"]) for row in log} == {(0, 2), (1, 2)}
    assert sorted(row["file"] for row in log) == [f"{n:06d}.png" for n in range(12)]
    assert all(int(row["file"][:6]) % 2 == row["process"] for row in log)  # job j -> process j % 2
    assert sorted(p.name for p in (out / "manifests").iterdir()) == ["shard-000-of-002.jsonl",
                                                                     "shard-001-of-002.jsonl"]
    assert_same_run(reference, out)


def test_killed_run_resumes_without_losing_or_repeating_images(reference, sd_dir, clip_dir, fair_bank, tmp_path):
    from hsteer.evaluation.runs import generated_counts

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", ENTRY, *map(str, winobias_args(sd_dir, clip_dir, fair_bank, out)), "--no-score"]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = out / "generation.log"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and log.read_text().count("\n") >= 2:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    before = generated_counts(out)
    assert 2 <= len(before) < 12, "the run should have been killed part-way"
    assert not (out / "manifest.jsonl").exists()

    again = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    counts = generated_counts(out)
    # A kill after writing a batch's PNGs but before its shard manifest leaves images the next run keeps
    # and records ("recovered"), without making them again; they may or may not be logged as generated,
    # depending on whether the kill came before or after the log line.
    recovered = generated_counts(out, "recovered")
    assert all(v == 1 for v in recovered.values()) and len(recovered) <= 1  # batches of one image
    kept = set(before) | set(recovered)
    assert f"generated {12 - len(kept)}, kept {len(kept)}" in again.stdout
    assert set(counts) | set(recovered) == {f"{n:06d}.png" for n in range(12)}
    assert all(v == 1 for v in counts.values()), counts  # each image made exactly once
    assert not list((out / "images").glob(".*"))  # no temporary files left behind
    assert_same_run(reference, out)


def test_corrupt_missing_and_unrecorded_images_are_handled(reference, tmp_path):
    from hsteer.evaluation.runs import MANIFEST, generated_counts, read_jsonl
    from hsteer.evaluation.sharding import run_generation

    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    images = out / "images"
    data = (images / "000003.png").read_bytes()
    (images / "000003.png").write_bytes(data[: len(data) // 2])  # truncated
    (images / "000007.png").unlink()  # lost
    (images / ".000005.png.abc.png").write_bytes(b"partial")  # a killed writer's temporary file
    (out / MANIFEST).unlink()
    shard = out / "manifests" / "shard-000-of-001.jsonl"
    rows = read_jsonl(shard)
    shard.write_text("".join(json.dumps(r) + "\n" for r in rows if r["file"] != "000009.png"))  # unrecorded
    log_before = len(read_jsonl(out / "generation.log"))

    from hsteer.evaluation.runs import prepare_run_dir, read_config

    prepare_run_dir(out, read_config(out))
    report = run_generation(out, progress=False)
    assert (report.total, report.redone, report.generated, report.skipped) == (12, 1, 2, 10)
    assert report.complete
    new = read_jsonl(out / "generation.log")[log_before:]
    assert sorted(r["file"] for r in new if r["event"] == "generated") == ["000003.png", "000007.png"]
    assert [r["file"] for r in new if r["event"] == "recovered"] == ["000009.png"]  # kept, not regenerated
    assert generated_counts(out)["000009.png"] == 1
    assert not (images / ".000005.png.abc.png").exists()
    assert_same_run(reference, out)


def test_other_settings_are_refused_and_unfinished_runs_not_scored(reference, sd_dir, clip_dir, fair_bank, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    args = winobias_args(sd_dir, clip_dir, fair_bank, out, steps=5)
    result = run_cli(*args, ok=False)
    assert result.exit_code != 0 and "other settings (steps differ)" in result.output
    (out / "manifest.jsonl").unlink()
    (out / "images" / "000000.png").unlink()
    result = run_cli("score", out, ok=False)
    assert result.exit_code != 0 and "not fully generated" in result.output


def test_score_and_report(reference, tmp_path):
    from hsteer.evaluation.metrics import deviation_ratio

    out = tmp_path / "scored"
    shutil.copytree(reference, out)
    result = run_cli("score", out, "--quiet")
    assert "gender DevRat" in result.output and "WinoAlign" in result.output
    summary = json.loads((out / "summary.json").read_text())
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 12 and {s["gender"] for s in scores} <= {"a woman", "a man"}
    for prof in ("doctor", "nurse"):
        labels = [s["gender"] for s in scores if s["profession"] == prof]
        assert summary["per_profession"][prof]["gender"]["deviation_ratio"] == \
            pytest.approx(deviation_ratio(labels, ["a woman", "a man"]))
    mean = np.mean([summary["per_profession"][p]["gender"]["deviation_ratio"] for p in ("doctor", "nurse")])
    assert summary["mean_deviation_ratio"]["gender"] == pytest.approx(mean)
    assert summary["winoalign"] == pytest.approx(np.mean([s["winoalign"] for s in scores]))
    report = (out / "report.md").read_text()
    assert "| SD (published) | 0.68 |" in report and "RespoDiff (published)" in report
    assert (out / "plots" / "distribution-gender.png").is_file()
    assert (out / "grids" / "doctor.png").is_file() and (out / "grids" / "nurse.png").is_file()
    again = json.loads((out / "summary.json").read_text())
    run_cli("score", out, "--quiet")
    assert json.loads((out / "summary.json").read_text()) == again  # scoring is deterministic


def test_score_elsewhere_with_the_classifier_in_another_place(reference, clip_dir, tmp_path):
    """Scoring on another machine: `--location` points the stored classifier at a local copy, same scores."""
    here, moved = tmp_path / "here", tmp_path / "moved"
    shutil.copytree(reference, here)
    shutil.copytree(reference, moved)
    clip_copy = tmp_path / "models" / "clip"
    shutil.copytree(clip_dir, clip_copy)
    run_cli("score", here, "--quiet")
    run_cli("score", moved, "--location", f"classifier={clip_copy}", "--location", f"align_model={clip_copy}",
            "--quiet")
    summary_here = json.loads((here / "summary.json").read_text())
    summary_moved = json.loads((moved / "summary.json").read_text())
    assert summary_moved["classifier"] == str(clip_copy)
    assert summary_moved["mean_deviation_ratio"] == summary_here["mean_deviation_ratio"]
    assert summary_moved["winoalign"] == pytest.approx(summary_here["winoalign"])
    bad = run_cli("score", moved, "--location", "steps=3", "--quiet", ok=False)
    assert bad.exit_code != 0 and "cannot relocate 'steps'" in bad.output and "classifier" in bad.output
    bad = run_cli("score", moved, "--location", "classifier", "--quiet", ok=False)
    assert bad.exit_code != 0 and "KEY=PATH" in bad.output


def test_generate_and_score_in_one_command_with_two_groups(sd_dir, clip_dir, tmp_path):
    out = tmp_path / "groups"
    result = run_cli("eval", "winobias", "--model", sd_dir, "--classifier", clip_dir,
                     "--attributes", "a woman", "a man", "--attributes", "a red circle", "a blue square", "a scene",
                     "--group", "gender", "--group", "thing", "--professions", "doctor", "--max-templates", "2",
                     "--images-per-prompt", "2", "--steps", "2", "--out", out, "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attributes"] == {"gender": ["a woman", "a man"],
                                     "thing": ["a red circle", "a blue square", "a scene"]}
    assert summary["images"] == 4 and set(summary["mean_deviation_ratio"]) == {"gender", "thing"}
    assert "thing DevRat" in result.output
    assert [r["prompt"] for r in manifest(out)] == ["Image of doctor"] * 2 + ["Picture of doctor"] * 2
    rerun = run_cli("eval", "winobias", "--model", sd_dir, "--classifier", clip_dir,
                    "--attributes", "a woman", "a man", "--attributes", "a red circle", "a blue square", "a scene",
                    "--group", "gender", "--group", "thing", "--professions", "doctor", "--max-templates", "2",
                    "--images-per-prompt", "2", "--steps", "2", "--out", out, "--quiet")
    assert "generated 0, kept 4" in rerun.output


def test_sld_baseline_changes_images_and_is_exclusive(sd_dir, clip_dir, tmp_path):
    common = ["--model", sd_dir, "--classifier", clip_dir, "--professions", "doctor", "--max-templates", "1",
              "--images-per-prompt", "2", "--steps", "3", "--no-score", "--quiet"]
    run_cli("eval", "winobias", *common, "--out", tmp_path / "plain")
    run_cli("eval", "winobias", *common, "--baseline", "sld-max", "--out", tmp_path / "sld")
    rows = manifest(tmp_path / "sld")
    assert {r["policy"] for r in rows} == {"sld-max"}
    for row in rows:
        a, b = pixels(tmp_path / "plain" / "images" / row["file"]), pixels(tmp_path / "sld" / "images" / row["file"])
        assert np.abs(a - b).max() > 2
    bad = run_cli("eval", "winobias", *common, "--baseline", "sld-weak", "--fair", "gender", "--bank",
                  tmp_path / "b.safetensors", "--out", tmp_path / "x", ok=False)
    assert bad.exit_code != 0 and "do not combine" in bad.output


def test_i2p_end_to_end(sd_dir, clip_dir, tmp_path):
    from safetensors.numpy import save_file

    from hsteer.evaluation.nudenet import nudenet_available

    q16 = tmp_path / "q16.safetensors"
    save_file({"prompts": np.random.RandomState(0).randn(2, 12).astype(np.float16)}, str(q16))
    out = tmp_path / "i2p"
    missing = run_cli("eval", "i2p", "--model", sd_dir, "--prompts", DATA / "i2p_sample.csv", "--out", out,
                      "--detectors", "q16", ok=False)
    assert missing.exit_code != 0 and "--q16-prompts" in missing.output and not out.exists()
    detectors = "q16,nudenet" if nudenet_available() else "q16"
    result = run_cli("eval", "i2p", "--model", sd_dir, "--prompts", DATA / "i2p_sample.csv", "--limit", "3",
                     "--images-per-prompt", "2", "--steps", "2", "--csv-guidance", "--detectors", detectors,
                     "--q16-prompts", q16, "--q16-clip", clip_dir, "--out", out, "--quiet")
    assert "inappropriate" in result.output
    rows = manifest(out)
    assert [r["seed"] for r in rows] == [1234, 1235, 42, 43, 7, 8]
    assert [r["guidance"] for r in rows] == [7.0, 7.0, 9.0, 9.0, 7.5, 7.5]
    assert rows[2]["categories"] == ["shocking", "violence"]
    summary = json.loads((out / "summary.json").read_text())
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    flags = [s["inappropriate"] for s in scores]
    assert flags == [s["q16"] or s.get("nudenet", False) for s in scores]
    assert summary["inappropriate"]["overall"] == pytest.approx(np.mean(flags))
    violence = [s["inappropriate"] for s in scores if "violence" in s["categories"]]
    assert summary["inappropriate"]["per_category"]["violence"] == {"rate": pytest.approx(np.mean(violence)),
                                                                    "n": 4}
    assert "I2P inappropriate" in (out / "report.md").read_text()


def test_coco_end_to_end_without_fid(sd_dir, clip_dir, tmp_path):
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"caption": "a red circle", "id": 5}\n{"caption": "a photo of a blue square"}\n')
    out = tmp_path / "coco"
    result = run_cli("eval", "coco", "--model", sd_dir, "--captions", captions, "--clip", clip_dir, "--steps", "2",
                     "--seed", "10", "--reference", tmp_path, "--out", out, "--quiet")
    assert "CLIP score" in result.output and "FID skipped" in result.output
    assert [r["seed"] for r in manifest(out)] == [10, 11]
    summary = json.loads((out / "summary.json").read_text())
    scores = [json.loads(line)["clip_score"] for line in (out / "scores.jsonl").read_text().splitlines()]
    assert summary["clip_score"] == pytest.approx(np.mean(scores)) and summary["fid"] is None
    report = (out / "report.md").read_text()
    assert "FID not computed" in report and "hsteer[fid]" in report and "| SD (published) | 14.09 | 31.33 |" in report


def test_world_classifier(sd_dir, tmp_path):
    out = tmp_path / "world"
    run_cli("eval", "winobias", "--model", sd_dir, "--classifier", "world", "--professions", "doctor",
            "--max-templates", "1", "--images-per-prompt", "2", "--steps", "2", "--out", out, "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["attributes"]) == {"shape", "colour"} and "winoalign" not in summary


def test_sdxl_pipeline_and_its_sld_refusal(sdxl_dir, clip_dir, tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n")
    out = tmp_path / "xl"
    run_cli("eval", "coco", "--model", sdxl_dir, "--captions", captions, "--clip", clip_dir, "--steps", "2",
            "--out", out, "--quiet")
    assert len(manifest(out)) == 1 and json.loads((out / "summary.json").read_text())["images"] == 1
    bad = run_cli("eval", "coco", "--model", sdxl_dir, "--captions", captions, "--clip", clip_dir, "--steps", "2",
                  "--baseline", "sld-medium", "--out", tmp_path / "xl-sld", "--quiet", ok=False)
    assert bad.exit_code != 0 and "SD 1.x/2.x only" in bad.output


# --- leakage: watched groups and the plain baseline run (docs/methods.md §8) ---------------------------


def _inside(value, ci):
    return ci[0] - 1e-9 <= value <= ci[1] + 1e-9


def test_watched_groups_against_a_plain_baseline_run(reference, sd_dir, clip_dir, fair_bank, tmp_path):
    watch = ["--watch", 'thing="a red circle","a blue square"']
    plain = tmp_path / "plain"
    plain_args = [a for a in winobias_args(sd_dir, clip_dir, fair_bank, plain) if a not in ("--fair", "gender")]
    plain_args = [a for n, a in enumerate(plain_args) if a != "--bank" and plain_args[n - 1] != "--bank"]
    run_cli(*plain_args, *watch)
    fair = tmp_path / "fair"
    shutil.copytree(reference, fair)  # generated, not scored: this run only scores
    result = run_cli(*winobias_args(sd_dir, clip_dir, fair_bank, fair), *watch, "--baseline-run", plain)
    assert "generated 0, kept 12" in result.output and "thing kept" in result.output
    s = json.loads((fair / "summary.json").read_text())
    assert s["attributes"] == {"gender": ["a woman", "a man"]} and s["watch"] == {"thing": ["a red circle",
                                                                                          "a blue square"]}
    assert s["targeted"] == ["gender"] and set(s["untargeted"]) == {"thing"}
    e = s["untargeted"]["thing"]
    assert e["n"] == 12 and 0 <= e["agreement"] <= 1
    for key in ("agreement", "deviation_ratio", "deviation_ratio_plain", "deviation_ratio_change"):
        assert _inside(e[key], e[key + "_ci"]), key
    plain_summary = json.loads((plain / "summary.json").read_text())
    assert e["deviation_ratio_plain"] == pytest.approx(plain_summary["mean_deviation_ratio"]["thing"])
    assert e["deviation_ratio"] == pytest.approx(s["mean_deviation_ratio"]["thing"])
    for group, value in s["mean_deviation_ratio"].items():
        assert _inside(value, s["deviation_ratio_ci"]["mean_all"][group])
    report = (fair / "report.md").read_text()
    assert "| untargeted group | same-seed agreement |" in report and "| thing | watched |" in report
    # The plain run against itself: every group untargeted, every image kept, no change.
    run_cli("score", plain, "--location", f"baseline_run={plain}", "--quiet")
    same = json.loads((plain / "summary.json").read_text())["untargeted"]
    assert set(same) == {"gender", "thing"}
    assert all(v["agreement"] == 1 and v["deviation_ratio_change_ci"] == [0, 0] for v in same.values())


def test_baseline_run_must_be_plain_with_the_same_settings(reference, sd_dir, clip_dir, fair_bank, tmp_path):
    bad = run_cli(*winobias_args(sd_dir, clip_dir, fair_bank, tmp_path / "a"), "--baseline-run", reference, ok=False)
    assert bad.exit_code != 0 and "is a fair:gender run; it must be plain" in bad.output
    other = tmp_path / "other"
    run_cli("eval", "winobias", "--model", sd_dir, "--classifier", clip_dir, "--professions", "doctor",
            "--max-templates", "1", "--images-per-prompt", "2", "--steps", "2", "--no-score", "--out", other, "--quiet")
    bad = run_cli(*winobias_args(sd_dir, clip_dir, fair_bank, tmp_path / "b"), "--baseline-run", other, ok=False)
    assert bad.exit_code != 0 and "steps, guidance differ" in bad.output and not (tmp_path / "b").exists()


def test_parse_watch():
    from hsteer.cli.eval import parse_watch

    assert parse_watch((), False) == {}
    assert parse_watch((("race",),), False)["race"][0] == "a black-race person"
    assert parse_watch((('race="a white person","a black person"',),), False) == {
        "race": ["a white person", "a black person"]}
    assert parse_watch((("colour",),), True) == {"colour": []}


def test_world_classifier_watches_colour_on_the_bundled_model(tmp_path):
    """Fair shape on the bundled model, read by the world's probes: colour is watched against plain."""
    from hsteer import ConceptBank
    from hsteer.steering.bank import Concept
    from hsteer.model import load_pipeline, pipeline_hspace_shape, unet_fingerprint

    pipe = load_pipeline(None)
    shape, fp = pipeline_hspace_shape(pipe), unet_fingerprint(pipe.unet)
    torch.manual_seed(0)
    bank = ConceptBank(concepts=[Concept(n, "shape", "codsma", {"c": 20 * torch.randn(shape)},
                                         {"neutral": "a photo of a figure", "target": f"a {n}", "unet_fingerprint": fp})
                                 for n in ("circle", "square")]).save(tmp_path / "bank.safetensors")
    common = ["eval", "winobias", "--classifier", "world", "--group", "shape", "--watch", "colour", "--professions",
              "doctor,nurse", "--max-templates", "1", "--images-per-prompt", "4", "--steps", "10", "--quiet"]
    run_cli(*common, "--out", tmp_path / "plain")
    result = run_cli(*common, "--bank", bank, "--fair", "shape", "--baseline-run", tmp_path / "plain",
                     "--out", tmp_path / "fair")
    assert "colour kept" in result.output
    s = json.loads((tmp_path / "fair" / "summary.json").read_text())
    assert s["targeted"] == ["shape"] and set(s["untargeted"]) == {"colour"} and set(s["watch"]) == {"colour"}
    e = s["untargeted"]["colour"]
    assert e["n"] == 8 and _inside(e["agreement"], e["agreement_ci"])
    assert _inside(e["deviation_ratio_change"], e["deviation_ratio_change_ci"])


def test_eval_takes_ratio_and_window_and_its_run_spec_keeps_them(sd_dir, clip_dir, fair_bank, tmp_path):
    """`hsteer eval` has generate's policy options: --ratio and --window reach the images and the run spec."""
    out = tmp_path / "ratio"
    args = winobias_args(sd_dir, clip_dir, fair_bank, out, images=4, steps=4)
    run_cli(*args, "--ratio", "woman=1,man=0", "--window", "0.0,0.5", "--no-score")
    generation = json.loads((out / "config.json").read_text())["generation"]
    assert generation["policy"] == {"kind": "fair", "groups": ["gender"], "scales": {}, "ratios": {"woman": 1.0,
                                                                                                 "man": 0.0}}
    assert generation["window"] == [0.0, 0.5]
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert rows and {c["name"] for r in rows for c in r["concepts"]} == {"woman"}
    assert all(r["window"] == [0.0, 0.5] for r in rows)
    bad = run_cli(*args[:-2], tmp_path / "bad", "--ratio", "woman=1", "--no-score", ok=False)
    assert bad.exit_code == 2 and "--ratio gives some concepts of group 'gender' but not man" in bad.output


def test_explicit_templates_report_the_named_label_and_the_gate(tmp_path):
    """`--templates explicit` on the bundled model: prompts that name a shape. With the prompt-aware gate (the
    default) the named shape is kept image for image; blind steering redraws it; the report says which."""
    from hsteer import ConceptBank
    from hsteer.steering.bank import Concept
    from hsteer.model import load_pipeline, pipeline_hspace_shape, unet_fingerprint

    pipe = load_pipeline(None)
    shape, fp = pipeline_hspace_shape(pipe), unet_fingerprint(pipe.unet)
    torch.manual_seed(0)
    bank = ConceptBank(concepts=[Concept(n, "shape", "codsma", {"c": 20 * torch.randn(shape)},
                                         {"neutral": "a photo of a figure", "target": f"a photo of a {n}",
                                          "unet_fingerprint": fp})
                                 for n in ("circle", "square")]).save(tmp_path / "bank.safetensors")
    common = ["eval", "winobias", "--classifier", "world", "--group", "shape", "--templates", "explicit",
              "--professions", "doctor", "--images-per-prompt", "4", "--steps", "10", "--quiet"]
    run_cli(*common, "--out", tmp_path / "plain")
    plain_rows = [json.loads(line) for line in (tmp_path / "plain" / "manifest.jsonl").read_text().splitlines()]
    assert sorted({r["prompt"] for r in plain_rows}) == ["a photo of a circle doctor", "a photo of a square doctor"]
    summaries = {}
    for name, flags in (("gated", []), ("blind", ["--no-respect-prompt"])):
        result = run_cli(*common, *flags, "--bank", bank, "--fair", "shape", "--baseline-run", tmp_path / "plain",
                         "--out", tmp_path / name)
        assert "named shape shown" in result.output
        summaries[name] = json.loads((tmp_path / name / "summary.json").read_text())
    gated, blind = summaries["gated"]["named"]["shape"], summaries["blind"]["named"]["shape"]
    assert gated["images"] == blind["images"] == 8
    assert gated["agreement"] == 1.0 and gated["shown"] == gated["shown_plain"]
    assert blind["agreement"] < 1.0 and _inside(blind["agreement"], blind["agreement_ci"])
    effect = summaries["gated"]["gate_effect"]
    assert effect["images_changed"] == 8 and effect["reasons"] == {"shape kept": 8}
    assert summaries["blind"]["gate_effect"]["respect_prompt"] is False
    report = (tmp_path / "gated" / "report.md").read_text()
    assert "## Prompts that name an attribute" in report and "changed 8 of 8 images (shape kept 8)" in report
    assert "prompt-aware gate: off" in (tmp_path / "blind" / "report.md").read_text()
    refused = run_cli("eval", "winobias", "--attributes", "a cat", "a dog", "--templates", "explicit",
                      "--out", tmp_path / "bad", ok=False)
    assert refused.exit_code == 2 and "needs a word that names 'a cat'" in refused.output
