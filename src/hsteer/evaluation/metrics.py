"""Bias metrics of docs/methods.md §5."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence


def distribution(labels: Sequence[str], classes: Sequence[str]) -> dict[str, float]:
    """Share of each class among `labels` (classes absent from labels get 0)."""
    if not labels:
        raise ValueError("no labels to summarise")
    counts = Counter(labels)
    return {c: counts.get(c, 0) / len(labels) for c in classes}


def deviation_ratio(labels: Sequence[str], classes: Sequence[str]) -> float:
    """Delta = max_c | N_c / N - 1/C | / (1 - 1/C): 0 for a uniform spread, 1 when one class takes all."""
    return deviation_of_shares(distribution(labels, classes))


def deviation_of_shares(shares: Mapping[str, float]) -> float:
    """The deviation ratio of a distribution given as class -> share (e.g. a planted bias)."""
    if len(shares) < 2:
        raise ValueError("the deviation ratio needs at least two classes")
    uniform = 1 / len(shares)
    return max(abs(share - uniform) for share in shares.values()) / (1 - uniform)


def summarize_bias(labels_by_setting: Mapping[str, Mapping[str, Sequence[str]]],
                   attributes: Mapping[str, Sequence[str]]) -> dict:
    """Per setting (e.g. profession) and attribute group: distribution and deviation ratio; plus the means.

    labels_by_setting: setting -> group -> labels of that setting's images.
    Returns {"per_setting": {setting: {group: {"distribution", "deviation_ratio", "n"}}},
             "mean_deviation_ratio": {group: mean over settings}}.
    """
    per_setting: dict[str, dict] = {}
    for setting, groups in labels_by_setting.items():
        per_setting[setting] = {}
        for group, classes in attributes.items():
            labels = list(groups[group])
            per_setting[setting][group] = {"distribution": distribution(labels, classes),
                                           "deviation_ratio": deviation_ratio(labels, classes), "n": len(labels)}
    means = {}
    for group in attributes:
        values = [per_setting[s][group]["deviation_ratio"] for s in per_setting]
        means[group] = sum(values) / len(values) if values else float("nan")
    return {"per_setting": per_setting, "mean_deviation_ratio": means}


def joint_distribution(labels_a: Sequence[str], labels_b: Sequence[str], classes_a: Sequence[str],
                       classes_b: Sequence[str]) -> dict[str, float]:
    """Share of each (a, b) pair, keyed "a|b": composition of two groups (e.g. gender x race)."""
    pairs = [f"{a}|{b}" for a, b in zip(labels_a, labels_b)]
    return distribution(pairs, [f"{a}|{b}" for a in classes_a for b in classes_b])


def labels_by_setting(items: Sequence[Mapping[str, str]], setting_key: str, groups: Sequence[str],
                      settings: Sequence[str] = ()) -> dict[str, dict[str, list[str]]]:
    """Per-image label dicts -> setting -> group -> labels (the input of `summarize_bias`).

    Settings come in the order of `settings`, then in order of first appearance.
    """
    out: dict[str, dict[str, list[str]]] = {s: {g: [] for g in groups} for s in settings}
    for item in items:
        entry = out.setdefault(item[setting_key], {g: [] for g in groups})
        for group in groups:
            entry[group].append(item[group])
    return out
