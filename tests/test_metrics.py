import numpy as np
import pytest

from hsteer.evaluation.metrics import (Bootstrap, agreement, deviation_ratio, deviation_ratio_change,
                                       deviation_statistic, difference, distribution, joint_distribution,
                                       share_statistic, summarize_bias)


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


# --- leakage and intervals ------------------------------------------------------------------------------



def test_agreement_and_deviation_ratio_change_by_hand():
    assert agreement(["r", "g", "b", "r"], ["r", "r", "b", "g"]) == 0.5
    assert agreement(["r"] * 3, ["r"] * 3) == 1
    with pytest.raises(ValueError):
        agreement(["r"], ["r", "g"])
    # plain 50/50 (0) -> steered 75/25 (0.5): the attribute got more skewed by 0.5
    assert deviation_ratio_change(["a", "a", "a", "b"], ["a", "b", "a", "b"], ["a", "b"]) == pytest.approx(0.5)


def test_bootstrap_is_repeatable_and_brackets_the_point():
    flags = [1] * 7 + [0] * 3
    a, b = Bootstrap(["x"] * 10), Bootstrap(["x"] * 10)
    stat = share_statistic(flags)
    assert a.indices.shape == (1000, 10) and (a.indices == b.indices).all()  # fixed RNG seed
    lo, hi = a.interval(stat)
    assert a.point(stat) == pytest.approx(0.7) and lo <= 0.7 <= hi
    # binomial p = 0.7, n = 10: the 95% percentile interval is about [0.4, 1.0]
    assert 0.3 <= lo <= 0.5 and hi >= 0.9


def test_constant_data_gives_a_point_interval():
    boot = Bootstrap(["x"] * 8)
    assert boot.interval(share_statistic([1] * 8)) == [1.0, 1.0]
    assert boot.interval(deviation_statistic(["a"] * 8, ["a", "b"])) == [1.0, 1.0]


def test_strata_keep_their_composition():
    # Two strata of four: every resample keeps positions 0-3 inside stratum A and 4-7 inside stratum B.
    boot = Bootstrap(["A"] * 4 + ["B"] * 4, resamples=200)
    assert (boot.indices[:, :4] < 4).all() and (boot.indices[:, 4:] >= 4).all()
    # A balanced fair draw (stratum = drawn concept) where the concept decides the label exactly: the
    # resampled share is always 1/2, so the interval collapses; naive resampling would spread it.
    labels = ["circle"] * 4 + ["square"] * 4
    strat = deviation_statistic(labels, ["circle", "square"])
    assert boot.interval(strat) == [0.0, 0.0]
    lo, hi = Bootstrap(["all"] * 8).interval(strat)
    assert hi >= 0.5


def test_mean_over_settings_resamples_within_each_setting():
    # doctor all "a" (ratio 1), nurse half and half (ratio 0): mean 0.5 whatever the resample of doctor.
    labels = ["a"] * 4 + ["a", "b", "a", "b"]
    settings = ["doctor"] * 4 + ["nurse"] * 4
    stat = deviation_statistic(labels, ["a", "b"], settings)
    boot = Bootstrap(settings)
    assert boot.point(stat) == pytest.approx(0.5)
    lo, hi = boot.interval(stat)
    assert lo == pytest.approx(0.5) and hi > 0.5  # nurse's resamples can only move away from 50/50
    only = deviation_statistic(labels, ["a", "b"], settings, only=["doctor"])
    assert boot.interval(only) == [1.0, 1.0]


def test_paired_difference_uses_one_draw():
    a, b = share_statistic([1, 0, 1, 0]), share_statistic([1, 0, 1, 0])
    assert Bootstrap(["x"] * 4).interval(difference(a, b)) == [0.0, 0.0]  # identical images: no change, ever
    assert np.isclose(Bootstrap(["x"] * 4).point(difference(share_statistic([1] * 4), b)), 0.5)
