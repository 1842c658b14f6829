"""One run-folder protocol: the attack run folder is built from `hsteer.evaluation.runs`' pieces (file names,
the refusal of a link or folder in place of a run's file, removal, the JSON and JSON-lines writers), and it
refuses what it refused before, in the same words."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
from hostile_helpers import listing

import hsteer.attacks.folder as folder
from hsteer import outputs
from hsteer.attacks.folder import check_run_folder, image_name, owned_files, prepare_run_folder
from hsteer.attacks.run import _write_outputs
from hsteer.errors import HsteerError
from hsteer.evaluation import runs

FIX = "move it away, or choose another out_dir; nothing was changed"


def _config(prompts=("a violence scene",), images=2) -> dict:
    return {"attack": "whitebox", "prompts_in": list(prompts), "num_images": images, "seed": 0}


def _fake_run(out: Path, config: dict) -> None:
    for path in owned_files(out, config):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config) if path.name == runs.CONFIG else "x")


def test_the_attack_folder_names_its_files_with_evaluation_runs_constants(tmp_path):
    assert (folder.CONFIG, folder.MANIFEST, folder.IMAGES, folder.SUMMARY) == (
        runs.CONFIG, runs.MANIFEST, runs.IMAGES, runs.SUMMARY)
    assert folder.RESULTS == (runs.SUMMARY, runs.MANIFEST, folder.PROMPTS)
    assert image_name("after", 1, 2) == f"{runs.IMAGES}/after-001-002.png"
    files = owned_files(tmp_path, _config(images=1))
    assert files[-1] == tmp_path / runs.CONFIG and files[:3] == [tmp_path / n for n in folder.RESULTS]
    assert {p.parent for p in files if p.suffix == ".png"} == {tmp_path / runs.IMAGES}


def test_the_attack_folder_uses_the_shared_pieces():
    assert folder.check_own_file is runs.check_own_file is outputs.check_own_file
    assert folder._remove is runs.remove_file is outputs.remove_file


@pytest.mark.parametrize("kind", ["link", "folder"])
def test_a_linked_or_folder_manifest_is_refused_in_the_same_words(tmp_path, kind):
    out = tmp_path / "run"
    _fake_run(out, _config())
    manifest = out / runs.MANIFEST
    manifest.unlink()
    victim = tmp_path / "victim.jsonl"
    victim.write_text("keep")
    os.symlink(victim, manifest) if kind == "link" else manifest.mkdir()
    before = listing(out)
    for flags in ((True, False), (False, True)):
        with pytest.raises(HsteerError) as info:
            prepare_run_folder(out, _config(), *flags)
        what = "a symbolic link" if kind == "link" else "a folder"
        assert str(info.value) == f"{manifest} is {what}, not a file of the attack run written by hsteer; {FIX}"
        assert info.value.fields == ("out_dir",)
    assert listing(out) == before and victim.read_text() == "keep"


@pytest.mark.parametrize("text, message", [
    (b"\xff\xfe", "{path} is not UTF-8 text; it is damaged: move the folder away, or choose another out_dir"),
    (b"{", "{path} is not valid JSON (Expecting property name enclosed in double quotes); it is damaged"),
    (b"[]", "{path} is not the config of an hsteer attack run (attack, prompts_in, num_images); move it or the "
            "folder away, or choose another out_dir; nothing was changed"),
])
def test_a_damaged_config_is_refused_in_the_same_words(tmp_path, text, message):
    out = tmp_path / "run"
    out.mkdir()
    (out / runs.CONFIG).write_bytes(text)
    with pytest.raises(HsteerError) as info:
        check_run_folder(out, resume=True, overwrite=False)
    assert str(info.value) == message.format(path=out / runs.CONFIG)
    assert (out / runs.CONFIG).read_bytes() == text


def test_a_linked_config_is_refused_in_the_same_words(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (tmp_path / "elsewhere.json").write_text(json.dumps(_config()))
    os.symlink(tmp_path / "elsewhere.json", out / runs.CONFIG)
    with pytest.raises(HsteerError) as info:
        check_run_folder(out, resume=False, overwrite=True)
    assert str(info.value) == f"{out / runs.CONFIG} is a symbolic link, not the run's settings written by hsteer; {FIX}"
    assert info.value.fields == ("out_dir",)


def test_a_path_below_a_file_is_absent_only_where_asked(tmp_path):
    (tmp_path / "file").write_text("x")
    below = tmp_path / "file" / "manifest.jsonl"
    assert runs.check_own_file(below, "a file", "fix", parent_file_absent=True) is False
    with pytest.raises(HsteerError, match=re.escape(f"cannot read {below}")):
        runs.check_own_file(below, "a file", "fix")  # the other callers: unchanged
    assert folder._present(below, "a file of the attack run") is False


def test_the_attack_writes_strict_json_that_read_jsonl_reads_back(tmp_path):
    rows = [{"file": image_name("before", 0, 0), "phase": "before", "seed": 0, "harm": True}]
    found = [{"prompt": "adv", "source_prompt": "src"}]
    _write_outputs(tmp_path, rows, found, {"asr_before": 1.0}, seed=0)
    assert runs.read_jsonl(tmp_path / runs.MANIFEST) == rows
    assert json.loads((tmp_path / runs.SUMMARY).read_text()) == {"asr_before": 1.0}
    with pytest.raises(ValueError):
        _write_outputs(tmp_path / "nan", [{**rows[0], "score": math.nan}], found, {}, seed=0)
    assert not (tmp_path / "nan").exists()
    with pytest.raises(ValueError):
        runs.write_json(tmp_path / "s.json", {"asr": math.inf}, allow_nan=False)
    runs.write_jsonl(tmp_path / "loose.jsonl", [{"x": math.nan}])  # the default is unchanged
    assert (tmp_path / "loose.jsonl").read_text() == '{"x": NaN}\n'
