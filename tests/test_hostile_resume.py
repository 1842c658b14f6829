"""Hostile input, round two (issue 25), part 2: output folders and resumes never lose or lie.

`hsteer.outputs.OutputFolder` (generate's folders) is driven directly with small PIL images, and through
`hsteer generate --resume` on the bundled model; the evaluation harness's run folders through
`hsteer.evaluation.sharding`. Every damaged folder is refused (one line) or repaired before any file is
touched, and nothing is deleted that hsteer did not write. See docs/hostile-input.md.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_helpers import assert_handled, cli, listing
from PIL import Image

from hsteer.errors import HsteerError
from hsteer.outputs import OutputFolder

SRC = str(Path(__file__).resolve().parent.parent / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
GEN = ["--steps", "2", "--batch-size", "2"]


def row(n: int, index: int | None = None, seed: int | None = None, prompt: str = "a square", **changes) -> dict:
    index = n if index is None else index
    return {"file": f"{n:05d}.png", "prompt": prompt, "seed": index if seed is None else seed, "concepts": [],
            "policy": "plain", "steps": 2, "guidance": 1.0, "height": 8, "width": 8, "index": index, **changes}


def picture(n: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (n * 40 % 256, 0, 0))


def filled(folder: Path, count: int = 4) -> dict[str, bytes]:
    with OutputFolder(folder) as out:
        for n in range(count):
            out.add(row(n), picture(n))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def write_rows(folder: Path, rows: list, tail: str = "") -> None:
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


# --- one writer at a time --------------------------------------------------------------------------------------


def test_a_folder_has_one_writer(tmp_path):
    out = tmp_path / "out"
    filled(out, 2)
    first = OutputFolder(out, resume=True)
    with pytest.raises(HsteerError, match="being written by another hsteer run") as info:
        OutputFolder(out, resume=True)
    assert "resume=True" in str(info.value) and "\n" not in str(info.value)
    first.close()
    OutputFolder(out, resume=True).close()  # free once the first run ends


def test_two_fresh_runs_never_interleave(tmp_path):
    out = tmp_path / "new"
    a, b = OutputFolder(out), OutputFolder(out)  # both saw no folder
    a.add(row(0), picture(0))  # the first image creates the folder and takes its lock
    with pytest.raises(HsteerError, match="being written by another"):
        b.add(row(0), picture(0))
    a.add(row(1), picture(1))
    a.close()
    with pytest.raises(HsteerError, match="filled by another run meanwhile"):
        b.add(row(0), picture(0))  # the first run has finished: its folder is not this run's to fill
    files = [json.loads(x)["file"] for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert files == ["00000.png", "00001.png"]
    c = OutputFolder(tmp_path / "other")
    c.add(row(0), picture(0))
    with pytest.raises(HsteerError, match="already written by this run"):
        c.add(row(0), picture(0))  # one line per image, whatever the caller does


def test_another_process_holds_the_folder(tmp_path):
    """The lock is the kernel's: another process's run on the folder is refused until that process ends."""
    out = tmp_path / "out"
    filled(out, 2)
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom hsteer.outputs import OutputFolder\n"
                              f"f = OutputFolder({str(out)!r}, resume=True)\nprint('ready', flush=True)\n"
                              "sys.stdin.read()"],
                             env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(HsteerError, match="being written by another hsteer run"):
            OutputFolder(out, resume=True)
    finally:
        child.communicate("", timeout=60)
    OutputFolder(out, resume=True).close()


# --- resume validates before touching anything --------------------------------------------------------------------

DAMAGE = {
    "a row outside the folder": (lambda f: write_rows(f, [row(0), {**row(1), "file": "../../victim.png"}]),
                                 "line 2 names the file '../../victim.png'"),
    "a duplicated row": (lambda f: write_rows(f, [row(0), row(1), row(1)]), "line 3 lists 00001.png again"),
    "a seed that disagrees with its index": (lambda f: write_rows(f, [row(0), row(1, seed=7)]), "has seed 7"),
    "a bad line in the middle": (lambda f: write_rows(f, [row(0)], "{nope\n" + json.dumps(row(1)) + "\n"),
                                 "line 2 is not valid JSON"),
    "a line that is a list": (lambda f: write_rows(f, [row(0), [1, 2]]), "line 2 is not a JSON object"),
    "100,000 levels of [": (lambda f: write_rows(f, [row(0)], "[" * 100_000 + "\n"), "levels deep"),
    "a negative index": (lambda f: write_rows(f, [row(0, index=-1, seed=0)]), "index -1"),
    "not UTF-8": (lambda f: (f / "manifest.jsonl").write_bytes(b"\xff\xfe{}\n"), "not UTF-8"),
    "the manifest is a folder": (lambda f: ((f / "manifest.jsonl").unlink(), (f / "manifest.jsonl").mkdir()),
                                 "is a folder"),
    "the manifest is a link": (lambda f: ((f / "manifest.jsonl").rename(f.parent / "elsewhere.jsonl"),
                                          (f / "manifest.jsonl").symlink_to(f.parent / "elsewhere.jsonl")),
                               "symbolic link"),
    "an image is a link": (lambda f: ((f / "00001.png").unlink(), (f / "00001.png").symlink_to(f.parent / "victim.png")),
                           "symbolic link"),
    "an image is a folder": (lambda f: ((f / "00001.png").unlink(), (f / "00001.png").mkdir()), "is a folder"),
}


#: Damage to the folder itself, not to the manifest's text: refused by --overwrite too (nothing is deleted).
ON_DISK = {"the manifest is a folder", "the manifest is a link", "an image is a link", "an image is a folder"}


@pytest.mark.parametrize("case", list(DAMAGE))
@pytest.mark.parametrize("mode", ["resume", "overwrite"])
def test_damage_is_refused_and_changes_nothing(tmp_path, case, mode):
    out = tmp_path / "out"
    filled(out, 3)
    (tmp_path / "victim.png").write_bytes(b"not yours")
    damage, fragment = DAMAGE[case]
    damage(out)
    if mode == "overwrite" and case not in ON_DISK:
        OutputFolder(out, overwrite=True).close()  # a damaged manifest is simply replaced
        assert listing(out) == []
        return
    before = {p: (p.read_bytes() if p.is_file() and not p.is_symlink() else None) for p in tmp_path.rglob("*")}
    with pytest.raises(HsteerError, match=fragment) as info:
        OutputFolder(out, **{mode: True})
    assert "\n" not in str(info.value)
    after = {p: (p.read_bytes() if p.is_file() and not p.is_symlink() else None) for p in tmp_path.rglob("*")}
    assert after == before, "a refused folder was changed"
    assert (tmp_path / "victim.png").read_bytes() == b"not yours"


def test_resume_redoes_corrupt_and_missing_images_and_deletes_nothing_else(tmp_path):
    out = tmp_path / "out"
    filled(out, 5)
    (out / "00001.png").write_bytes(b"garbage, not a PNG")  # listed, corrupt
    data = (out / "00002.png").read_bytes()
    (out / "00002.png").write_bytes(data[: len(data) // 2])  # listed, truncated
    (out / "00003.png").unlink()  # listed, lost
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    write_rows(out, rows[:4], tail=json.dumps(rows[4])[:20])  # a kill tore the last line
    (out / "notes.txt").write_text("mine")
    (out / ".notes.swp").write_text("mine too")
    (out / ".00004.png.x1y2.png").write_bytes(b"temp")
    (out / ".manifest.jsonl.abc.tmp").write_text("temp")
    folder = OutputFolder(out, resume=True)
    assert sorted(folder.done) == ["00000.png"] and folder.redone == 3
    assert [json.loads(x)["file"] for x in (out / "manifest.jsonl").read_text().splitlines()] == ["00000.png"]
    # not deleted: the corrupt and unlisted images are replaced when made again; the user's files stay
    assert listing(out) == [".notes.swp", "00000.png", "00001.png", "00002.png", "00004.png", "manifest.jsonl",
                            "notes.txt"]
    for n in (1, 2, 3, 4):
        folder.add(row(n), picture(n))
    folder.close()
    from hsteer.outputs import image_ok

    assert all(image_ok(out / f"{n:05d}.png") for n in range(5))
    assert [json.loads(x)["file"] for x in (out / "manifest.jsonl").read_text().splitlines()] == \
        [f"{n:05d}.png" for n in range(5)]


def test_overwrite_removes_only_what_hsteer_wrote(tmp_path):
    out = tmp_path / "out"
    filled(out, 2)
    (out / "notes.txt").write_text("mine")
    (out / ".config").mkdir()
    (out / ".00001.png.abc.png").write_bytes(b"temp")
    OutputFolder(out, overwrite=True).close()
    assert listing(out) == [".config", "notes.txt"]


def test_full_disk_names_the_folder_and_another_out(tmp_path):
    class FullDisk:
        def save(self, path, format=None):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "out"
    folder = OutputFolder(out)
    with pytest.raises(HsteerError, match=f"free space on the disk that holds {out}, or write to another out_dir"):
        folder.add(row(0), FullDisk())
    assert listing(out) == []  # no image, no line, no temporary file
    OutputFolder(out).close()  # the failed run let go of the folder


# --- through the CLI, on the bundled model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_pipe():
    import hsteer

    return hsteer.load_pipeline(None)


@pytest.fixture()
def cached_model(world_pipe, monkeypatch):
    import hsteer.model

    monkeypatch.setattr(hsteer.model, "load_quietly", lambda *a, **k: world_pipe)
    return world_pipe


def test_generate_resume_end_to_end(tmp_path, cached_model):
    out = tmp_path / "out"
    argv = ["generate", "--prompt", "a square", "--prompt", "a circle", "--num-images", "2", "--out", out, *GEN]
    assert cli(*argv).exit_code == 0
    first = {p.name: p.read_bytes() for p in out.glob("*.png")}
    (out / "00001.png").write_bytes(b"garbage")  # issue 25 #8: kept and listed before
    result = cli(*argv, "--resume")
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == first
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["file"] for r in rows) == sorted(first) and len(rows) == 4
    # issue 25 #2: a manifest replaced by a folder deleted the good PNGs
    (out / "manifest.jsonl").unlink()
    (out / "manifest.jsonl").mkdir()
    assert_handled(cli(*argv, "--resume"), "manifest.jsonl is a folder", "nothing was changed")
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == first
    assert_handled(cli(*argv, "--overwrite"), "is a folder")
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == first


def test_generate_refuses_a_folder_in_use(tmp_path, cached_model):
    out = tmp_path / "out"
    argv = ["generate", "--prompt", "a square", "--num-images", "2", "--out", out, *GEN]
    assert cli(*argv).exit_code == 0
    held = OutputFolder(out, resume=True)
    try:
        assert_handled(cli(*argv, "--resume"), "being written by another hsteer run")
        assert_handled(cli(*argv, "--overwrite"), "being written by another hsteer run")
    finally:
        held.close()
    assert len(list(out.glob("*.png"))) == 2


# --- the evaluation harness's run folders ------------------------------------------------------------------------


def _shard_run(tmp_path: Path, count: int = 3):
    from hsteer.evaluation.runs import IMAGES, SHARDS
    from hsteer.generation import ImageJob

    run = tmp_path / "run"
    (run / IMAGES).mkdir(parents=True)
    (run / SHARDS).mkdir()
    jobs = [ImageJob("a square", n, 10 + n, [], f"{n:06d}.png") for n in range(count)]
    for n in range(count):
        picture(n).save(run / IMAGES / f"{n:06d}.png")
    return run, jobs


def test_harness_records_must_agree_with_their_jobs(tmp_path):
    from hsteer.evaluation.sharding import Shard
    from hsteer.evaluation.runs import IMAGES

    run, jobs = _shard_run(tmp_path)
    good = {"file": "000000.png", "prompt": "a square", "index": 0, "seed": 10, "concepts": []}
    records = {"000000.png": good, "000001.png": {**good, "file": "000001.png", "index": 1, "seed": 99},
               "000002.png": {**good, "file": "000002.png", "index": 2, "seed": 12, "prompt": "a circle"}}
    shard = Shard(run, 0, 1, jobs)
    shard.sort_out(records)
    assert sorted(shard.done) == ["000000.png"] and shard.redone == 2
    assert [j.file for j in shard.todo] == ["000001.png", "000002.png"]
    assert shard.suspect == {"000001.png", "000002.png"}  # made again, not re-recorded from their files
    assert sorted(p.name for p in (run / IMAGES).iterdir()) == ["000000.png", "000001.png", "000002.png"]


def test_harness_refuses_links_and_folders_before_touching_anything(tmp_path):
    from hsteer.evaluation.runs import IMAGES, MANIFEST, check_run_layout
    from hsteer.evaluation.sharding import Shard

    run, jobs = _shard_run(tmp_path)
    (run / IMAGES / "000000.png").write_bytes(b"corrupt: would be deleted")
    (run / IMAGES / "000001.png").unlink()
    (tmp_path / "victim.png").write_bytes(b"not yours")
    (run / IMAGES / "000001.png").symlink_to(tmp_path / "victim.png")
    with pytest.raises(HsteerError, match="symbolic link"):
        Shard(run, 0, 1, jobs).sort_out({})
    assert (run / IMAGES / "000000.png").read_bytes() == b"corrupt: would be deleted"  # checked all first
    (run / MANIFEST).mkdir()
    with pytest.raises(HsteerError, match="manifest.jsonl is a folder"):
        check_run_layout(run)


def test_harness_shards_have_one_writer_and_bounded_json(tmp_path):
    from hsteer.evaluation.runs import CONFIG, load_records, read_config, SHARDS
    from hsteer.evaluation.sharding import _open_shard
    from hsteer.policies import PlainPolicy

    run, jobs = _shard_run(tmp_path)
    raw = [{"prompt": j.prompt, "index": j.index, "seed": j.seed, "file": j.file, "extra": {}} for j in jobs]
    (run / "images" / ".000001.png.tmp1.png").write_bytes(b"a killed writer's")
    first = _open_shard(run, None, 0, 2, raw, PlainPolicy(), None)
    assert (run / "images" / ".000001.png.tmp1.png").exists()  # image 1 is process 2's: not process 1's to remove
    with pytest.raises(HsteerError, match="being generated by another hsteer process"):
        _open_shard(run, None, 0, 2, raw, PlainPolicy(), None)
    _open_shard(run, None, 1, 2, raw, PlainPolicy(), None).lock.release()  # another shard: its own lock
    assert not (run / "images" / ".000001.png.tmp1.png").exists()  # removed by the process whose image it is
    first.lock.release()
    (run / SHARDS / "shard-000-of-001.jsonl").write_text('{"no": "file"}\n' + "[" * 100_000 + "\n")
    assert load_records(run) == {}
    (run / CONFIG).write_text("[" * 100_000)
    with pytest.raises(HsteerError, match="not valid UTF-8 JSON"):
        read_config(run)
