"""`hsteer train` under hostile input: a group's checkpoint damaged in any part (metadata, progress, loss
rows, Adam states, concepts, trajectory pool) is one line naming the file before anything is restored; a
group of long names gets a run folder of its own; `{concept}` is filled with one `--concept` too; an image
size the model's denoiser cannot make is refused before it loads, naming the sizes it takes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hostile_helpers import assert_handled, cli
from hsteer.cli.common import cli_message
from hsteer.errors import HsteerError
from hsteer.training import CodsmaConfig
from hsteer.training.group import train_group
from hsteer.training.state import RUN_NAME_MAX, run_dir_for

NAME = "group_checkpoint.safetensors"


def _config(name: str, **over) -> CodsmaConfig:
    settings = dict(concept=name, group="gender", neutral="a person", target=f"a {name}", iterations=3,
                    batch_size=2, steps=4, lr=0.1, seed=0, window=(0.25, 1.0))
    return CodsmaConfig(**{**settings, **over})


@pytest.fixture(scope="module")
def pipe(sd_dir):
    from hsteer.model import load_pipeline

    return load_pipeline(sd_dir)


@pytest.fixture(scope="module")
def checkpoint(pipe, tmp_path_factory):
    run = tmp_path_factory.mktemp("group")
    train_group(pipe, [_config("man"), _config("woman")], run_dir=run, checkpoint_every=3)
    with safe_open(str(run / NAME), framework="pt") as handle:
        return json.loads(handle.metadata()["hsteer_group"]), {k: handle.get_tensor(k) for k in handle.keys()}


def _meta(**change):
    return {"meta_change": change}


def _tensor(key, value):
    return {"tensor_change": {key: value}}


DAMAGE = {
    "not JSON": {"text": "not json"}, "100,000 levels": {"text": "[" * 100_000}, "a list": {"text": "[]"},
    "iteration -1": _meta(iteration=-1), "iteration '1'": _meta(iteration="1"), "iteration true": _meta(iteration=True),
    "iteration beyond iterations": _meta(iteration=9), "seconds NaN": _meta(seconds=math.nan),
    "seconds a string": _meta(seconds="x"), "rows not a list": _meta(rows={}), "one row missing": "drop row",
    "a row's loss a string": "string loss", "adam_steps of one": _meta(adam_steps=[1]),
    "adam_steps 'x'": _meta(adam_steps="x"), "adam step -1": _meta(adam_steps=[-1, 1]),
    "concept of another shape": _tensor("param/0", torch.zeros(3)),
    "concept of integers": "int param", "concept NaN": "nan param", "Adam moment missing": "drop adam",
    "pool of another shape": _tensor("pool/x", torch.zeros(1, 2)), "pool steps as floats": "float k",
    "pool steps outside the window": "k outside", "an unknown tensor": _tensor("other", torch.zeros(1)),
}


def _damaged(run, checkpoint, case):
    meta, tensors = json.loads(json.dumps(checkpoint[0])), dict(checkpoint[1])
    text = None
    spec = DAMAGE[case]
    if isinstance(spec, dict):
        meta.update(spec.get("meta_change", {}))
        tensors.update(spec.get("tensor_change", {}))
        text = spec.get("text")
    elif spec == "drop row":
        meta["rows"] = meta["rows"][:-1]
    elif spec == "string loss":
        meta["rows"][1]["loss/man"] = "0.1"
    elif spec == "int param":
        tensors["param/0"] = tensors["param/0"].int()
    elif spec == "nan param":
        tensors["param/0"] = tensors["param/0"].clone().fill_(math.nan)
    elif spec == "drop adam":
        tensors.pop("adam/1/exp_avg")
    elif spec == "float k":
        tensors["pool/k"] = tensors["pool/k"].float()
    elif spec == "k outside":
        tensors["pool/k"] = tensors["pool/k"] * 0 + 99
    save_file(tensors, str(run / NAME), metadata={"hsteer_group": text if text is not None else json.dumps(meta)})


@pytest.mark.parametrize("case", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_group_checkpoint_is_one_line(pipe, checkpoint, tmp_path, case):
    _damaged(tmp_path, checkpoint, case)
    before = (tmp_path / NAME).read_bytes()
    with pytest.raises(HsteerError, match="group checkpoint") as info:
        train_group(pipe, [_config("man", iterations=4), _config("woman", iterations=4)], run_dir=tmp_path,
                    resume=True, checkpoint_every=4)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    if case == "iteration beyond iterations":
        assert "resume with iterations=9 or more" in str(info.value)
        assert "resume with --iterations 9 or more" in cli_message(info.value)
    assert (tmp_path / NAME).read_bytes() == before  # nothing restored, nothing written


def test_a_group_checkpoint_that_is_a_folder_is_refused(pipe, tmp_path):
    (tmp_path / NAME).mkdir()
    with pytest.raises(HsteerError, match="group checkpoint.*directory|folder"):
        train_group(pipe, [_config("man"), _config("woman")], run_dir=tmp_path, resume=True)


def test_a_group_of_long_names_has_a_run_folder_of_its_own(tmp_path):
    names = ["x" * 100, "y" * 100, "z" * 100]
    folder = run_dir_for(tmp_path / "b.safetensors", "+".join(names))
    other = run_dir_for(tmp_path / "b.safetensors", "+".join(names[:2] + ["w" * 100]))
    assert len(folder.name) <= RUN_NAME_MAX and folder != other and folder.parent.name == "b.runs"
    assert run_dir_for(tmp_path / "b.safetensors", "man+woman").name == "man+woman"  # short names unchanged
    with pytest.raises(HsteerError, match="shorter bank file name"):
        run_dir_for(tmp_path / ("b" * 252), "man")


def test_train_cli_long_group_names_train_and_leave_no_empty_folder(tmp_path):
    bank = tmp_path / "b.safetensors"
    names = ["x" * 100, "y" * 100, "z" * 100]
    result = cli("train", "--bank", bank, *[a for n in names for a in ("--concept", n)], "--target",
                 "a {concept} figure", "--group", "g", "--neutral", "a figure", "--iterations", "1",
                 "--batch-size", "1", "--steps", "3")
    assert result.exit_code == 0, result.output
    from hsteer.steering.bank import ConceptBank

    assert ConceptBank.load(bank).names == names
    (folder,) = (tmp_path / "b.runs").iterdir()
    assert (folder / NAME).is_file()


def test_one_concept_fills_its_target_placeholder(tmp_path):
    from hsteer.steering.bank import ConceptBank

    bank = tmp_path / "b.safetensors"
    result = cli("train", "--bank", bank, "--concept", "red", "--target", "a {concept} figure", "--group", "colour",
                 "--neutral", "a figure", "--iterations", "1", "--batch-size", "1", "--steps", "3")
    assert result.exit_code == 0, result.output
    assert ConceptBank.load(bank)["red"].meta["target"] == "a red figure"


@pytest.mark.parametrize("args", [("--neutral", "a {concept}"), ("--negative", "{concept}"),
                                  ("--pair", "a {concept}", "a red {concept}")])
def test_placeholder_in_a_shared_prompt_is_refused(tmp_path, args):
    base = {"--neutral": "a figure"}
    if args[0] == "--neutral":
        base = {}
    extra = [x for k, v in base.items() for x in (k, v)]
    out = tmp_path / "b.safetensors"
    assert_handled(cli("train", "--bank", out, "--concept", "red", "--target", "a red figure", "--group", "colour",
                       *extra, *args), "{concept}")
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (("--height", "64"), "--height 64 does not fit this model"), (("--height", "40"), "(8, 16, 24, 32)"),
    (("--width", "64"), "--width 64"), (("--height", "48", "--width", "16"), "--height 48"),
])
def test_a_size_the_transformer_cannot_make_is_refused_before_loading(tmp_path, monkeypatch, args, fragment):
    import hsteer.model

    monkeypatch.setattr(hsteer.model, "load_quietly", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "out"
    assert_handled(cli("generate", "--model", "world-dit", "--prompt", "a scene", *args, "--out", out), fragment)
    assert not out.exists()
    assert_handled(cli("train", "--model", "world-dit", "--bank", tmp_path / "b.safetensors", "--concept", "red",
                       "--group", "colour", "--neutral", "a figure", "--target", "a red figure", *args), fragment)


def test_size_rules_of_each_family():
    from hsteer.model.geometry import check_image_size, check_model_folder_size, size_rule

    assert size_rule({"patch_size": 2, "pos_embed_max_size": 8}, 2, "SD3Transformer2DModel") == (8, 32)
    assert size_rule({"patch_size": 2, "pos_embed_max_size": 96}, 8, "SD3Transformer2DModel") == (16, 1536)
    assert size_rule({"patch_size": 1}, 8, "FluxTransformer2DModel") == (16, 8192)
    assert size_rule({"block_out_channels": [32, 64]}, 8, "UNet2DConditionModel") == (8, 8192)
    check_model_folder_size("world-dit", 32, 8)
    check_model_folder_size("world", 1024, 40)  # a U-Net takes any multiple of 8
    with pytest.raises(HsteerError, match="multiples of 16 up to 1536"):
        check_image_size((16, 1536), 520, None)


def test_the_api_refuses_the_size_once_loaded():
    from hsteer.model import load_pipeline, resolve_resolution

    dit = load_pipeline("world-dit")
    assert resolve_resolution(dit, 24, None) == (24, 32)
    with pytest.raises(HsteerError, match="height 64 does not fit"):
        resolve_resolution(dit, 64, None)
