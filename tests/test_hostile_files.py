"""Hostile input, part 2: damaged banks and models, file modes and links, full and read-only disks,
output folders and non-finite results. Runs the CLI in-process on the bundled model (loaded once).
"""

from __future__ import annotations

import errno
import functools
import json
import os
import stat

import pytest
import torch
from hostile_helpers import HSPACE, assert_handled, cli, good_header, listing, make_bank, raw_bank

from hsteer.errors import HsteerError


@pytest.fixture(scope="module")
def world_pipe():
    import hsteer

    return hsteer.load_pipeline(None)


@pytest.fixture()
def cached_model(world_pipe, monkeypatch):
    """Commands reuse the loaded bundled model instead of loading it per case."""
    import hsteer.cli.generate
    import hsteer.cli.train
    import hsteer.model

    for module in (hsteer.cli.generate, hsteer.cli.train):  # commands that import the loader at module level
        monkeypatch.setattr(module, "load", lambda *a, **k: world_pipe, raising=False)
    monkeypatch.setattr(hsteer.model, "load_quietly", lambda *a, **k: world_pipe)  # ... or inside the command
    return world_pipe


@pytest.fixture()
def fingerprint(world_pipe):
    from hsteer.model.geometry import unet_fingerprint

    return unet_fingerprint(world_pipe.unet)


GEN = ["--steps", "2", "--num-images", "2", "--batch-size", "2"]

# --- damaged banks ----------------------------------------------------------------------------------------

