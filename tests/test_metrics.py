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
    # a share's interval is Wilson's: 7 of 10 gives [0.397, 0.892]
    assert (round(lo, 3), round(hi, 3)) == (0.397, 0.892)
    dev = deviation_statistic(["a"] * 7 + ["b"] * 3, ["a", "b"])
    assert a.interval(dev) == b.interval(dev)


def test_constant_data():
    """Every image agrees: the share's interval still says how little 8 images prove; a deviation ratio
    that no resample can move keeps its value."""
    boot = Bootstrap(["x"] * 8)
    lo, hi = boot.interval(share_statistic([1] * 8))
    assert (round(lo, 3), hi) == (0.676, 1.0)
    assert boot.interval(share_statistic([0] * 8))[0] == 0.0
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
    assert lo < 0.5 < hi  # nurse's resamples can only move away from 50/50: symmetric, not above the point
    only = deviation_statistic(labels, ["a", "b"], settings, only=["doctor"])
    assert boot.interval(only) == [1.0, 1.0]


def test_paired_difference_uses_one_draw():
    a, b = share_statistic([1, 0, 1, 0]), share_statistic([1, 0, 1, 0])
    assert Bootstrap(["x"] * 4).interval(difference(a, b)) == [0.0, 0.0]  # identical images: no change, ever
    assert np.isclose(Bootstrap(["x"] * 4).point(difference(share_statistic([1] * 4), b)), 0.5)


# --- intervals hold their estimate ---------------------------------------------------------------------


def _percentile(boot, statistic):
    """The plain percentile interval, for contrast."""
    values = statistic(boot.indices)
    return list(np.percentile(values, [2.5, 97.5]))


def test_a_biased_statistic_keeps_its_estimate_inside():
    """A deviation ratio is a maximum of absolute deviations: resampling pushes it up, so its percentile
    interval can lie wholly above it. Eight images over three colours (3, 3, 2) in each of four settings."""
    settings = [f"profession {k}" for k in range(4) for _ in range(8)]
    labels = (["red"] * 3 + ["green"] * 3 + ["blue"] * 2) * 4
    boot = Bootstrap(settings)
    stat = deviation_statistic(labels, ["red", "green", "blue"], settings)
    point = boot.point(stat)
    assert point == pytest.approx(0.125)
    old = _percentile(boot, stat)
    assert old[0] > point + 0.05  # the defect: 0.125 [0.188, 0.469]
    lo, hi = boot.interval(stat)
    assert lo <= point <= hi and lo == 0.0 and hi == pytest.approx(old[1], abs=0.01)


def _samples(rng):
    """Small and degenerate labelled samples: 1-12 images per setting, 1-3 settings, 2-3 classes, labels
    drawn from skewed, uniform and one-class distributions, strata by setting or by (setting, concept)."""
    for _ in range(300):
        classes = ["a", "b", "c"][: rng.integers(2, 4)]
        settings = [f"s{k}" for k in range(rng.integers(1, 4)) for _ in range(rng.integers(1, 13))]
        skew = rng.dirichlet(np.ones(len(classes)) * rng.choice([0.2, 1.0, 50.0]))
        if rng.random() < 0.2:
            skew = np.eye(len(classes))[0]  # all equal
        labels = [str(x) for x in rng.choice(classes, size=len(settings), p=skew)]
        plain = [str(x) for x in rng.choice(classes, size=len(settings), p=skew)]
        concepts = [str(x) for x in rng.choice(["c1", "c2"], size=len(settings))]
        strata = list(zip(settings, concepts)) if rng.random() < 0.5 else settings
        yield classes, settings, labels, plain, strata


def test_every_interval_holds_its_estimate_on_small_and_degenerate_samples():
    rng = np.random.default_rng(7)
    checked = 0
    for classes, settings, labels, plain, strata in _samples(rng):
        boot = Bootstrap(strata, resamples=200)
        ours, theirs = deviation_statistic(labels, classes, settings), deviation_statistic(plain, classes, settings)
        stats = {"deviation ratio (mean over settings)": ours,
                 "deviation ratio (one setting)": deviation_statistic(labels, classes, settings, [settings[0]]),
                 "agreement": share_statistic([x == y for x, y in zip(labels, plain)]),
                 "share of a": share_statistic([x == "a" for x in labels]),
                 "deviation ratio change": difference(ours, theirs),
                 "agreement change": difference(share_statistic([x == "a" for x in labels]),
                                                share_statistic([y == "a" for y in plain]))}
        for name, stat in stats.items():
            point = boot.point(stat)
            lo, hi = boot.interval(stat)
            assert lo <= point + 1e-12 and point - 1e-12 <= hi, (name, labels, plain, strata, point, lo, hi)
            low, high = stat.bounds
            assert low <= lo and hi <= high, (name, lo, hi)
            checked += 1
    assert checked == 1800
