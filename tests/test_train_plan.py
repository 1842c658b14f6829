"""A training run is checked once, at the API edge, and its site resolved once (`hsteer.training.plan`): the
trainers run on the plan and neither re-validate the config nor resolve the site again."""

import dataclasses
import sys

import pytest
import torch

from hsteer.errors import HsteerError
from hsteer.model import sites
from hsteer.training import TrainConfig, train_concept, train_into_bank
from hsteer.training.config import TrainConfig as SharedConfig
from hsteer.training.group import train_group
from hsteer.training.plan import TrainPlan, plan_training
from hsteer.training.run import train_group_into_bank


def _config(**kw):
    base = dict(concept="woman", group="gender", neutral="a photo of a person", target="a woman", iterations=2,
                batch_size=2, steps=4, lr=0.05, seed=0)
    base.update(kw)
    return TrainConfig.for_objective(base.pop("objective", "codsma"), **base)


@pytest.fixture()
def counts(monkeypatch):
    """Counts of `site_for` calls (wherever hsteer imported it) and of config validations."""
    seen = {"site_for": 0, "validate": 0}
    real_site_for, real_validate = sites.site_for, SharedConfig.validate

    def counting_site_for(*args, **kwargs):
        seen["site_for"] += 1
        return real_site_for(*args, **kwargs)

    def counting_validate(self):
        seen["validate"] += 1
        return real_validate(self)

    for name, module in list(sys.modules.items()):
        if name.startswith("hsteer") and getattr(module, "site_for", None) is real_site_for:
            monkeypatch.setattr(module, "site_for", counting_site_for)
    monkeypatch.setattr(SharedConfig, "validate", counting_validate)
    return seen


@pytest.mark.parametrize("objective,site", [("codsma", None), ("respodiff", "mid_block,text"), ("sdisc", None)])
def test_one_run_validates_once_and_resolves_its_site_once(sd_pipe, counts, tmp_path, objective, site):
    extra = {"sdisc_images": 2, "sdisc_epochs": 1} if objective == "sdisc" else {}
    train_concept(sd_pipe, _config(objective=objective, site=site, **extra), run_dir=tmp_path / "run",
                  progress=False)
    assert counts == {"site_for": 1, "validate": 1}


def test_training_into_a_bank_validates_once_and_resolves_its_site_once(sd_pipe, counts, tmp_path):
    train_into_bank(sd_pipe, _config(), tmp_path / "bank.safetensors", progress=False)
    assert counts == {"site_for": 1, "validate": 1}


def test_a_group_validates_each_concept_once_and_resolves_each_site_once(sd_pipe, counts, tmp_path):
    configs = [_config(concept="man", target="a man"), _config()]
    train_group_into_bank(sd_pipe, configs, tmp_path / "bank.safetensors")
    assert counts == {"site_for": 2, "validate": 2}
    counts.update(site_for=0, validate=0)
    train_group(sd_pipe, configs)
    assert counts == {"site_for": 2, "validate": 2}


def test_the_plan_holds_the_resolved_site_size_and_shape(sd_pipe, tmp_path):
    """A set of sites is bound to its shapes at the run's size; the size is the model's native one when the
    config gives none; the plan is frozen, so no trainer can change what the run was checked for."""
    plan = plan_training(sd_pipe, _config(site="mid_block,text"), run_dir=tmp_path)
    assert isinstance(plan, TrainPlan) and plan.run_dir == tmp_path
    assert (plan.height, plan.width) == (32, 32)
    assert plan.site.spec == "mid_block,text" and plan.site.shapes is not None
    assert plan.shape == (plan.site.size,) and plan.method.name == "codsma"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.height = 64


def test_a_plan_refuses_at_the_edge_with_the_same_errors(sd_pipe):
    """What the trainers no longer check is refused by the plan, before anything runs, with the field."""
    with pytest.raises(HsteerError, match="a U-Net is steered at 'mid_block' or 'text'"):
        plan_training(sd_pipe, _config(site="transformer_blocks.0"))
    with pytest.raises(HsteerError, match="config must be a TrainConfig"):
        plan_training(sd_pipe, None)
    with pytest.raises(HsteerError) as refused:
        plan_training(sd_pipe, _config(neutral=" "))
    assert refused.value.fields == ("neutral",)


def test_a_trainer_runs_on_the_plan_it_is_given(sd_pipe, counts):
    """`train_concept` and a trainer given the same plan give the same tensors: the plan is all it reads."""
    config = _config()
    plan = plan_training(sd_pipe, config)
    counts.update(site_for=0, validate=0)
    direct = plan.method.trainer(sd_pipe, plan, progress=False)
    assert counts == {"site_for": 0, "validate": 0}
    assert torch.equal(direct.concept.tensors["c"], train_concept(sd_pipe, config, progress=False).concept.tensors["c"])
