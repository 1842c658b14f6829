"""Leakage: what a steered run does to the attributes it is not for (docs/methods.md §8), with intervals.

Shared by the bundled world's evaluation and the WinoBias harness. Images are labelled dicts (one per
image: the setting, e.g. profession, each group's label, the prompt, the seed, the concepts drawn). A
steered image is paired with the plain image of the same prompt and seed; every figure gets a 95%
interval that holds it (`metrics.Bootstrap`: Wilson's for a share such as the agreement, a symmetric
bootstrap interval, resampled within (setting, drawn concepts), for a deviation ratio or a change).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hsteer.errors import HsteerError
from hsteer.evaluation.metrics import Bootstrap, deviation_statistic, difference, share_statistic

PAIR_KEYS = ("prompt", "seed")


def concept_names(concepts: Any) -> tuple[str, ...]:
    """The names of an image's concepts, from (name, scale) pairs or manifest dicts {"name", "scale"}."""
    names = []
    for c in concepts or ():
        names.append(c["name"] if isinstance(c, Mapping) else c if isinstance(c, str) else c[0])
    return tuple(sorted(names))


def strata(items: Sequence[Mapping], setting_key: str) -> list[tuple]:
    """Each image's bootstrap stratum: (its setting, the concepts drawn for it)."""
    return [(i[setting_key], concept_names(i.get("concepts"))) for i in items]


def pair_items(steered: Sequence[Mapping], plain: Sequence[Mapping], keys: Sequence[str] = PAIR_KEYS) -> list[Mapping]:
    """The plain image of each steered image (same prompt and seed), in the steered order."""
    by_key = {tuple(p[k] for k in keys): p for p in plain}
    out, missing = [], []
    for item in steered:
        key = tuple(item[k] for k in keys)
        if key in by_key:
            out.append(by_key[key])
        else:
            missing.append(key)
    if missing:
        raise HsteerError(f"the plain baseline lacks {len(missing)} of the run's {len(steered)} images (e.g. "
                          f"{' / '.join(map(str, missing[0]))}); it needs the same prompts and seeds")
    return out


def bias_intervals(items: Sequence[Mapping], attributes: Mapping[str, Sequence[str]], setting_key: str,
                   settings: Sequence[str], extra_means: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                   boot: Bootstrap | None = None) -> dict[str, Any]:
    """95% intervals of each group's deviation ratio: per setting and the mean over all settings.

    extra_means: name -> group -> the settings of another mean (e.g. the professions with a planted bias).
    """
    boot = boot or Bootstrap(strata(items, setting_key))
    keys = [i[setting_key] for i in items]
    out: dict[str, Any] = {"per_profession": {s: {} for s in settings}, "mean_all": {}}
    for group, classes in attributes.items():
        labels = [i[group] for i in items]
        out["mean_all"][group] = boot.interval(deviation_statistic(labels, classes, keys))
        for setting in settings:
            out["per_profession"][setting][group] = boot.interval(deviation_statistic(labels, classes, keys,
                                                                                      [setting]))
    for name, groups in (extra_means or {}).items():
        out[name] = {g: boot.interval(deviation_statistic([i[g] for i in items], attributes[g], keys, chosen))
                     if chosen else None for g, chosen in groups.items()}
    return out


def untargeted_group(steered: Sequence[Mapping], plain: Sequence[Mapping], label_key: str, setting_key: str,
                     classes: Sequence[str] | None = None, boot: Bootstrap | None = None) -> dict[str, Any]:
    """Same-seed agreement of one attribute (and, with `classes`, its deviation ratio against plain).

    Without `classes` the label is read against the setting (the world's profession): fidelity instead.
    steered[i] and plain[i] are images of the same prompt and seed (`pair_items`).
    """
    boot = boot or Bootstrap(strata(steered, setting_key))
    a = [i[label_key] for i in steered]
    b = [p[label_key] for p in plain]
    keys = [i[setting_key] for i in steered]
    agree = share_statistic([x == y for x, y in zip(a, b)])
    entry: dict[str, Any] = {"n": len(a), "agreement": boot.point(agree), "agreement_ci": boot.interval(agree),
                             "agreement_per_profession": {}}
    for setting in dict.fromkeys(keys):
        same = [x == y for x, y, k in zip(a, b, keys) if k == setting]
        entry["agreement_per_profession"][setting] = sum(same) / len(same)
    if classes is not None:
        ours, theirs = deviation_statistic(a, classes, keys), deviation_statistic(b, classes, keys)
        name = "deviation_ratio"
    else:
        ours = share_statistic([x == k for x, k in zip(a, keys)])
        theirs = share_statistic([y == k for y, k in zip(b, keys)])
        name = "fidelity"
    for suffix, stat in (("", ours), ("_plain", theirs), ("_change", difference(ours, theirs))):
        entry[name + suffix] = boot.point(stat)
        entry[name + suffix + "_ci"] = boot.interval(stat)
    return entry


def fmt_ci(value: float | None, ci: Sequence[float] | None, digits: int = 3) -> str:
    """"0.500 [0.420, 0.580]" (or "-" for a missing value)."""
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if not ci:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def targeted_groups(policy, bank=None) -> set[str]:
    """The attribute groups a policy steers (`Policy.targeted_groups`): a fair policy's groups, the safety
    group, or the groups of explicit concepts (read from the bank); none for the plain model."""
    return policy.targeted_groups(bank)


def untargeted_summary(steered: Sequence[Mapping], plain: Sequence[Mapping], groups: Mapping[str, Any],
                       setting_key: str) -> dict[str, dict[str, Any]]:
    """group -> `untargeted_group` entry, for each untargeted group.

    groups: group -> its classes (deviation ratio against plain), or (label_key, None) for a label read
    against the setting (fidelity). `plain` is paired with `steered` here (same prompt and seed).
    """
    paired = pair_items(steered, plain)
    boot = Bootstrap(strata(steered, setting_key))
    out = {}
    for group, spec in groups.items():
        label_key, classes = spec if isinstance(spec, tuple) and len(spec) == 2 and spec[1] is None else (group, spec)
        out[group] = untargeted_group(steered, paired, label_key, setting_key, classes, boot)
    return out
