import pytest

from hsteer.evaluation.metrics import deviation_ratio, distribution, joint_distribution, summarize_bias


def test_deviation_ratio_extremes_and_known_values():
    assert deviation_ratio(["a", "b"] * 5, ["a", "b"]) == 0
    assert deviation_ratio(["a"] * 10, ["a", "b"]) == 1
    assert deviation_ratio(["a"] * 10, ["a", "b", "c"]) == pytest.approx(1)
    # 85% / 15%: |0.85 - 0.5| / 0.5 = 0.7
    assert deviation_ratio(["a"] * 17 + ["b"] * 3, ["a", "b"]) == pytest.approx(0.7)
    # 3 classes, 50/25/25: |0.5 - 1/3| / (2/3) = 0.25
    assert deviation_ratio(["r", "r", "g", "b"], ["r", "g", "b"]) == pytest.approx(0.25)


def test_distribution_and_errors():
    assert distribution(["a", "a", "b", "x"], ["a", "b"]) == {"a": 0.5, "b": 0.25}
    with pytest.raises(ValueError):
        distribution([], ["a"])
    with pytest.raises(ValueError):
        deviation_ratio(["a"], ["a"])


def test_summary_means_and_joint():
    out = summarize_bias({"doctor": {"g": ["m"] * 4}, "nurse": {"g": ["m", "w"] * 2}}, {"g": ["m", "w"]})
    assert out["per_setting"]["doctor"]["g"]["deviation_ratio"] == 1
    assert out["mean_deviation_ratio"]["g"] == 0.5
    joint = joint_distribution(["m", "w"], ["r", "r"], ["m", "w"], ["r", "g"])
    assert joint == {"m|r": 0.5, "m|g": 0, "w|r": 0.5, "w|g": 0}
