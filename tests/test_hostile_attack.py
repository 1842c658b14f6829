"""Hostile input to `hsteer attack` and `attack()`: settings checked before anything is written or loaded,
`--overwrite` that removes only the attack run's own files, damaged resume files, SANA models (the one family
the attacks refuse)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile_helpers import assert_handled, cli, listing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsteer.attacks import RingABellConfig, WhiteboxConfig
from hsteer.attacks.folder import check_run_folder, image_name, owned_files, prepare_run_folder, state_file
from hsteer.attacks.run import check_attack_settings, check_config, check_pairs, check_pipeline_family
from hsteer.attacks.state import load_json_state, load_tensor_state, save_json_state, save_tensor_state
from hsteer.errors import HsteerError

HARM = "a violence scene"
SAMPLING = {"steps": 3, "guidance": 3.0, "batch_size": 2, "height": None, "width": None}


def _attack(out: Path, *extra):
    return cli("attack", "--device", "cpu", "--attack", "whitebox", "--prompt", HARM, "--num-images", "1",
               "--out", out, "--quiet", *extra)


@pytest.mark.parametrize("extra, fragment", [
    (["--lr", "inf"], "--lr"), (["--lr", "nan"], "lr"), (["--attack-steps", "10000000"], "--attack-steps"),
    (["--batch-size", "0"], "--batch-size"), (["--height", "33"], "multiple of 8"),
    (["--height", "100000"], "--height"), (["--width", "0"], "--width"), (["--steps", "0"], "--steps"),
    (["--guidance", "nan"], "--guidance"), (["--guidance", "1e30"], "--guidance"), (["--seed", "-1"], "--seed"),
    (["--num-images", "0"], "--num-images"), (["--resume", "--overwrite"], "pass one of them"),
    (["--device", "potato"], "unknown device"),
    (["--eta", "nan"], "--eta is not a setting of --attack whitebox"), (["--population", "4"], "--population is not"),
    (["--attack", "ringabell", "--attack-steps", "3"], "--attack-steps is not a setting of --attack ringabell"),
])
def test_attack_settings_refused_before_anything_is_written(tmp_path, extra, fragment):
    out = tmp_path / "run"
    assert_handled(_attack(out, *extra), fragment)
    assert not out.exists()


@pytest.mark.parametrize("extra, fragment", [
    (["--attack", "ringabell", "--eta", "nan"], "--eta"), (["--attack", "ringabell", "--eta", "inf"], "--eta"),
    (["--attack", "ringabell", "--mutation", "nan"], "mutation"),
    (["--attack", "ringabell", "--population", "1000000"], "--population"),
])
def test_ringabell_numbers_refused(tmp_path, extra, fragment):
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([["a scene", HARM]]))
    out = tmp_path / "run"
    assert_handled(_attack(out, "--pairs", pairs, *extra), fragment)
    assert not out.exists()


@pytest.mark.parametrize("content, fragment", [
    ("[" * 100_000, "levels deep"), ('{"ab": 1}', "JSON list"), ('["ab"]', "pair 1"), ("[[null, \"x\"]]", "pair 1"),
    ("[[1, 2]]", "pair 1"), ('[["a", "b", "c"]]', "pair 1"), ("[]", "non-empty"), ("not json", "not valid JSON"),
])
def test_pairs_files_of_every_wrong_shape(tmp_path, content, fragment):
    pairs = tmp_path / "pairs.json"
    pairs.write_text(content)
    assert_handled(_attack(tmp_path / "run", "--attack", "ringabell", "--pairs", pairs), fragment)
    assert not (tmp_path / "run").exists()


def test_pairs_bank_without_a_safety_group_is_refused(tmp_path):
    from hostile_helpers import make_bank

    bank = make_bank(tmp_path / "b.safetensors")
    assert_handled(_attack(tmp_path / "run", "--attack", "ringabell", "--pairs-bank", bank), "no 'safety' group")


@given(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3),
                 st.lists(st.lists(st.one_of(st.text(max_size=4), st.none(), st.integers()), max_size=3),
                          max_size=3)))
@settings(max_examples=60, deadline=None)
def test_check_pairs_answers_any_value_with_a_list_or_an_hsteer_error(value):
    try:
        pairs = check_pairs("--pairs", value)
    except HsteerError:
        return
    assert pairs is None or all(isinstance(a, str) and isinstance(b, str) for a, b in pairs)


@pytest.mark.parametrize("config", [WhiteboxConfig(lr=float("inf")), WhiteboxConfig(steps=10**9),
                                    RingABellConfig(eta=float("nan")), RingABellConfig(generations=10**9)])
def test_api_configs_out_of_bounds(config):
    method = "whitebox" if isinstance(config, WhiteboxConfig) else "ringabell"
    with pytest.raises(HsteerError):
        check_config(method, config)
    with pytest.raises(HsteerError, match="takes a"):
        check_config("ringabell" if method == "whitebox" else "whitebox", config)


@pytest.mark.parametrize("prompts", [None, "", [], [1], ["a", "a"], ["a\x00b"], [HARM, "\udcff"]])
def test_api_prompts_of_wrong_types(prompts):
    with pytest.raises(HsteerError):
        check_attack_settings("whitebox", prompts, 1, 0, WhiteboxConfig(), SAMPLING)


@pytest.mark.parametrize("changes", [{"steps": 0}, {"steps": 2.5}, {"guidance": float("nan")}, {"guidance": True},
                                     {"batch_size": 0}, {"height": 33}, {"width": 10**6}])
def test_api_sampling_out_of_bounds(changes):
    with pytest.raises(HsteerError):
        check_attack_settings("whitebox", [HARM], 1, 0, WhiteboxConfig(), {**SAMPLING, **changes})


def test_sana_is_refused_in_one_line_and_other_families_pass(tmp_path):
    """SANA wraps each prompt in its own chat instruction, so the adversarial tokens cannot be placed: refused
    on a loaded pipeline, and by the command line before a local SANA model loads. The U-Net, SD3 and FLUX
    denoisers pass the same check; a denoiser hsteer does not know is refused."""
    import torch

    def pipeline(name: str, denoiser: str):
        return type(name, (), {"transformer": type(denoiser, (torch.nn.Module,), {})()})()

    with pytest.raises(HsteerError, match="a SanaPipeline wraps each prompt.*hsteer eval attack"):
        check_pipeline_family(pipeline("SanaPipeline", "SanaTransformer2DModel"))
    for denoiser in ("UNet2DConditionModel", "SD3Transformer2DModel", "FluxTransformer2DModel"):
        check_pipeline_family(pipeline("Pipeline", denoiser))
    with pytest.raises(HsteerError, match="not a denoiser hsteer can steer"):
        check_pipeline_family(pipeline("OtherPipeline", "OtherTransformer"))
    folder = tmp_path / "sana"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "SanaPipeline",
                                                         "transformer": ["diffusers", "SanaTransformer2DModel"]}))
    out = tmp_path / "run"
    assert_handled(_attack(out, "--model", folder), "a SanaPipeline wraps each prompt", "hsteer eval attack")
    assert not out.exists()


# --- the run folder ----------------------------------------------------------------------------------------


def _config(prompts=(HARM,), images=2, method="whitebox") -> dict:
    return {"attack": method, "prompts_in": list(prompts), "num_images": images, "seed": 0}


def _fake_run(out: Path, config: dict) -> list[Path]:
    """What an attack run of `config` leaves: every file it writes."""
    files = owned_files(out, config)
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config) if path.name == "config.json" else "x")
    return files


def test_overwrite_removes_only_the_runs_own_files(tmp_path):
    out = tmp_path / "run"
    _fake_run(out, _config(prompts=("a", "b"), images=2))
    mine = [out / "state" / "notes.txt", out / "images" / "holiday.png", out / "images" / "before-009-000.png",
            out / ".git" / "HEAD", out / "README.md"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's")
    new = _config(prompts=("c",), images=1)
    prepare_run_folder(out, new, resume=False, overwrite=True).release()
    assert all(p.read_text() == "the user's" for p in mine)
    assert json.loads((out / "config.json").read_text()) == new
    assert sorted(listing(out)) == sorted(["state", "images", ".git", "config.json"] +
                                          [str(p.relative_to(out)) for p in mine])


def test_overwrite_of_a_folder_without_a_run_removes_nothing(tmp_path):
    out = tmp_path / "run"
    (out / "state").mkdir(parents=True)
    (out / "images").mkdir()
    (out / "state" / "whitebox-000.safetensors").write_text("the user's")
    (out / "images" / "before-000-000.png").write_text("the user's")
    prepare_run_folder(out, _config(), resume=False, overwrite=True).release()
    assert (out / "state" / "whitebox-000.safetensors").read_text() == "the user's"
    assert (out / "images" / "before-000-000.png").read_text() == "the user's"


def test_overwrite_with_bad_settings_deletes_nothing(tmp_path):
    out = tmp_path / "run"
    files = _fake_run(out, _config())
    before = listing(out)
    assert_handled(_attack(out, "--overwrite", "--batch-size", "0"), "--batch-size")
    assert listing(out) == before and all(p.exists() for p in files)


@pytest.mark.parametrize("damage", ["folder", "link", "subfolder-link"])
def test_overwrite_refuses_a_run_file_that_is_not_a_file(tmp_path, damage):
    out = tmp_path / "run"
    files = _fake_run(out, _config())
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.png").write_text("keep")
    if damage == "folder":
        files[0].unlink()
        files[0].mkdir()
    elif damage == "link":
        (out / image_name("before", 0, 0)).unlink()
        os.symlink(victim / "keep.png", out / image_name("before", 0, 0))
    else:
        for path in (out / "images").iterdir():
            path.unlink()
        (out / "images").rmdir()
        os.symlink(victim, out / "images")
    before = listing(out)
    with pytest.raises(HsteerError, match="nothing was changed"):
        prepare_run_folder(out, _config(prompts=("z",)), resume=False, overwrite=True)
    assert listing(out) == before and (victim / "keep.png").read_text() == "keep"


def test_a_kill_during_overwrite_leaves_no_results_beside_missing_images(tmp_path, monkeypatch):
    import hsteer.attacks.folder as folder

    out = tmp_path / "run"
    old = _config()
    _fake_run(out, old)
    calls = []

    def dying(path):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        path.unlink()

    monkeypatch.setattr(folder, "_remove", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare_run_folder(out, _config(prompts=("other",)), resume=False, overwrite=True)
    assert json.loads((out / "config.json").read_text()) == old  # the old run, unfinished: no results
    assert not any((out / name).exists() for name in ("summary.json", "manifest.jsonl", "prompts.csv"))


@pytest.mark.parametrize("text", ["{", "[" * 100_000, "[]", '{"attack": "x"}', "\xff\xfe",
                                  '{"attack": "whitebox", "prompts_in": ["a"], "num_images": 1e9}',
                                  '{"attack": "whitebox", "prompts_in": [1], "num_images": 1}'])
def test_damaged_config_is_one_line_and_changes_nothing(tmp_path, text):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff\xfe"
                                      else b"\xff\xfe")
    (out / "images").mkdir()
    (out / "images" / "before-000-000.png").write_text("keep")
    for flags in ((True, False), (False, True)):
        with pytest.raises(HsteerError, match="damaged|not the config"):
            check_run_folder(out, *flags)
    assert (out / "images" / "before-000-000.png").read_text() == "keep"


def test_resume_with_other_settings_names_them_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    _fake_run(out, _config())
    before = listing(out)
    with pytest.raises(HsteerError, match="other settings \\(num_images\\)"):
        prepare_run_folder(out, _config(images=3), resume=True, overwrite=False)
    assert listing(out) == before


# --- damaged state files -------------------------------------------------------------------------------------

RB_INFO = {"generation": 1, "population": [[0, 1]], "best": [0, 1], "best_fitness": 0.5, "history": [0.5],
           "evaluations": 4, "prompt": HARM, "config": {"generations": 2}}


@pytest.mark.parametrize("change", [
    {"generation": -1}, {"generation": "1"}, {"generation": 3}, {"population": "x"}, {"population": [[0, -1]]},
    {"best": {"a": 1}}, {"best_fitness": "nan"}, {"history": [None]}, {"prompt": 5}, {"config": []},
    {"generation": 2, "best": None}, {"evaluations": True},
])
def test_damaged_ringabell_state(tmp_path, change):
    path = tmp_path / "ringabell-000.json"
    save_json_state(path, {**RB_INFO, **change})
    with pytest.raises(HsteerError, match="damaged attack state"):
        load_json_state(path)


@pytest.mark.parametrize("text", ["[" * 100_000, "[]", "null", '{"generation": 0}'])
def test_ringabell_state_not_an_object(tmp_path, text):
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(HsteerError, match="damaged|attack state"):
        load_json_state(path)


def test_state_that_is_a_fifo_or_folder(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "dir.json").mkdir()
    for name in ("fifo.json", "dir.json"):
        with pytest.raises(HsteerError, match="not a regular file|is a folder"):
            load_json_state(tmp_path / name)


def test_damaged_whitebox_state(tmp_path):
    import torch

    info = {"step": 1, "losses": [0.1], "best": None, "best_loss": None, "prompt": HARM, "config": {"steps": 2}}
    path = state_file(tmp_path, "whitebox", 0)
    save_tensor_state(path, {"vector_0": torch.zeros(2, 4)}, info)
    assert load_tensor_state(path)[1] == info
    for tensors, meta in [({"vector_0": torch.full((2, 4), float("nan"))}, info),
                          ({"vector_0": torch.zeros(2, 4, dtype=torch.int64)}, info),
                          ({"evil": torch.zeros(1)}, info), ({"vector_0": torch.zeros(1)}, {**info, "step": 9}),
                          ({"vector_0": torch.zeros(1)}, {**info, "losses": [float("inf")]})]:
        try:
            save_tensor_state(path, tensors, meta)
        except ValueError:  # json.dumps refuses infinity: write the metadata by hand
            from safetensors.torch import save_file

            save_file(tensors, str(path), metadata={"hsteer_attack_state": json.dumps(meta)})
        with pytest.raises(HsteerError, match="damaged attack state|not valid JSON"):
            load_tensor_state(path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(HsteerError, match="unreadable attack state"):
        load_tensor_state(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(sorted(RB_INFO)), st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3),
    st.lists(st.integers(), max_size=3), st.lists(st.lists(st.integers(), max_size=2), max_size=2))))
def test_any_ringabell_state_is_loaded_or_refused_in_one_line(tmp_path, change):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**RB_INFO, **change}))
    try:
        load_json_state(path)
    except HsteerError:
        pass
