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


# --- leakage and intervals (docs/methods.md §8) -------------------------------------------------------

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def agreement(steered: Sequence[str], plain: Sequence[str]) -> float:
    """Same-seed agreement: the share of image pairs (steered, plain of the same seed) with the same label."""
    if len(steered) != len(plain):
        raise ValueError(f"{len(steered)} steered labels against {len(plain)} plain ones")
    if not steered:
        raise ValueError("no labels to compare")
    return sum(a == b for a, b in zip(steered, plain)) / len(steered)


def deviation_ratio_change(steered: Sequence[str], plain: Sequence[str], classes: Sequence[str]) -> float:
    """The steered images' deviation ratio minus the plain images' (positive: the attribute got more skewed)."""
    return deviation_ratio(steered, classes) - deviation_ratio(plain, classes)


class Bootstrap:
    """95% intervals that always hold their own estimate, from one bootstrap draw shared by every statistic.

    `strata[i]` is image i's stratum (e.g. (profession, drawn concept)): each resample draws, with
    replacement, as many images from each stratum as it holds, so balanced designs stay balanced and
    per-stratum means (over professions) keep their composition. Paired statistics (agreement, change
    against plain) index the steered and the plain arrays with the same draw. The RNG seed is fixed, so a
    report repeats exactly.

    The interval suits the statistic (`interval`): a share (agreement, fidelity, harm rate) gets its
    Wilson score interval; any other statistic (a deviation ratio, a mean of them, a paired change) the
    symmetric bootstrap interval, the estimate plus or minus the `level` quantile of its resamples'
    distance from it, clipped to the statistic's range. A percentile interval would not do: a deviation
    ratio is a maximum of absolute deviations, so resampling noise only ever pushes it up, and its
    percentile interval can lie wholly above the estimate (0.500 [0.542, 0.792]).
    """

    def __init__(self, strata: Sequence, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = 0.95) -> None:
        import numpy as np

        if not strata:
            raise ValueError("no images to resample")
        self.level = level
        rng = np.random.default_rng(seed)
        members: dict = {}
        for n, key in enumerate(strata):
            members.setdefault(key, []).append(n)
        self.indices = np.empty((resamples, len(strata)), dtype=np.int64)
        for positions in members.values():
            pos = np.asarray(positions)
            self.indices[:, pos] = pos[rng.integers(0, len(pos), size=(resamples, len(pos)))]
        self.size = len(strata)

    def interval(self, statistic) -> list[float]:
        """[lo, hi], with lo <= `point(statistic)` <= hi: Wilson for a share, else symmetric bootstrap.

        statistic: (R, n) index array -> R values (vectorised; see `share_statistic`, `deviation_statistic`).
        """
        import numpy as np

        point = self.point(statistic)
        if not np.isfinite(point):
            return [float("nan"), float("nan")]
        flags = getattr(statistic, "flags", None)
        if flags is not None:
            return wilson_interval(float(np.sum(flags)), len(flags), self.level)
        values = np.asarray(statistic(self.indices), dtype=float)
        distance = np.abs(values[np.isfinite(values)] - point)
        reach = float(np.quantile(distance, self.level)) if distance.size else 0.0
        low, high = getattr(statistic, "bounds", (-np.inf, np.inf))
        return [float(max(low, min(point, point - reach))), float(min(high, max(point, point + reach)))]

    def point(self, statistic) -> float:
        """The statistic on the images as they are (the identity resample)."""
        import numpy as np

        return float(np.asarray(statistic(np.arange(self.size)[None, :]))[0])


def wilson_interval(successes: float, n: int, level: float = 0.95) -> list[float]:
    """The Wilson score interval of a share `successes / n`: it holds the share itself, and is not a
    single point when every image agrees (8 of 8 gives [0.676, 1])."""
    import math
    from statistics import NormalDist

    if n <= 0:
        return [float("nan"), float("nan")]
    share = successes / n
    z = NormalDist().inv_cdf(0.5 + level / 2)
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, min(share, centre - half)), min(1.0, max(share, centre + half))]


def share_statistic(flags: Sequence[bool]):
    """Resamples -> share of True among `flags` (agreement, fidelity, harm rate); its interval is Wilson's."""
    import numpy as np

    values = np.asarray(flags, dtype=float)

    def statistic(idx):
        return values[idx].mean(axis=1)

    statistic.flags, statistic.bounds = values, (0.0, 1.0)
    return statistic


def deviation_statistic(labels: Sequence[str], classes: Sequence[str], settings: Sequence | None = None,
                        only: Sequence | None = None):
    """Resamples -> deviation ratio of `labels`; with `settings` (one per image), its mean over the settings
    (over those in `only`, if given). The bootstrap's strata must nest within the settings.

    Labels outside `classes` count in N but in no class, as in `distribution`.
    """
    import numpy as np

    code = {c: n for n, c in enumerate(classes)}
    onehot = np.zeros((len(labels), len(classes)))
    for n, label in enumerate(labels):
        if label in code:
            onehot[n, code[label]] = 1.0
    keys = list(settings) if settings is not None else [None] * len(labels)
    chosen = [k for k in dict.fromkeys(keys) if only is None or k in set(only)]
    if not chosen:
        raise ValueError("no images in the chosen settings")
    columns = [np.asarray([n for n, k in enumerate(keys) if k == key]) for key in chosen]
    uniform = 1 / len(classes)

    def statistic(idx):
        ratios = []
        for cols in columns:
            shares = onehot[idx[:, cols]].mean(axis=1)  # (R, C); a setting's images stay its own
            ratios.append(np.abs(shares - uniform).max(axis=1) / (1 - uniform))
        return np.mean(ratios, axis=0)

    statistic.bounds = (0.0, 1.0)
    return statistic


def difference(a, b):
    """Resamples -> statistic a minus statistic b on the same draw (paired: e.g. steered minus plain)."""
    import numpy as np

    def statistic(idx):
        return a(idx) - b(idx)

    (a_low, a_high), (b_low, b_high) = (getattr(s, "bounds", (-np.inf, np.inf)) for s in (a, b))
    statistic.bounds = (a_low - b_high, a_high - b_low)
    return statistic