DAMAGED = {
    "concepts is a list": (good_header(concepts=["square"]), None, "'concepts' is a list"),
    "header is a list": ([1, 2], None, "header is a list"),
    "header is not JSON": ("{nope", None, "not valid JSON"),
    "fp16 tensor": (good_header(), {"square/c": torch.zeros(HSPACE, dtype=torch.float16)}, "float16"),
    "int tensor": (good_header(), {"square/c": torch.zeros(HSPACE, dtype=torch.int32)}, "int32"),
    "bool tensor": (good_header(), {"square/c": torch.zeros(HSPACE, dtype=torch.bool)}, "bool"),
    "missing tensor": (good_header(), {"other/c": torch.zeros(HSPACE)}, "missing"),
    "wrong shape": (good_header(), {"square/c": torch.zeros(3)}, "shape"),
    "path name in header": (good_header(concepts={"../x": {"group": "g", "objective": "codsma", "tensors": ["c"]}}),
                            {"../x/c": torch.zeros(HSPACE)}, "invalid concept name"),
    "entry not an object": (good_header(concepts={"square": 3}), None, "not an object"),
    "tensors not a list": (good_header(concepts={"square": {"group": "g", "objective": "o", "tensors": "c"}}),
                           None, "lists no tensors"),
    "shape not ints": (good_header(hspace_shape=["a", 1, 2]), None, "hspace_shape"),
    "format 99": (good_header(format=99), None, "format 99"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_bank_is_one_line(tmp_path, case):
    header, tensors, fragment = DAMAGED[case]
    bank = raw_bank(tmp_path / "bank.safetensors", header, tensors)
    assert_handled(cli("bank", "show", bank), fragment)


def test_bank_show_flags_nonfinite(tmp_path):
    bank = raw_bank(tmp_path / "bank.safetensors", good_header(),
                    {"square/c": torch.full(HSPACE, float("nan"))})
    result = cli("bank", "show", bank)
    assert result.exit_code == 0 and "NON-FINITE VALUES in c" in result.output
    info = json.loads(cli("bank", "show", bank, "--json").stdout)
    assert info["concepts"][0]["nonfinite"] == ["c"]


def test_nonfinite_concept_is_never_used_or_saved(tmp_path, cached_model):
    bank = raw_bank(tmp_path / "bank.safetensors", good_header(), {"square/c": torch.full(HSPACE, float("nan"))})
    out = tmp_path / "out"
    assert_handled(cli("generate", "--bank", bank, "--concept", "square", "--prompt", "a square", "--out", out, *GEN),
                   "NaN or infinite", "square")
    assert not out.exists()
    from hsteer import ConceptBank

    with pytest.raises(HsteerError, match="NaN or infinite"):
        ConceptBank.load(bank).save(tmp_path / "copy.safetensors")
    assert not (tmp_path / "copy.safetensors").exists()


def test_merge_messages_name_real_options(tmp_path):
    a = make_bank(tmp_path / "a.safetensors")
    b = make_bank(tmp_path / "b.safetensors")
    assert_handled(cli("bank", "merge", a, b, "--out", tmp_path / "m.safetensors"), "--replace")
    assert not (tmp_path / "m.safetensors").exists()
    assert cli("bank", "merge", a, b, "--out", tmp_path / "m.safetensors", "--replace").exit_code == 0


def test_train_into_other_model_bank_names_real_option(tmp_path, cached_model):
    bank = make_bank(tmp_path / "b.safetensors", fingerprint="0000000000000000")
    line = assert_handled(cli("train", "--bank", bank, "--concept", "red", "--group", "colour", "--neutral", "a shape",
                              "--target", "a red shape", "--iterations", "1", "--batch-size", "1", "--steps", "2"),
                          "--allow-other-model")
    assert "another U-Net" in line
    assert not (tmp_path / "b.runs").exists()


# --- broken models ----------------------------------------------------------------------------------------

MODELS = {"broken model_index.json": ("model_index.json", b"{broken", "not valid JSON"),
          "non-UTF-8 model_index.json": ("model_index.json", b"\xff\xfe\x00", "not UTF-8"),
          "model_index.json is a list": ("model_index.json", b"[]", "not a JSON object"),
          "no model_index.json": ("other.txt", b"x", "no model_index.json"),
          "broken hsteer.json": ("hsteer.json", b"{", "not valid JSON"),
          "hsteer.json steps not a number": ("hsteer.json", b'{"steps": "many"}', "must be numbers")}


@pytest.mark.parametrize("case", list(MODELS))
def test_broken_model_folder_is_one_line(tmp_path, case):
    name, data, fragment = MODELS[case]
    model = tmp_path / "model"
    model.mkdir()
    if name == "hsteer.json":
        (model / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (model / name).write_bytes(data)
    assert_handled(cli("generate", "--model", model, "--prompt", "a square", "--out", tmp_path / "out"), fragment)
    assert not (tmp_path / "out").exists()


def test_model_with_missing_parts_is_one_line(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", '
                                            '"UNet2DConditionModel"]}')
    assert_handled(cli("generate", "--model", model, "--prompt", "a square", "--out", tmp_path / "out"),
                   "cannot load model")


# --- modes, links, disks ------------------------------------------------------------------------------------


def test_save_keeps_mode_and_new_files_follow_umask(tmp_path):
    bank = make_bank(tmp_path / "b.safetensors")
    os.chmod(bank, 0o644)
    make_bank(bank, names=("square", "circle", "triangle"))
    assert stat.S_IMODE(bank.stat().st_mode) == 0o644
    old = os.umask(0o027)
    try:
        fresh = make_bank(tmp_path / "new.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640


def test_save_writes_through_a_symlink(tmp_path):
    target = make_bank(tmp_path / "real.safetensors")
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    make_bank(link, names=("square", "circle", "triangle"))
    from hsteer import ConceptBank

    assert link.is_symlink() and len(ConceptBank.load(target)) == 3


def test_read_only_folder_is_one_line_and_keeps_the_bank(tmp_path, monkeypatch):
    bank = make_bank(tmp_path / "b.safetensors")
    before = bank.read_bytes()
    if os.geteuid() == 0:  # root writes into a read-only folder: the OS's refusal is what the save meets

        def refused(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path))

        monkeypatch.setattr("hsteer.fileio.tempfile.mkstemp", refused)
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(HsteerError, match="cannot write"):
            make_bank(bank, names=("x", "y", "z"))
    finally:
        os.chmod(tmp_path, 0o755)
        monkeypatch.undo()
    assert bank.read_bytes() == before and listing(tmp_path) == ["b.safetensors"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO])
def test_full_or_read_only_disk_is_one_line(tmp_path, monkeypatch, code):
    bank = make_bank(tmp_path / "b.safetensors")
    other = make_bank(tmp_path / "other.safetensors")
    before = bank.read_bytes()

    def failing(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("hsteer.steering.bank.save_file", failing)
    result = cli("bank", "merge", other, "--out", bank, "--replace")
    assert_handled(result, "cannot write", os.strerror(code))
    assert bank.read_bytes() == before
    assert listing(tmp_path) == ["b.safetensors", "other.safetensors"]  # no temp file left


def test_pngs_and_manifest_follow_the_umask(tmp_path, cached_model):
    old = os.umask(0o022)
    try:
        assert cli("generate", "--prompt", "a square", "--out", tmp_path / "out", *GEN).exit_code == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert set(modes.values()) == {0o644}, modes


# --- output folders -----------------------------------------------------------------------------------------


def _manifest(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_output_folder_refuse_overwrite_resume(tmp_path, cached_model):
    out = tmp_path / "out"
    argv = ["generate", "--prompt", "a doctor", "--prompt", "a nurse", "--out", out, *GEN]
    assert cli(*argv).exit_code == 0
    first = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert_handled(cli(*argv), "not empty", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == first
    # a kill after two images: two rows, one orphan PNG, a torn line and a temp file
    rows = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text("\n".join(rows[:2]) + "\n{\"file\": \"000")
    (out / "00003.png").unlink()
    (out / ".00002.png.abc.png").write_bytes(b"temp")
    assert cli(*argv, "--resume").exit_code == 0
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == first
    assert [r["file"] for r in _manifest(out)] == sorted(first) and listing(out) == sorted([*first, "manifest.jsonl"])
    assert [r["prompt"] for r in _manifest(out)] == ["a doctor"] * 2 + ["a nurse"] * 2
    assert_handled(cli(*argv[:-6], "--steps", "3", "--num-images", "2", "--resume"), "other settings", "--overwrite")
    assert cli("generate", "--prompt", "a red circle", "--out", out, *GEN, "--overwrite").exit_code == 0
    assert [r["prompt"] for r in _manifest(out)] == ["a red circle"] * 2 and len(list(out.glob("*.png"))) == 2


@pytest.mark.parametrize("flag, value", [("--guidance", "9000"), ("--concept", "square=900")])
def test_nonfinite_images_are_never_written(tmp_path, cached_model, monkeypatch, flag, value, fingerprint):
    """Whatever makes the U-Net overflow, the image is refused and the error names the setting."""
    import numpy as np

    bank = make_bank(tmp_path / "b.safetensors", fingerprint=fingerprint)
    real = type(cached_model).__call__

    @functools.wraps(real)  # the pipeline's own signature: steering binds a call's arguments by name
    def overflowing(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        out.images = np.full_like(out.images, np.nan)
        return out

    monkeypatch.setattr(type(cached_model), "__call__", overflowing)
    out = tmp_path / "out"
    result = cli("generate", "--bank", bank, "--prompt", "a square", "--out", out, flag, value, *GEN)
    assert_handled(result, "NaN or infinite", "--guidance", *(["square=900"] if flag == "--concept" else []))
    assert not out.exists() or listing(out) == []


def test_interrupt_message_names_real_options(tmp_path, cached_model, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("hsteer.generation.generate_planned", interrupted)
    result = cli("generate", "--prompt", "a square", "--out", tmp_path / "out", *GEN)
    assert result.exit_code == 130 and "--resume" in result.stderr
    from hsteer.cli.common import RESUME_HINTS
    from hsteer.cli.main import main

    for command, hint in RESUME_HINTS.items():
        for option in (w for w in hint.split() if w.startswith("--")):
            names = {command.replace("_", " ")}
            found = [c for c in _commands(main) if c.callback.__name__ == command]
            assert found and any(option in p.opts for c in found for p in c.params), (command, option, names)


def _commands(group):
    import click

    for command in group.commands.values():
        if isinstance(command, click.Group):
            yield from _commands(command)
        else:
            yield command


def test_damaged_checkpoint_is_refused(tmp_path, cached_model):
    base = ["train", "--bank", tmp_path / "b.safetensors", "--concept", "square", "--group", "shape", "--neutral",
            "a shape", "--target", "a square", "--batch-size", "1", "--steps", "2", "--checkpoint-every", "1"]
    assert cli(*base, "--iterations", "1").exit_code == 0
    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "b.runs" / "square" / "checkpoint.safetensors"
    from safetensors import safe_open

    with safe_open(str(ckpt), framework="pt") as handle:
        meta = handle.metadata()
    tensors = load_file(str(ckpt))
    tensors["param/c"] = torch.full_like(tensors["param/c"], float("nan"))
    save_file(tensors, str(ckpt), metadata=meta)
    before = (tmp_path / "b.safetensors").read_bytes()
    assert_handled(cli(*base, "--iterations", "1", "--resume"), "NaN or infinite", "checkpoint")
    assert (tmp_path / "b.safetensors").read_bytes() == before
