"""A generation is checked once, at the API edge (`hsteer.generation.plan`): `hsteer generate` makes the plan
before it loads the model and runs it; `generate` makes it from its keywords. Neither checks a setting again,
resolves the bank's site twice or builds the guard twice."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from hostile_helpers import assert_handled, cli, random_detector, safety_bank
from hsteer import generate
from hsteer.generation import generate_planned, plan_generation
from hsteer.generation import guard as guard_module
from hsteer.model.loading import load_pipeline
from hsteer import outputs
from hsteer.policies import FairPolicy, SafePolicy
from hsteer.steering import bankcheck, siteshape
from hsteer.steering.bank import ConceptBank
from hsteer.generation.guard import GuardConfig

COUNTED = {"check_generate_settings": outputs, "check_bank_windows": bankcheck, "build_guard": guard_module,
           "site_shape": siteshape}


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    return load_pipeline()


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory):
    """A shape group with stored windows, a safety concept and a (random) learned detector for it."""
    folder = tmp_path_factory.mktemp("plan")
    bank = safety_bank(folder)
    bank.detectors["safety"] = random_detector(1024)  # the world model's latent at its 32 px: 4 x 16 x 16
    bank.save(folder / "bank.safetensors")
    return folder / "bank.safetensors"


@pytest.fixture()
def counts(monkeypatch):
    """How often each check ran, the bank's site was resolved and the concept shape there computed, wherever hsteer imported the function."""
    seen = {name: 0 for name in (*COUNTED, "site_of")}
    for name, home in COUNTED.items():
        real = getattr(home, name)

        def counting(*args, _real=real, _name=name, **kwargs):
            seen[_name] += 1
            return _real(*args, **kwargs)

        for module_name, module in list(sys.modules.items()):
            if module_name.startswith("hsteer") and getattr(module, name, None) is real:
                monkeypatch.setattr(module, name, counting)
    real_site_of = ConceptBank.site_of

    def counting_site_of(self, pipe):
        seen["site_of"] += 1
        return real_site_of(self, pipe)

    monkeypatch.setattr(ConceptBank, "site_of", counting_site_of)
    return seen


ONCE = {"check_generate_settings": 1, "check_bank_windows": 1, "build_guard": 1, "site_shape": 1,
        "site_of": 1}


def test_hsteer_generate_checks_once_and_resolves_once(bank_path, counts, tmp_path):
    out = tmp_path / "out"
    result = cli("generate", "--prompt", "a photo of a doctor", "--num-images", "3", "--steps", "4", "--bank",
                 bank_path, "--fair", "shape", "--guard", "learned", "--out", out)
    assert result.exit_code == 0, result.output
    assert counts == ONCE
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all("guard" in row for row in rows)
    assert rows[0]["defaults"] == {"steps": "argument", "guidance": "model card"}


def test_generate_checks_once_and_resolves_once(world, bank_path, counts):
    bank = ConceptBank.load(bank_path)
    out = generate(world, "a photo of a doctor", num_images_per_prompt=2, steps=4, bank=bank,
                   policy=FairPolicy(["shape"]), guard=GuardConfig(), progress=False)
    assert counts == ONCE and len(out.images) == 2


def test_a_plan_runs_as_generate_does(world, bank_path):
    """The same settings through `plan_generation` + `generate_planned` and through `generate`: the same pixels
    and manifest rows (the model's defaults resolved on the pipeline in both)."""
    bank = ConceptBank.load(bank_path)
    settings = dict(num_images_per_prompt=2, seed=3, bank=bank, policy=SafePolicy(), progress=False)
    direct = generate(world, ["a photo of a nurse", "a bloody scene"], **settings)
    plan = plan_generation(["a photo of a nurse", "a bloody scene"], sampling=(20, 4.0), **settings)
    planned = generate_planned(world, plan)
    assert [r.to_dict() for r in planned.records] == [r.to_dict() for r in direct.records]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(planned.images, direct.images))
    assert planned.records[0].to_dict()["defaults"] == {"steps": "model card", "guidance": "model card"}


def test_a_plan_checked_against_other_steps_is_rechecked_on_the_models(world, bank_path):
    """A plan checked against a folder's 30 steps, run on a model whose card says 20: the windows and the
    guard are checked again against 20, and the guard's decision step is placed on 20."""
    bank = ConceptBank.load(bank_path)
    plan = plan_generation("a scene", sampling=(30, 4.0), bank=bank, policy=SafePolicy(), guard=GuardConfig(),
                           progress=False, keep_images=False)
    assert plan.checked_steps == 30 and plan.guard.steps == 30
    moved = plan.at_steps(20)
    assert moved.checked_steps == 20 and moved.guard.steps == 20 and moved.guard.step == 4
    assert plan.at_steps(30) is plan
    assert generate_planned(world, plan).count == 1


@pytest.mark.parametrize("args, fragment", [
    (("--steps", "0"), "--steps"),
    (("--window", "0.96,1", "--steps", "4"), "--window"),
    (("--guard", "learned", "--guard-step", "4", "--steps", "4"), "not one of the run's 4 steps"),
    (("--num-images", "0"), "--num-images"),
])
def test_the_plan_refuses_before_the_model_loads(bank_path, tmp_path, monkeypatch, args, fragment):
    import hsteer.model

    monkeypatch.setattr(hsteer.model, "load_quietly", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "out"
    assert_handled(cli("generate", "--prompt", "a scene", "--bank", bank_path, "--fair", "shape", *args, "--out",
                       out), fragment)
    assert not out.exists()


def test_only_a_plan_runs(world):
    from hsteer.errors import HsteerError

    with pytest.raises(HsteerError, match="plan must be a GenerationPlan, made by hsteer.generation.plan_generation"):
        generate_planned(world, {"prompts": ["a scene"]})


@pytest.mark.parametrize("sampling", [None, "20", (20,), (0, 4.0), (20.5, 4.0), (True, 4.0), (20, float("nan")),
                                      (20, "4")])
def test_a_plan_needs_the_models_sampling_as_a_pair(sampling):
    from hsteer.errors import HsteerError

    with pytest.raises(HsteerError, match=r"sampling must be the model's \(steps, guidance\)"):
        plan_generation("a scene", sampling=sampling)
