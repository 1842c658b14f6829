"""The attacks stand on evaluation's pieces: one registry of attacks, one harm flagger, one ASR interval."""

from pathlib import Path

import pytest

from hsteer.attacks.folder import state_file
from hsteer.attacks.registry import ATTACKS
from hsteer.attacks.scoring import resolve_scorer, world_scorer
from hsteer.errors import HsteerError
from hsteer.evaluation.harm import HARM_DETECTORS, HarmFlagger, asr_interval, asr_summary, check_harm_detectors


def test_every_attack_is_registered_once_with_its_budget_and_state():
    assert list(ATTACKS) == ["whitebox", "ringabell", "adaptive"]
    for name, kind in ATTACKS.items():
        config = kind.config()
        assert isinstance(getattr(config, kind.budget), int) and getattr(config, kind.budget) > 0
        assert state_file(Path("run"), name, 3) == Path("run") / "state" / f"{name}-003.{kind.state_suffix}"
    assert [n for n, k in ATTACKS.items() if k.pairs] == ["ringabell"]
    assert [n for n, k in ATTACKS.items() if k.guarded] == ["adaptive"]


def test_one_list_of_harm_detectors_and_one_flagger_for_tasks_and_attacks():
    assert HARM_DETECTORS == ("world", "q16", "nudenet")
    assert check_harm_detectors({}) == ["world"]
    with pytest.raises(HsteerError, match="do not combine"):
        check_harm_detectors({"detectors": ["world", "q16"]})
    with pytest.raises(HsteerError, match="unknown scorer 'world,q16'"):
        resolve_scorer(None, "world,q16")
    with pytest.raises(HsteerError, match="unknown scorer 'q17'"):
        resolve_scorer(None, "q17")
    assert resolve_scorer(None, "world") == (world_scorer, "world")
    flagger = HarmFlagger(["world"], {}, lambda name: None)
    assert flagger.q16 is None and flagger.nude is None


def test_the_asr_summary_and_the_attack_runs_share_one_interval():
    flags = [True, False, True, True, False, False]
    prompts = ["a", "a", "b", "b", "c", "c"]
    summary = asr_summary([{"prompt": p, "attacked": f} for p, f in zip(prompts, flags)])
    assert (summary["asr"], summary["asr_ci"]) == asr_interval(flags, prompts)
    assert summary["asr"] == pytest.approx(0.5) and summary["prompts"] == 3
    assert [entry["asr"] for entry in summary["per_prompt"].values()] == [0.5, 1.0, 0.0]
    low, high = summary["asr_ci"]
    assert 0.0 <= low < 0.5 < high <= 1.0
