"""The image-aware guard under hostile input: detectors stored in a bank (wrong shapes, dtypes, non-finite
values, header and tensors that disagree, a detector for a group the bank lacks), bank merges of detectors,
banks without detectors, `GuardConfig` / `build_guard` values, and `hsteer generate --guard`, `hsteer guard
fit` and `hsteer attack --guard` refusing bad settings before the model loads."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from hostile_helpers import HSPACE, assert_handled, cli, random_detector, safety_bank
from hsteer.errors import BankError, HsteerError
from hsteer.generation.guard import GuardConfig, build_guard
from hsteer.generation.guard_fit import DetectorFitConfig, check_fit_prompts
from hsteer.steering.bank import Concept, ConceptBank
from hsteer.steering.detectors import LinearDetector

SIZE = 12
P = "detector:safety/"


def _detector(size: int = SIZE, **kw) -> LinearDetector:
    return random_detector(size, **kw)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A bank of a 'safety' and a 'shape' group whose safety group has a (random) learned detector."""
    folder = tmp_path_factory.mktemp("guarded")
    bank = safety_bank(folder)
    bank.save(folder / "nodet.safetensors")
    bank.detectors["safety"] = _detector()
    bank.save(folder / "det.safetensors")
    return folder


def _read(path):
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["hsteer"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    return header, tensors


def _variant(guarded, tmp_path, header_change=None, tensor_change=None):
    header, tensors = _read(guarded / "det.safetensors")
    if header_change:
        header_change(header)
    if tensor_change:
        tensor_change(tensors)
    path = tmp_path / "damaged.safetensors"
    save_file(tensors, str(path), metadata={"hsteer": json.dumps(header)})
    return path


def _set(key, value):
    return lambda t: t.__setitem__(key, value(t[key]) if callable(value) else value)


def _entry(key, value):
    return lambda h: h["detectors"]["safety"].__setitem__(key, value)


def _rename_group(new):
    def change(header):
        header["detectors"] = {new: header["detectors"].pop("safety")}
    return change


def _move_tensors(new):
    return lambda t: [t.__setitem__(k.replace("safety", new), t.pop(k)) for k in list(t) if k.startswith(P)]


DAMAGE = {
    "weight 2-d": (None, _set(P + "weight", lambda w: w.reshape(3, 4)), "1-d"),
    "weight shorter than mean": (None, _set(P + "weight", lambda w: w[:5]), "values"),
    "weight float16": (None, _set(P + "weight", lambda w: w.half()), "float32"),
    "weight int32": (None, _set(P + "weight", lambda w: w.int()), "float32"),
    "weight NaN": (None, _set(P + "weight", lambda w: w.index_fill(0, torch.tensor([0]), math.nan)), "NaN"),
    "mean inf": (None, _set(P + "mean", lambda m: m.index_fill(0, torch.tensor([0]), math.inf)), "NaN"),
    "std 0": (None, _set(P + "std", lambda s: s * 0), "positive"),
    "bias of two": (None, _set(P + "bias", torch.zeros(2)), "bias"),
    "bias 0-d": (None, _set(P + "bias", torch.tensor(0.0)), "bias"),
    "std missing": (None, lambda t: t.pop(P + "std"), "missing"),
    "stray detector tensor": (None, _set("detector:safety/extra", torch.zeros(3)), "no harm detector"),
    "tensors of an unlisted group": (None, _set("detector:shape/weight", torch.zeros(3)), "no harm detector"),
    "tensors without an entry": (lambda h: h.pop("detectors"), None, "no harm detector"),
    "entry without tensors": (None, lambda t: [t.pop(k) for k in list(t) if k.startswith(P)], "missing"),
    "entry lists other tensors": (_entry("tensors", ["w"]), None, "lists the tensors"),
    "detectors a list": (lambda h: h.__setitem__("detectors", [1]), None, "not an object"),
    "entry a list": (lambda h: h["detectors"].__setitem__("safety", [1]), None, "not an object"),
    "step '4'": (_entry("step", "4"), None, "decision step"),
    "step 4.0": (_entry("step", 4.0), None, "decision step"),
    "step beyond steps": (_entry("step", 99), None, "decision step"),
    "steps 0": (_entry("steps", 0), None, "steps"),
    "steps 10**30": (_entry("steps", 10**30), None, "steps"),
    "threshold 1.5": (_entry("threshold", 1.5), None, "threshold"),
    "threshold NaN": (_entry("threshold", math.nan), None, "threshold"),
    "threshold missing": (lambda h: h["detectors"]["safety"].pop("threshold"), None, "threshold"),
    "features 'x'": (_entry("features", "x"), None, "features"),
    "feature_shape [-1]": (_entry("feature_shape", [-1]), None, "feature_shape"),
    "feature_shape of other size": (_entry("feature_shape", [7]), None, "feature shape"),
    "meta a list": (_entry("meta", [1]), None, "meta"),
    "a group the bank lacks": (_rename_group("colour"), _move_tensors("colour"), "no concept of that group"),
    "a group name '..x'": (_rename_group("..x"), _move_tensors("..x"), "invalid group name"),
}


@pytest.mark.parametrize("case", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_stored_detector_is_one_line(guarded, tmp_path, case):
    header_change, tensor_change, fragment = DAMAGE[case]
    path = _variant(guarded, tmp_path, header_change, tensor_change)
    with pytest.raises(BankError, match="bank file") as info:
        ConceptBank.load(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("case", ["weight 2-d", "a group the bank lacks", "tensors without an entry"])
def test_bank_show_and_generate_refuse_a_damaged_detector(guarded, tmp_path, case):
    header_change, tensor_change, fragment = DAMAGE[case]
    path = _variant(guarded, tmp_path, header_change, tensor_change)
    assert_handled(cli("bank", "show", path), fragment)
    out = tmp_path / "out"
    assert_handled(cli("generate", "--prompt", "a scene", "--bank", path, "--safe", "--guard", "learned", "--out",
                       out), fragment)
    assert not out.exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(part=st.sampled_from(["weight", "bias", "mean", "std"]),
       shape=st.lists(st.integers(0, 13), min_size=0, max_size=3).map(tuple),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64]),
       fill=st.sampled_from([0.5, 1.0, math.nan, math.inf, -1.0]))
def test_any_stored_detector_part_loads_only_if_it_is_what_save_writes(guarded, tmp_path, part, shape, dtype, fill):
    """Any shape, dtype or value of one part: the bank loads only where the part is exactly as `save` writes
    it (float32, 1-d, of the detector's size, finite; std positive), else one BankError."""
    tensor = torch.full(shape, fill).to(dtype)
    path = _variant(guarded, tmp_path, tensor_change=_set(P + part, tensor))
    size = 1 if part == "bias" else SIZE
    fine = dtype == torch.float32 and shape == (size,) and math.isfinite(fill) and (part != "std" or fill > 0)
    if fine:
        assert ConceptBank.load(path).detectors["safety"].size == SIZE
    else:
        with pytest.raises(BankError):
            ConceptBank.load(path)


def test_a_bank_without_detectors_loads_and_round_trips(guarded, tmp_path):
    plain = ConceptBank.load(guarded / "nodet.safetensors")
    assert plain.detectors == {} and "detectors" not in _read(guarded / "nodet.safetensors")[0]
    loaded = ConceptBank.load(guarded / "det.safetensors")
    assert torch.equal(loaded.detectors["safety"].weight, _detector().weight)


def test_a_detector_is_saved_only_beside_its_group(guarded, tmp_path):
    bank = ConceptBank.load(guarded / "det.safetensors")
    bank.detectors["colour"] = _detector()
    with pytest.raises(BankError, match="no concept of that group"):
        bank.save(tmp_path / "b.safetensors")
    bank.detectors.pop("colour")
    bank.detectors["../x"] = _detector()
    with pytest.raises(HsteerError, match="invalid group name"):
        bank.save(tmp_path / "b.safetensors")
    assert not (tmp_path / "b.safetensors").exists()
    bank.detectors.pop("../x")
    bank.remove("anti_harm")  # the group's last concept: its detector goes with it
    assert "safety" not in bank.detectors
    assert ConceptBank.load(bank.save(tmp_path / "b.safetensors")).detectors == {}


def test_merging_two_detectors_of_one_group_is_a_clash(guarded):
    first = ConceptBank.load(guarded / "det.safetensors")
    second = ConceptBank(concepts=[Concept("anti_harm2", "safety", "codsma", {"c": torch.zeros(HSPACE)})])
    second.detectors["safety"] = _detector(threshold=0.7)
    with pytest.raises(BankError, match="both banks hold a harm detector for group 'safety'.*replace"):
        first.merge(second)
    assert first.merge(second, replace=True).detectors["safety"].threshold == 0.7
    plain = ConceptBank.load(guarded / "nodet.safetensors")
    assert plain.merge(second).detectors["safety"].threshold == 0.7  # one side's detector is kept
    assert second.merge(plain).detectors["safety"].threshold == 0.7


def test_bank_merge_cli_refuses_a_detector_clash(guarded, tmp_path):
    second = ConceptBank(concepts=[Concept("anti_harm2", "safety", "codsma", {"c": torch.zeros(HSPACE)})])
    second.detectors["safety"] = _detector()
    second.save(tmp_path / "second.safetensors")
    out = tmp_path / "merged.safetensors"
    assert_handled(cli("bank", "merge", guarded / "det.safetensors", tmp_path / "second.safetensors", "--out", out),
                   "--replace")
    assert not out.exists()


@pytest.mark.parametrize("kwargs, fragment", [
    ({"step": -1}, "decision step"), ({"step": 1.5}, "decision step"), ({"step": True}, "decision step"),
    ({"step": math.nan}, "decision step"), ({"threshold": math.nan}, "threshold"),
    ({"threshold": math.inf}, "threshold"), ({"threshold": 0}, "threshold"), ({"threshold": 1}, "threshold"),
    ({"threshold": -0.5}, "threshold"), ({"threshold": "0.5"}, "threshold"), ({"design": "x"}, "design"),
    ({"soft_width": 0}, "soft_width"), ({"group": "../x"}, "group name"), ({"group": None}, "group name"),
    ({"detector": "nudenet"}, "unknown guard detector"),
])
def test_guard_config_refuses_bad_values(kwargs, fragment):
    with pytest.raises(HsteerError, match=fragment):
        GuardConfig(**kwargs)


def test_build_guard_checks_against_the_run(guarded):
    bank = ConceptBank.load(guarded / "det.safetensors")
    with pytest.raises(HsteerError, match="not one of the run's 8 steps"):
        build_guard(GuardConfig(step=8), bank, 8)
    with pytest.raises(HsteerError, match="'switch' design.*before 7"):
        build_guard(GuardConfig(step=7, design="switch"), bank, 8)
    with pytest.raises(HsteerError, match="no harm detector for group 'safety'"):
        build_guard(GuardConfig(), ConceptBank.load(guarded / "nodet.safetensors"), 8)
    with pytest.raises(HsteerError, match="unknown group"):
        build_guard(GuardConfig(group="colour"), bank, 8)
    assert build_guard(GuardConfig(), bank, 5).step == 1  # the detector's step 4 of 20, on a 5-step run


GENERATE = ("generate", "--prompt", "a photo of a figure", "--steps", "8", "--safe")


@pytest.mark.parametrize("args, fragment", [
    (("--guard", "learned", "--guard-step", "8"), "not one of the run's 8 steps"),
    (("--guard", "learned", "--guard-step", "-1"), "--guard-step"),
    (("--guard", "learned", "--guard-step", "7", "--guard-design", "switch"), "'switch' design"),
    (("--guard", "learned", "--guard-threshold", "nan"), "--guard-threshold"),
    (("--guard", "learned", "--guard-threshold", "1"), "--guard-threshold"),
    (("--guard", "learned", "--q16-prompts", "x.npy"), "--q16-prompts is read only by --guard q16"),
])
def test_generate_guard_options_are_checked_before_loading(guarded, tmp_path, monkeypatch, args, fragment):
    import hsteer.model

    monkeypatch.setattr(hsteer.model, "load_quietly", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "out"
    assert_handled(cli(*GENERATE, "--bank", guarded / "det.safetensors", *args, "--out", out), fragment)
    assert not out.exists()


def test_generate_guard_learned_without_a_detector(guarded, tmp_path):
    out = tmp_path / "out"
    assert_handled(cli(*GENERATE, "--bank", guarded / "nodet.safetensors", "--guard", "learned", "--out", out),
                   "no harm detector", "hsteer guard fit")
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (("--guidance", "nan"), "guidance"), (("--guidance", "inf"), "guidance"), (("--guidance", "1e30"), "guidance"),
    (("--threshold", "nan"), "threshold"), (("--step", "8"), "decision step"),
    (("--images-per-prompt", "1"), "--images-per-prompt must be"), (("--seed", "-1"), "--seed"),
    (("--harmful", "", "--harmless", "a scene"), "empty"),
    (("--harmful", "a\x00b", "--harmless", "a scene"), "NUL"),
    (("--harmful", "a scene", "--harmless", "a scene"), "as harmful and as harmless"),
    (("--group", "colour"), "unknown group"),
])
def test_guard_fit_is_checked_before_loading(guarded, tmp_path, monkeypatch, args, fragment):
    import hsteer.model

    monkeypatch.setattr(hsteer.model, "load_quietly", lambda *a, **k: pytest.fail("the model was loaded"))
    bank = tmp_path / "bank.safetensors"
    bank.write_bytes((guarded / "det.safetensors").read_bytes())
    prompts = () if "--harmful" in args else ("--harmful", "a gory scene", "--harmless", "a scene")
    assert_handled(cli("guard", "fit", "--bank", bank, "--steps", "8", *prompts, *args), fragment)
    assert bank.read_bytes() == (guarded / "det.safetensors").read_bytes()


