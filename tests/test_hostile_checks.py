"""Hostile input to the checks shared by the Python API and the CLI: arguments checked before the model
loads, bank metadata validated on load, windows that steer no step, special files, SIGTERM and full disks.

The checks are one layer (`hsteer.checks`, `hsteer.steering.bankcheck`) that the CLI and the API both go
through; these cases call them directly and through the commands. Output folders and resumes are in
tests/test_hostile_resume.py. See docs/hostile-input.md for the table of cases.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hostile_helpers import HSPACE, assert_handled, cli, good_header, listing, make_bank, raw_bank

from hsteer.errors import BankError, HsteerError

SRC = str(Path(__file__).resolve().parent.parent / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture()
def no_model(monkeypatch):
    """Loading a model is an error: every case here must be refused before it."""
    import hsteer.model

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(hsteer.model, "load_quietly", refuse)
    monkeypatch.setattr(hsteer.model, "load_pipeline", refuse)


class FakeUnet:
    mid_block = object()
    config = {}


class FakePipe:
    """Passes `check_pipeline` (a callable with a U-Net that has a mid-block) without being a model."""

    unet = FakeUnet()

    def __call__(self, *args, **kwargs):
        raise AssertionError("the pipeline was called before the arguments were checked")


# --- 1. the Python API --------------------------------------------------------------------------------------


def test_bank_save_refuses_devices_fifos_and_folders(tmp_path):
    from hsteer import ConceptBank

    bank = ConceptBank.load(make_bank(tmp_path / "b.safetensors"))
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for target, kind in (("/dev/null", "a device"), (tmp_path / "fifo", "a FIFO"), (tmp_path / "dir", "a folder")):
        with pytest.raises(HsteerError, match=f"is {kind}, not a regular file") as info:
            bank.save(target)
        assert "\n" not in str(info.value)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # never replaced by a regular file
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode)
    link = tmp_path / "null-link.safetensors"
    link.symlink_to("/dev/null")
    with pytest.raises(HsteerError, match="a device"):
        bank.save(link)  # through a link too
    assert link.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_every_atomic_write_refuses_special_files(tmp_path):
    """The mechanism under every save (banks, PNGs, manifests, reports): `fileio.atomic_path`."""
    from hsteer.fileio import atomic_write_text

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(HsteerError, match="a FIFO"):
        atomic_write_text(tmp_path / "fifo", "x")
    with pytest.raises(HsteerError, match="a device"):
        atomic_write_text("/dev/null", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]  # no temporary file left


PIPES = {"a string": ("runwayml/stable-diffusion-v1-5", "load it first"),
         "a path": (Path("/models/sd"), "load it first"),
         "object()": (object(), "with a U-Net"),
         "None": (None, "with a U-Net"),
         "no mid-block": (type("P", (), {"unet": type("U", (), {"mid_block": None, "config": {}})(),
                                         "__call__": lambda self: None})(), "no mid-block")}


@pytest.mark.parametrize("case", list(PIPES))
def test_check_pipeline(case):
    from hsteer.checks import check_pipeline

    pipe, fragment = PIPES[case]
    with pytest.raises(HsteerError, match=fragment) as info:
        check_pipeline(pipe)
    assert "\n" not in str(info.value)
    assert check_pipeline(FakePipe()) is not None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e30, "x", True, None])
def test_check_scale(value):
    from hsteer.checks import check_scale

    with pytest.raises(HsteerError, match="scale"):
        check_scale("scale", value)
    assert check_scale("scale", -0.5) == -0.5


WINDOWS = ["ab", [0.5], {"a": 1}, [0.9, 0.1], [float("nan"), 1], [1e308, float("inf")], [True, 1], [0, 1, 1],
           [-0.1, 0.5], [0.5, 0.5], [0.2, 1.5], 3, b"01"]


@pytest.mark.parametrize("window", WINDOWS, ids=[repr(w) for w in WINDOWS])
def test_check_window_value(window):
    from hsteer.checks import check_window_value

    with pytest.raises(HsteerError, match="not a step window") as info:
        check_window_value(window, "window")
    assert "\n" not in str(info.value)


def test_check_window_value_accepts_pairs():
    import numpy as np

    from hsteer.checks import check_window_value

    assert check_window_value(None) is None
    assert check_window_value((0, 0.5)) == (0.0, 0.5)
    assert check_window_value([0.4, 1.0]) == (0.4, 1.0)
    assert check_window_value(np.array([0.1, 0.2])) == (0.1, 0.2)


def test_check_steering_args_one_layer_for_attach_and_generate():
    from hsteer.checks import check_steering_args

    pipe = FakePipe()
    assert check_steering_args(pipe, None, scale=2.0, window=[0.0, 0.5], label="attach: ") == (0.0, 0.5)
    cases = [({"scale": float("nan")}, "attach: scale must be a finite number"),
             ({"window": "ab"}, "attach: window 'ab' is not a step window"),
             ({"steer_unconditional": "no"}, "attach: steer_unconditional must be True or False"),
             ({"allow_other_model": 1}, "allow_other_model must be True or False")]
    for changes, fragment in cases:
        with pytest.raises(HsteerError, match=fragment):
            check_steering_args(pipe, None, label="attach: ", **changes)
    with pytest.raises(HsteerError, match="attach: pipe must be a loaded diffusers pipeline"):
        check_steering_args("sd-1.5", None, label="attach: ")
    with pytest.raises(HsteerError, match=r"ConceptBank.load\('b.safetensors'\)"):
        check_steering_args(pipe, "b.safetensors", label="attach: ")
    with pytest.raises(HsteerError, match="must be a ConceptBank"):
        check_steering_args(pipe, object(), label="attach: ")


COVERS = [(0.99, 1.0, 5, None, 0), (0.8, 1.0, 5, None, 1), (0.0, 1.0, 5, None, 5), (0.0, 0.2, 5, None, 1),
          (0.0, 0.19, 5, None, 1), (0.21, 0.39, 5, None, 0), (0.5, 0.6, 50, None, 5), (0.8, 1.0, 10, 0.5, 1), (0.9, 1.0, 10, 0.5, 0),
          (0.0, 1.0, 10, 0.05, 0), (0.3, 0.31, 10_000, None, 100)]


@pytest.mark.parametrize("start, end, steps, strength, count", COVERS)
def test_check_window_covers_steps(start, end, steps, strength, count):
    """Step i of the N steps run is steered when start <= i/N < end (the steering package's rule); none is an error."""
    from hsteer.checks import check_window_covers_steps, steps_run

    run = steps_run(steps, strength)
    expected = sum(start <= i / run < end for i in range(run)) if run else 0
    assert expected == count
    if count:
        assert check_window_covers_steps(start, end, steps, strength=strength) == count
    else:
        with pytest.raises(HsteerError, match="covers none|runs no denoising step"):
            check_window_covers_steps(start, end, steps, "--window", strength=strength)


RATIOS = [({"square": 1e308, "circle": 1e308}, "at most 1e\\+06"), ({"square": -1, "circle": 1}, "at least 0"),
          ({"square": float("nan")}, "finite"), ({"square": float("inf")}, "finite"), ({"../x": 1}, "invalid concept"),
          ({"square": True}, "number"), ({"square": "x"}, "number")]


@pytest.mark.parametrize("ratios, fragment", RATIOS, ids=[str(r) for r, _ in RATIOS])
def test_check_ratios(ratios, fragment):
    from hsteer.checks import check_ratios

    with pytest.raises(HsteerError, match=fragment):
        check_ratios("--ratio", ratios)
    total = math.fsum(check_ratios("--ratio", {"a": 1e6, "b": 1e6, "c": 0}).values())
    assert math.isfinite(total)


@pytest.mark.parametrize("text, fragment", [("a \udcff\udcfe doctor", "not valid UTF-8"), ("a\x00b", "NUL"),
                                            ("\ud800", "not valid UTF-8"), (3, "must be text")])
def test_check_text(text, fragment):
    from hsteer.checks import check_text

    with pytest.raises(HsteerError, match=fragment) as info:
        check_text("a prompt", text)
    str(info.value).encode("utf-8")  # the message itself always prints
    assert check_text("a prompt", "un café, 医者") == "un café, 医者"


def test_load_json_bounds_depth_and_size():
    from hsteer.checks import json_depth, load_json

    with pytest.raises(HsteerError, match="100000 levels deep"):
        load_json("[" * 100_000, "the metadata")
    with pytest.raises(HsteerError, match="too large"):
        load_json("[1, 2]", "the metadata", max_chars=3)
    with pytest.raises(HsteerError, match="not valid JSON"):
        load_json('{"a": ', "the metadata")
    assert json_depth('{"a": "[[[[[[", "b": [[1], {"c": "\\"]]]"}]}') == 3  # brackets in strings do not count
    assert load_json('{"a": [[1]]}', "x") == {"a": [[1]]}


def _train_config(**changes):
    from hsteer.training import CodsmaConfig

    settings = dict(concept="square", group="shape", neutral="a shape", target="a square", iterations=1,
                    batch_size=1, steps=5)
    return CodsmaConfig(**{**settings, **changes})


@pytest.mark.parametrize("pipe, config, fragment", [
    ("runwayml/stable-diffusion-v1-5", None, "load it first"),
    (object(), None, "with a U-Net"),
    (FakePipe(), "codsma", "config must be a TrainConfig"),
    (FakePipe(), {"target": "a \udcff square"}, "not valid UTF-8"),
    (FakePipe(), {"pairs": (("a shape", "a \udcff"),)}, "not valid UTF-8"),
    (FakePipe(), {"window": (0.99, 1.0)}, "covers none of the 5"),
])
def test_train_concept_checks_its_arguments(pipe, config, fragment):
    from hsteer.training import train_concept

    config = _train_config(**config) if isinstance(config, dict) else (config or _train_config())
    with pytest.raises(HsteerError, match=fragment):
        train_concept(pipe, config, progress=False)
    with pytest.raises(HsteerError, match="resume must be True or False"):
        train_concept(FakePipe(), _train_config(), resume="yes", progress=False)


# --- 3. bank metadata ------------------------------------------------------------------------------------------


def _entry(**changes):
    return {"square": {"group": "shape", "objective": "codsma", "tensors": ["c"], "meta": {}, **changes}}


NAN_WINDOW = ('{"format": 1, "hspace_shape": [64, 4, 4], "concepts": {"square": {"group": "shape", '
              '"objective": "codsma", "tensors": ["c"], "meta": {"window": %s}}}}')
BANKS = {
    "100,000 levels of [": ("[" * 100_000, None, ["100000 levels deep"]),
    "100,000 levels in meta": (json.dumps(good_header(concepts=_entry(meta={"x": 0}))).replace(
        '{"x": 0}', '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"), None, ["levels deep"]),
    "window 'ab'": (good_header(concepts=_entry(meta={"window": "ab"})), None, ["concept 'square'", "'ab'"]),
    "window [0.5]": (good_header(concepts=_entry(meta={"window": [0.5]})), None, ["concept 'square'"]),
    "window {a: 1}": (good_header(concepts=_entry(meta={"window": {"a": 1}})), None, ["concept 'square'"]),
    "window [0.9, 0.1]": (good_header(concepts=_entry(meta={"window": [0.9, 0.1]})), None, ["[0.9, 0.1]"]),
    "window [nan, 1]": (NAN_WINDOW % "[NaN, 1]", None, ["concept 'square'", "nan"]),
    "window [1e308, inf]": (NAN_WINDOW % "[1e308, Infinity]", None, ["concept 'square'", "inf"]),
    "group ../../etc": (good_header(concepts=_entry(group="../../etc")), None, ["invalid group name", "'square'"]),
    "mixed shapes": (good_header(hspace_shape=[], concepts={**_entry(), "circle": _entry()["square"]}),
                     {"square/c": torch.zeros(HSPACE), "circle/c": torch.zeros(3)}, ["'hspace_shape' is empty"]),
    "a tensor listed twice": (good_header(concepts=_entry(tensors=["c", "c"])), None, ["lists a tensor twice"]),
    "meta a list": (good_header(concepts=_entry(meta=[1])), None, ["concept 'square'", "not an object"]),
    "fingerprint a number": (good_header(concepts=_entry(meta={"unet_fingerprint": 3})), None, ["fingerprint"]),
    "format true": (good_header(format=True), None, ["format True"]),
}


@pytest.mark.parametrize("case", list(BANKS))
def test_bank_metadata_is_validated_on_load(tmp_path, case, no_model):
    """`ConceptBank.load`, `bank show` and `generate` refuse alike, naming the bank file (and the concept),
    never `--window`; `generate` before the model loads, so `bank show` flags what `generate` refuses."""
    from hsteer import ConceptBank

    header, tensors, fragments = BANKS[case]
    bank = raw_bank(tmp_path / "bank.safetensors", header, tensors)
    with pytest.raises(BankError) as info:
        ConceptBank.load(bank)
    assert str(bank) in str(info.value) and "\n" not in str(info.value)
    shown = assert_handled(cli("bank", "show", bank), str(bank), *fragments)
    assert "--window" not in shown
    made = assert_handled(cli("generate", "--bank", bank, "--concept", "square=1", "--prompt", "a square",
                              "--out", tmp_path / "out", "--steps", "2"), str(bank), *fragments)
    assert made == shown and not (tmp_path / "out").exists()


def test_concepts_built_in_python_follow_the_same_rules(tmp_path):
    from hsteer import ConceptBank
    from hsteer.steering.bank import Concept

    good = {"c": torch.zeros(HSPACE)}
    for meta, fragment in (({"window": "ab"}, "not a step window"), ({"window": [0.9, 0.1]}, "not a step window"),
                           ([1], "not an object")):
        with pytest.raises(BankError, match=fragment):
            Concept("square", "shape", "codsma", good, meta)
    with pytest.raises(BankError, match="torch tensors"):
        Concept("square", "shape", "codsma", {"c": [0.0]})
    concept = Concept("square", "shape", "codsma", good, {"window": [0.0, 0.5]})
    bank = ConceptBank(HSPACE, None, [concept])
    concept.meta["window"] = [2, 3]  # meta is a dict: mutable after construction, so save checks again
    with pytest.raises(BankError, match="not a step window"):
        bank.save(tmp_path / "b.safetensors")
    concept.meta["window"] = [0.0, 0.5]
    concept.meta["deep"] = nested = []
    for _ in range(100):
        nested.append([])
        nested = nested[0]
    with pytest.raises(BankError, match="nests deeper"):
        bank.save(tmp_path / "b.safetensors")
    assert listing(tmp_path) == []


# --- 4. arguments checked before the model loads ----------------------------------------------------------------


def _bank_with_window(path, window):
    from hsteer import ConceptBank
    from hsteer.steering.bank import Concept

    concepts = [Concept(n, "shape", "codsma", {"c": torch.full(HSPACE, 0.01)}, {"window": window})
                for n in ("square", "circle")]
    ConceptBank(HSPACE, None, concepts).save(path)
    return path


GENERATE = [
    (["--prompt", "a \udcff\udcfe doctor"], ["--prompt", "not valid UTF-8"]),
    (["--prompt", "a square", "--fair", "shape", "--ratio", "square=1e308,circle=1e308"], ["ratio"]),
    (["--prompt", "a square", "--concept", "square=1", "--window", "0.99,1", "--steps", "5"], ["covers none of the 5"]),
    (["--prompt", "a square", "--fair", "shape", "--window", "0.99,1", "--steps", "5"], ["covers none"]),
    (["--prompt", "a square", "--concept", "square=nan"], ["finite"]),
]


@pytest.mark.parametrize("argv, fragments", GENERATE, ids=[" ".join(a)[-40:] for a, _ in GENERATE])
def test_generate_checks_before_the_model_loads(tmp_path, no_model, argv, fragments):
    bank = make_bank(tmp_path / "b.safetensors")
    assert_handled(cli("generate", "--bank", bank, "--out", tmp_path / "out", *argv), *fragments)
    assert listing(tmp_path) == ["b.safetensors"]


def test_stored_window_that_steers_no_step_is_refused(tmp_path, no_model):
    bank = _bank_with_window(tmp_path / "b.safetensors", [0.99, 1.0])
    line = assert_handled(cli("generate", "--bank", bank, "--concept", "square", "--prompt", "a square",
                              "--out", tmp_path / "out", "--steps", "5"), "stored with concept 'square'", "of the 5")
    assert "--window" not in line
    assert listing(tmp_path) == ["b.safetensors"]


def test_eval_checks_prompts_and_windows_before_writing(tmp_path, no_model):
    common = ["eval", "winobias", "--classifier", "world", "--max-templates", "1", "--images-per-prompt", "1",
              "--no-score", "--out", tmp_path / "run"]
    assert_handled(cli(*common, "--professions", "doc\udcfftor"), "not valid UTF-8")
    bank = _bank_with_window(tmp_path / "b.safetensors", [0.99, 1.0])
    assert_handled(cli(*common, "--professions", "doctor", "--bank", bank, "--fair", "shape", "--steps", "5"),
                   "covers none")
    assert listing(tmp_path) == ["b.safetensors"]  # no run folder, no config.json


# --- 6. messages: SIGTERM, a full disk ---------------------------------------------------------------------------


def test_sigterm_is_one_line_and_exit_143(tmp_path, monkeypatch):
    import hsteer.generation
    import hsteer.model

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(hsteer.model, "load_quietly", lambda *a, **k: object())
    monkeypatch.setattr(hsteer.generation, "generate_planned", terminated)
    before = signal.getsignal(signal.SIGTERM)
    result = cli("generate", "--prompt", "a square", "--out", tmp_path / "out", "--steps", "2")
    assert result.exit_code == 143, result.output
    assert result.stderr.strip().splitlines()[-1] == ("terminated (SIGTERM); rerun the same command with --resume "
                                                      "to finish the folder")
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI restores the handler it replaced


def test_sigterm_of_a_real_process(tmp_path):
    """`python -m hsteer bank merge` waiting for a bank's lock, then SIGTERM: one line, exit 143, no temp file."""
    import fcntl

    a = make_bank(tmp_path / "a.safetensors")
    out = tmp_path / "m.safetensors"
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "hsteer", "bank", "merge", str(a), "--out", str(out)],
                                env={**ENV, "HSTEER_LOCK_TIMEOUT": "120"}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not _holds_open(proc.pid, tmp_path):
            time.sleep(0.05)  # until it waits on the lock (its handler is installed by then)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM)" and "Traceback" not in err
    assert listing(tmp_path) == ["a.safetensors"]


def _holds_open(pid: int, folder: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(folder) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_full_disk_says_what_to_free(tmp_path, monkeypatch):
    from hsteer.cli.common import _os_error_line

    bank = make_bank(tmp_path / "b.safetensors")
    other = make_bank(tmp_path / "other.safetensors")

    def full(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("hsteer.steering.bank.save_file", full)
    assert_handled(cli("bank", "merge", other, "--out", bank, "--replace"), "No space left on device",
                   f"free space on the disk that holds {tmp_path}")
    line = _os_error_line(OSError(errno.ENOSPC, "No space left on device", "/data/out/00001.png"))
    assert "/data/out" in line and "free space" in line
    line = _os_error_line(OSError(errno.EDQUOT, "Disk quota exceeded", "/data/b.safetensors"))
    assert "free space" in line
