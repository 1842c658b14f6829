"""Group training (hsteer.training.group): one pool and one U-Net pass for a group's concepts."""

import pytest
import torch

from hsteer.errors import HsteerError
from hsteer.training import CodsmaConfig, RespoDiffConfig
from hsteer.training.group import GroupRun, check_group, train_group

PAIRS = {"man": (("a person", "a man"), ("a doctor", "a man doctor")),
         "woman": (("a person", "a woman"), ("a doctor", "a woman doctor"))}


def _config(name: str, **over) -> CodsmaConfig:
    settings = dict(concept=name, group="gender", neutral="a person", pairs=PAIRS[name], iterations=3, batch_size=4,
                    steps=6, lr=0.1, seed=0, window=(0.34, 1.0))
    return CodsmaConfig(**{**settings, **over})


def test_a_concept_trains_the_same_in_a_group_as_alone(sd_pipe):
    """Each row carries its own concept and each concept's loss is its own rows': in a group of two, a concept
    ends where it ends trained alone on the same seed (same pool noise), up to float summation order."""
    together = train_group(sd_pipe, [_config("man"), _config("woman")])
    alone = train_group(sd_pipe, [_config("man")])
    a, b = together[0].concept.tensors["c"], alone[0].concept.tensors["c"]
    assert a.abs().max() > 0.05  # it moved (3 Adam steps at lr 0.1)
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, together[1].concept.tensors["c"], atol=1e-3)  # the other concept learned its own
    assert together[0].seconds == together[1].seconds > 0 and len(together[0].losses) == 3
    assert together[1].concept.meta["trained_with"] == "group"


def test_continuing_a_run_is_exact_and_its_trajectories_stay_in_the_window(sd_pipe):
    configs = [_config("man", iterations=8), _config("woman", iterations=8)]
    stepped = GroupRun(sd_pipe, configs)
    for n in (2, 5, 8):
        stepped.run(n)
        first, end = stepped.first, stepped.end
        assert bool(((stepped.k >= first) & (stepped.k < end)).all())  # every row is a training signal
    assert (first, end) == (3, 6)  # ceil(0.34 * 6) = 3; 8 iterations over a 3-step window restarted slots
    once = GroupRun(sd_pipe, configs)
    once.run(8)
    for x, y in zip(stepped.concepts(), once.concepts()):
        assert torch.equal(x.tensors["c"], y.tensors["c"])
    assert stepped.seconds > 0 and len(stepped.rows) == 8


def test_a_group_must_share_its_trajectories():
    man = _config("man")
    with pytest.raises(HsteerError, match="differ in window"):
        check_group([man, _config("woman", window=(0.5, 1.0))])
    with pytest.raises(HsteerError, match="differ in steps"):
        check_group([man, _config("woman", steps=8)])
    with pytest.raises(HsteerError, match="neutral prompts row by row"):
        check_group([man, _config("woman", pairs=(("a doctor", "a woman doctor"), ("a person", "a woman")))])
    with pytest.raises(HsteerError, match="distinct names"):
        check_group([man, _config("man")])
    with pytest.raises(HsteerError, match="codsma objective"):
        check_group([RespoDiffConfig(concept="w", group="gender", neutral="a person", target="a woman")])
    with pytest.raises(HsteerError, match="fast-mode"):
        check_group([_config("man", mode="reference")])
    with pytest.raises(HsteerError, match="same number of iterations"):
        train_group(None, [man, _config("woman", iterations=5)])


def test_a_checkpointed_group_run_resumes_exactly(sd_pipe, tmp_path):
    """Checkpoints every 2 iterations; a run stopped at 3 and resumed to 5 ends where an unbroken run of 5
    ends (concepts, Adam states and the pool are all in the file)."""
    whole = train_group(sd_pipe, [_config("man", iterations=5), _config("woman", iterations=5)])
    train_group(sd_pipe, [_config("man", iterations=3), _config("woman", iterations=3)], run_dir=tmp_path,
                checkpoint_every=2)
    assert (tmp_path / "group_checkpoint.safetensors").is_file()
    resumed = train_group(sd_pipe, [_config("man", iterations=5), _config("woman", iterations=5)],
                          run_dir=tmp_path, resume=True, checkpoint_every=2)
    assert resumed[0].resumed_from == 3 and len(resumed[0].losses) == 5
    for a, b in zip(whole, resumed):
        assert torch.equal(a.concept.tensors["c"], b.concept.tensors["c"])
    with pytest.raises(HsteerError, match="other concepts or settings"):
        train_group(sd_pipe, [_config("man", iterations=6, lr=0.2), _config("woman", iterations=6, lr=0.2)],
                    run_dir=tmp_path, resume=True)


def test_group_training_refuses_another_site(sd_pipe):
    with pytest.raises(HsteerError, match="mid-block"):
        check_group([_config("man", site="text"), _config("woman", site="text")])
