"""The Python API and the environment given wrong types and values: an HsteerError line, never a TypeError,
AttributeError or a wait forever."""

from __future__ import annotations

import time

import pytest
from hostile_helpers import assert_handled, cli
from hypothesis import given, settings
from hypothesis import strategies as st

from hsteer.errors import HsteerError


@pytest.mark.parametrize("prompts", [None, 5, {"a": 1}, [None], ["a", 3], b"bytes"])
def test_generate_prompts_of_wrong_types(prompts):
    from hsteer import generate

    with pytest.raises(HsteerError, match="prompts must"):
        generate(object(), prompts)


@pytest.mark.parametrize("device", ["potato", "cuda:99", 5, None])
def test_load_pipeline_device_checked_before_loading(device):
    from hsteer.model import load_pipeline

    with pytest.raises(HsteerError, match="device"):
        load_pipeline(device=device)


@pytest.mark.parametrize("kwargs", [{"model": 5}, {"dtype": ["float32"]}, {"dtype": "float8"}])
def test_load_pipeline_model_and_dtype_of_wrong_types(kwargs):
    from hsteer.model import load_pipeline

    with pytest.raises(HsteerError):
        load_pipeline(device="cpu", **kwargs)


@pytest.mark.parametrize("pipe", [None, "path/to/model", object()])
def test_detach_takes_a_pipeline(pipe):
    from hsteer import detach

    with pytest.raises(HsteerError, match="pipe"):
        detach(pipe)


def test_fair_policy_with_one_group_as_text():
    from hsteer.policies import FairPolicy

    assert FairPolicy("shape").groups == ("shape",)


@given(st.text(max_size=8))
@settings(max_examples=60, deadline=None)
def test_env_threads_is_a_count_or_one_line(raw):
    import os

    from hsteer.model.loading import env_threads

    old = os.environ.get("HSTEER_THREADS")
    os.environ["HSTEER_THREADS"] = raw.replace("\x00", "")
    try:
        value = env_threads()
        assert value is None or 1 <= value <= 4096
    except HsteerError as exc:
        assert "HSTEER_THREADS" in str(exc)
    finally:
        os.environ.pop("HSTEER_THREADS") if old is None else os.environ.__setitem__("HSTEER_THREADS", old)


@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "abc", "1e999", "9" * 5000])
def test_lock_timeout_from_the_environment_never_waits_forever(tmp_path, monkeypatch, raw):
    from hsteer.fileio import exclusive_lock

    monkeypatch.setenv("HSTEER_LOCK_TIMEOUT", raw)
    began = time.monotonic()
    with pytest.raises(HsteerError, match="HSTEER_LOCK_TIMEOUT"):
        with exclusive_lock(tmp_path / "bank.safetensors"):
            pass
    assert time.monotonic() - began < 5


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -1.0, "x"])
def test_lock_timeout_argument(tmp_path, timeout):
    from hsteer.fileio import exclusive_lock

    with pytest.raises(HsteerError, match="timeout"):
        with exclusive_lock(tmp_path / "bank.safetensors", timeout=timeout):
            pass


@pytest.mark.parametrize("var, raw", [("HSTEER_THREADS", "abc"), ("HSTEER_THREADS", "0"),
                                      ("HSTEER_LOCK_TIMEOUT", "nan")])
def test_commands_answer_a_bad_environment_in_one_line(tmp_path, monkeypatch, var, raw):
    from hostile_helpers import make_bank

    monkeypatch.setenv(var, raw)
    if var == "HSTEER_THREADS":
        result = cli("generate", "--device", "cpu", "--prompt", "a square", "--steps", "1", "--out", tmp_path / "o")
    else:
        bank = make_bank(tmp_path / "a.safetensors")
        result = cli("bank", "merge", bank, bank, "--out", tmp_path / "m.safetensors", "--replace")
        if result.exit_code == 0:  # merge takes no lock: nothing waited; the variable is read by writers only
            return
    assert_handled(result, var)


def test_a_model_whose_weights_are_pickles_is_refused_before_loading(sd_dir, tmp_path):
    import shutil

    from hsteer.errors import ModelLoadError
    from hsteer.model import load_pipeline

    folder = tmp_path / "model"
    shutil.copytree(sd_dir, folder)
    for weights in (folder / "text_encoder").glob("*.safetensors"):
        weights.rename(weights.with_name("pytorch_model.bin"))  # what a pickled checkpoint is named
    with pytest.raises(ModelLoadError, match="pickles.*pytorch_model.bin"):
        load_pipeline(folder)
    assert_handled(cli("generate", "--model", folder, "--device", "cpu", "--prompt", "a", "--out", tmp_path / "o"),
                   "safetensors only")