def test_fit_settings_and_prompts_at_the_api_edge():
    for kwargs in ({"guidance": math.nan}, {"l2": -1.0}, {"holdout": 1.0}, {"seed": -1}, {"threshold": math.inf}):
        with pytest.raises(HsteerError):
            DetectorFitConfig(**kwargs)
    for harmful, harmless in ((["a"], []), ("a scene", ["b"]), ([None], ["b"]), (["  "], ["b"]), (["a"], ["a"])):
        with pytest.raises(HsteerError):
            check_fit_prompts(harmful, harmless)
    assert check_fit_prompts(["a", "a"], ["b"]) == (["a"], ["b"])


@pytest.mark.parametrize("args, fragment", [
    (("--attack", "adaptive", "--guard", "none"), "--attack adaptive attacks the guard"),
    (("--attack", "adaptive", "--guard", "nudenet"), "learned detector"),
    (("--attack", "adaptive", "--guard", "learned", "--guard-step", "99"), "not one of the run's 4 steps"),
    (("--attack", "adaptive", "--guard", "learned", "--guard-threshold", "inf"), "--guard-threshold"),
    (("--attack", "whitebox", "--guard", "learned", "--guard-step", "3", "--guard-design", "switch"), "'switch'"),
])
def test_attack_guard_options_are_checked_before_loading(guarded, tmp_path, monkeypatch, args, fragment):
    import hsteer.model

    monkeypatch.setattr(hsteer.model, "load_quietly", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "out"
    assert_handled(cli("attack", "--prompt", "a gory scene", "--steps", "4", "--bank", guarded / "det.safetensors",
                       "--safe", *args, "--out", out), fragment)
    assert not out.exists()


def test_white_box_attacks_need_no_safety_pairs(guarded):
    """The white-box attacks read no (clean, harmful) pairs: a safety group trained without any is fine for
    them; Ring-A-Bell and --exclude-harm-words still need them."""
    from hsteer.cli.attack import _pairs

    bank = ConceptBank.load(guarded / "det.safetensors")
    options = {"pairs": None, "pairs_bank": None, "bank_path": "B", "exclude_harm_words": False}
    assert _pairs({**options, "attack": "whitebox"}, bank) is None
    assert _pairs({**options, "attack": "adaptive"}, bank) is None
    with pytest.raises(HsteerError, match="no concept with training prompt pairs"):
        _pairs({**options, "attack": "ringabell"}, bank)
    with pytest.raises(HsteerError, match="no concept with training prompt pairs"):
        _pairs({**options, "attack": "whitebox", "exclude_harm_words": True}, bank)


def test_a_scheduler_without_x0_is_refused_before_any_image(guarded):
    """DPM-Solver's step returns no predicted clean image: generate, attach and guard fit refuse it with the
    fix before the denoiser runs once (not at the first batch's decision step)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
    from diffusers import FlowMatchEulerDiscreteScheduler

    from hsteer import SafePolicy, attach, generate
    from hsteer.generation.guard_fit import fit_detector
    from hsteer.generation.x0 import check_x0_readable
    from hsteer.model import load_pipeline

    for readable in (DDIMScheduler(), EulerDiscreteScheduler(), FlowMatchEulerDiscreteScheduler()):
        check_x0_readable(readable)
    pipe = load_pipeline(None)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    calls = []
    pipe.unet.register_forward_pre_hook(lambda *args: calls.append(1))
    bank = ConceptBank.load(guarded / "nodet.safetensors")
    guard = GuardConfig(detector=lambda images, step: [0.0] * len(images), step=2)
    refused = "DPMSolverMultistepScheduler: its step returns no predicted clean image.*DDIMScheduler.from_config"
    with pytest.raises(HsteerError, match=refused):
        generate(pipe, "a photo of a figure", bank=bank, policy=SafePolicy(), guard=guard, steps=4)
    with pytest.raises(HsteerError, match=refused):
        attach(pipe, bank, SafePolicy(), guard=guard)
    with pytest.raises(HsteerError, match=refused):
        fit_detector(pipe, ["a violent scene"], ["a scene"], DetectorFitConfig(steps=4, step=2, images_per_prompt=4))
    assert not calls
