"""Hostile input, part 3: kill -9 at random points of train, generate and eval, and concurrent bank writers.

Each command runs in a subprocess (`python -m hsteer`) on the bundled model, in an empty working folder.
After the kill: what is on disk is consistent (the manifest lists exactly the images present, up to the
one image in flight; the bank is intact), nothing is written outside the command's places, and a rerun
finishes the work.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_helpers import cli, listing

SRC = str(Path(__file__).resolve().parent.parent / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HSTEER_LOCK_TIMEOUT": "300"}
RNG = random.Random(int(os.environ.get("HSTEER_KILL_SEED", time.time_ns() % 10_000)))


def start(cwd: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hsteer", *map(str, args)], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 240.0) -> bool:
    """SIGKILL `proc` a random moment after `ready()` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(RNG.uniform(0.0, 0.4))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def manifest_rows(folder: Path) -> list[dict]:
    path = folder / "manifest.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]  # every line is whole, strict JSON


def test_kill_generate_then_resume(tmp_path):
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    argv = ["generate", "--prompt", "a doctor", "--prompt", "a nurse", "--num-images", "3", "--steps", "3",
            "--batch-size", "1", "--out", out]
    wanted = RNG.randint(0, 4)
    proc = start(cwd, *argv)
    killed = kill_when(proc, lambda: len(list(out.glob("*.png"))) >= wanted)
    rows = manifest_rows(out)
    pngs = {p.name for p in out.glob("*.png")} if out.exists() else set()
    listed = {r["file"] for r in rows}
    assert listed <= pngs and len(pngs - listed) <= 1, (rows, pngs)
    assert [r["prompt"] for r in rows] == (["a doctor"] * 3 + ["a nurse"] * 3)[:len(rows)]
    assert listing(cwd) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "out"][:1 + out.exists()]
    if killed:
        done = cli(*argv, "--resume")
        assert done.exit_code == 0, done.output
    rows = manifest_rows(out)
    assert [r["file"] for r in rows] == [f"{n:05d}.png" for n in range(6)]
    assert sorted(p.name for p in out.iterdir()) == [*(f"{n:05d}.png" for n in range(6)), "manifest.jsonl"]
    assert [(r["prompt"], r["seed"]) for r in rows] == [(p, i) for p in ("a doctor", "a nurse") for i in range(3)]


def test_kill_train_then_resume(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    bank = tmp_path / "b.safetensors"
    argv = ["train", "--bank", bank, "--concept", "square", "--group", "shape", "--neutral", "a shape", "--target",
            "a square", "--iterations", "6", "--batch-size", "1", "--steps", "2", "--checkpoint-every", "1"]
    ckpt = tmp_path / "b.runs" / "square" / "checkpoint.safetensors"
    proc = start(cwd, *argv)
    killed = kill_when(proc, lambda: ckpt.exists() or RNG.random() < 0.01)
    assert listing(cwd) == []
    assert {p.name for p in tmp_path.iterdir()} <= {"cwd", "b.runs", "b.safetensors"}
    if killed:
        result = cli(*argv, *(["--resume"] if ckpt.exists() else []))
        assert result.exit_code == 0, result.output
    info = json.loads(cli("bank", "show", bank, "--json").stdout)
    assert [c["name"] for c in info["concepts"]] == ["square"]
    leftovers = [p for p in tmp_path.rglob(".*") if p.is_file()]
    assert leftovers == [], leftovers


def test_kill_eval_then_rerun(tmp_path):
    cwd, out = tmp_path / "cwd", tmp_path / "run"
    cwd.mkdir()
    argv = ["eval", "winobias", "--classifier", "world", "--professions", "doctor,nurse", "--max-templates", "1",
            "--images-per-prompt", "2", "--steps", "2", "--batch-size", "1", "--no-score", "--quiet", "--out", out]
    proc = start(cwd, *argv)
    kill_when(proc, lambda: len(list(out.rglob("*.png"))) >= RNG.randint(0, 3))
    assert listing(cwd) == [] and {p.name for p in tmp_path.iterdir()} <= {"cwd", "run"}
    result = cli(*argv)
    assert result.exit_code == 0, result.output
    assert "4 images in all" in result.output
    rows = manifest_rows(out)
    assert len(rows) == 4 and all((out / "images" / r["file"]).is_file() for r in rows)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(r["file"] for r in rows)


def test_concurrent_trainers_keep_both_concepts(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    bank = tmp_path / "b.safetensors"
    common = ["--bank", bank, "--group", "shape", "--neutral", "a shape", "--iterations", "2", "--batch-size", "1",
              "--steps", "2"]
    procs = [start(cwd, "train", "--concept", name, "--target", f"a {name}", *common) for name in ("square", "circle")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    info = json.loads(cli("bank", "show", bank, "--json").stdout)
    assert sorted(c["name"] for c in info["concepts"]) == ["circle", "square"]
    assert listing(cwd) == []


def test_lock_timeout_is_one_line(tmp_path):
    import fcntl

    from hsteer.errors import HsteerError
    from hsteer.fileio import exclusive_lock

    bank = tmp_path / "b.safetensors"
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    child = subprocess.run([sys.executable, "-c", "from hsteer.fileio import exclusive_lock\n"
                            f"with exclusive_lock({str(bank)!r}, 'bank b', timeout=0.3): pass"],
                           env=ENV, capture_output=True, text=True, timeout=120)
    os.close(fd)
    assert child.returncode != 0 and "is being written by another process" in child.stderr
    with exclusive_lock(bank, timeout=0.3):  # free again once the holder closes it
        pass
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(HsteerError, match="another process"):
            with exclusive_lock(bank, "bank b", timeout=0.2):
                pass
    finally:
        os.close(fd)
