"""The training benchmark: time to a fixed quality, per procedure, over seeds and learning rates.

`benchmarks/run.py` runs it (`bench_training`); `train_ideas.py` and `gauss_newton.py` time their ideas with
the same `QualityProbe` and curves. The quality, the arms and the keys are described in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

#: The professions whose planted bias is in shape: the targeted attribute of the training benchmark.
def _shape_professions() -> tuple[str, ...]:
    from hsteer.world import scene

    return tuple(p for p, group in scene.BIASED_PAIRS if group == "shape")


def _quality(summary: dict) -> dict[str, float]:
    """What the training benchmark reads of a fair-over-shape bank, each with its 95% interval: the targeted
    deviation ratio (shape); the untargeted attributes against the plain images of the same seeds: colour's
    same-seed agreement and the change of its deviation ratio (distribution shift), and profession fidelity."""
    untargeted = summary.get("untargeted", {})
    colour, profession = untargeted.get("colour", {}), untargeted.get("profession", {})
    return {"deviation_ratio": summary["deviation_ratio"]["mean_all"]["shape"],
            "deviation_ratio_ci": summary.get("deviation_ratio_ci", {}).get("mean_all", {}).get("shape"),
            "colour_agreement": colour.get("agreement"),
            "colour_agreement_ci": colour.get("agreement_ci"),
            "colour_deviation_change": colour.get("deviation_ratio_change"),
            "colour_deviation_change_ci": colour.get("deviation_ratio_change_ci"),
            "fidelity": summary["fidelity"]["mean"],
            "fidelity_change_ci": profession.get("fidelity_change_ci")}


def _bootstrap_median_ratio(numerators: list[float], denominators: list[float], resamples: int = 2000,
                            seed: int = 0) -> tuple[float, float, float]:
    """Median of per-seed ratios and a percentile 95% interval, resampling the seeds with replacement."""
    import random

    ratios = [a / b for a, b in zip(numerators, denominators)]
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return statistics.median(ratios), medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


class QualityProbe:
    """The training benchmark's quality: fair generation over shape on the shape-biased professions, against
    the plain images of the same seeds (made once); `meets` is the fixed quality both modes are timed to."""

    def __init__(self, pipe, images: int, threshold: float = 0.05, agreement_target: float | None = 0.90) -> None:
        from hsteer.world.evaluate import WorldEvalConfig, evaluate_world
        from hsteer.policies import PlainPolicy
        from hsteer.model import sampling_defaults

        sampling = sampling_defaults(getattr(pipe, "_hsteer_model", None))
        self.pipe, self.threshold, self.agreement_target = pipe, threshold, agreement_target
        self.config = WorldEvalConfig(professions=_shape_professions(), templates=("a photo of a {}",),
                                      images_per_prompt=images, harm_prompts=(), steps=int(sampling["steps"]),
                                      guidance=float(sampling["guidance"]), groups=("shape", "colour"))
        self.plain = evaluate_world(pipe, self.config, policy=PlainPolicy(), progress=False)

    def __call__(self, concepts) -> dict:
        from hsteer.world.evaluate import evaluate_world
        from hsteer.policies import FairPolicy
        from hsteer.steering.bank import ConceptBank

        result = evaluate_world(self.pipe, self.config, bank=ConceptBank(concepts=concepts),
                                policy=FairPolicy(("shape",)), baseline=self.plain, progress=False)
        return _quality(result.summary)

    def meets(self, q: dict) -> bool:
        return q["deviation_ratio"] <= self.threshold and (
            self.agreement_target is None or (q["colour_agreement"] or 0.0) >= self.agreement_target)


def _check_milestones(milestones, step: int) -> None:
    if any(m % step for m in milestones):
        raise ValueError(f"milestones {tuple(milestones)} must be multiples of step {step}")


def training_curve(pipe, probe: QualityProbe, mode: str, milestones: list[int], seed: int, workdir: Path,
                   step: int | None = None, budget: float | None = None, **extra) -> list[dict]:
    """Train the world recipe's circle and square, evaluating at `milestones` until the quality is met, then
    bisect: the first `step`-multiple that meets it. Seconds are training time only.

    Training continues in increments of `step` iterations (exactly as one run: resuming is exact), keeping
    the concepts at each; once a milestone meets the quality, the kept concepts between the last milestone
    that did not and this one are evaluated by bisection (the quality is taken as monotone there). So the
    time to the quality is resolved to `step` iterations for the cost of a few evaluations. `mode` "group":
    both concepts trained together (`hsteer.training.group`).
    `budget`: stop, unmet, once training has taken longer (a sweep's arm slower than its best so far).
    `extra`: settings over the recipe's. Returns the evaluated points in order of iterations.
    """
    step = step or milestones[0]
    _check_milestones(milestones, step)
    advance = (_group_trainer(pipe, seed, max(milestones), **extra) if mode == "group"
               else _concept_trainer(pipe, mode, seed, workdir, step, **extra))
    kept, points, done, last_failed = {}, {}, 0, 0

    def evaluate(m: int) -> bool:
        points[m] = {"iterations": m, "seconds": kept[m][0], **probe(kept[m][1])}
        return probe.meets(points[m])

    for m in milestones:
        for target in range(done + step, m + 1, step):
            kept[target], done = advance(target), target
            if budget is not None and kept[target][0] > budget:  # slower than the best: not worth evaluating
                return [points[k] for k in sorted(points)]
        if evaluate(m):
            between = [k for k in sorted(kept) if last_failed < k < m]
            while between:
                middle = between[len(between) // 2]
                met = evaluate(middle)
                between = [k for k in between if (k < middle if met else k > middle)]
            break
        last_failed = m
    return [points[m] for m in sorted(points)]


def _concept_trainer(pipe, mode: str, seed: int, workdir: Path, step: int, **extra):
    """advance(n) -> (training seconds so far, [circle, square] at n): each concept resumed from its checkpoint."""
    from hsteer.apps.recipes import world_train_config
    from hsteer.training import train_concept

    tag = "-".join(f"{k}{v}" for k, v in sorted(extra.items()))
    total = {"seconds": 0.0}

    def advance(target: int):
        concepts = []
        for name in ("circle", "square"):
            config = world_train_config(name, target, seed, mode=mode, **extra)
            result = train_concept(pipe, config, run_dir=workdir / f"{mode}{tag}-{seed}" / name, resume=True,
                                   checkpoint_every=step, progress=False)
            total["seconds"] += result.seconds
            concepts.append(result.concept)
        return total["seconds"], concepts

    return advance


def _group_trainer(pipe, seed: int, iterations: int, **extra):
    """advance(n) -> (training seconds so far, [circle, square] at n): one in-memory group run, continued."""
    from hsteer.apps.recipes import world_train_config
    from hsteer.training.group import GroupRun

    configs = [world_train_config(name, iterations, seed, mode="fast", **extra) for name in ("circle", "square")]
    run = GroupRun(pipe, configs)

    def advance(target: int):
        run.run(target)
        return run.seconds, run.concepts()

    return advance


def reached_point(probe: QualityProbe, points: list[dict]) -> dict | None:
    """The first evaluated point that meets the quality (None: none did)."""
    return next((p for p in points if probe.meets(p)), None)


def seconds_to_reach(probe: QualityProbe, points: list[dict]) -> float | None:
    point = reached_point(probe, points)
    return None if point is None else point["seconds"]


@dataclass(frozen=True)
class Arm:
    """One procedure of the training benchmark: its mode, its settings over the world recipe's, and where its
    curve is evaluated (`milestones`, then bisected down to `step` iterations: `training_curve`)."""

    mode: str
    settings: dict = field(default_factory=dict)
    milestones: tuple[int, ...] = ()
    step: int = 1

    def __post_init__(self) -> None:  # fail at once, not after the generation benchmarks
        _check_milestones(self.milestones, self.step)

    def smoke(self) -> Arm:
        """The same procedure at smoke sizes (CI): evaluated after 1 and 2 iterations."""
        return replace(self, milestones=(1, 2), step=1)

    def curve(self, pipe, probe: QualityProbe, seed: int, workdir: Path, budget: float | None = None) -> list[dict]:
        """This arm's `training_curve` at `seed` (stopped unmet past `budget` training seconds)."""
        return training_curve(pipe, probe, self.mode, list(self.milestones), seed, workdir, self.step, budget,
                              **self.settings)


#: The recipe's learning rate (both modes in the demo), and the fast mode's in this benchmark: Adam's
#: square-root rule scales the step with the batch's gradient noise, lr x sqrt(batch / 1) for the fast
#: mode's batch of 9 (3 pairs x 3) against the reference's batch of 1.
RECIPE_LR = 0.05
FAST_LR = 0.15  # = RECIPE_LR * sqrt(9)

#: The full benchmark's arms. "reference": the papers' procedure (batch 1, a fresh reverse process per
#: sample) at the recipe's learning rate; "fast": the fast mode at its batch-scaled one; "reference_fast_lr":
#: the reference at the fast mode's rate too, so that what the learning rate alone buys is measured.
ARMS = {"reference": Arm("reference", {"batch_size": 1}, (50, 100, 150, 200, 300), 25),
        "fast": Arm("fast", {"lr": FAST_LR}, (4, 8, 12, 20, 30, 48), 2),
        "reference_fast_lr": Arm("reference", {"batch_size": 1, "lr": FAST_LR}, (10, 20, 30, 45, 60, 90), 5)}
QUICK_ARMS = {name: replace(arm.smoke(), milestones=(2, 4)) if name == "reference" else arm.smoke()
              for name, arm in ARMS.items()}


def _rate_arm(mode: str, lr: float) -> Arm:
    """One procedure at one learning rate, with milestones and a bisection step sized to the iterations it
    needs there (about 1/lr: a coordinate of c moves by at most about lr per Adam step). From lr 0.3 up a
    procedure may meet the quality within a handful of iterations, so it is resolved to single iterations."""
    if mode == "reference":
        shape = {0.05: ((50, 100, 150, 200, 300), 25), 0.1: ((25, 50, 100, 150), 5)}
        milestones, step = shape.get(lr, ((3, 6, 10, 15, 20, 30, 45), 1) if lr >= 0.3
                                     else ((10, 20, 30, 45, 60, 90), 5))
        return Arm(mode, {"batch_size": 1, "lr": lr}, milestones, step)
    if mode == "group":  # in memory: every iteration is kept, so the bisection resolves single iterations
        return Arm(mode, {"lr": lr}, (1, 2, 4, 6, 8, 12, 20, 30, 48) if lr >= 0.15 else (6, 12, 18, 30, 45, 60, 90), 1)
    shape = {0.05: ((10, 20, 30, 45, 60, 90), 5), 0.1: ((6, 12, 18, 30, 45), 3)}
    milestones, step = shape.get(lr, ((1, 2, 4, 6, 8, 12, 20, 30, 48), 1) if lr >= 0.3 else ((4, 8, 12, 20, 30, 48), 2))
    return Arm(mode, {"lr": lr}, milestones, step)


#: The learning-rate sweeps of `train_speedup_best`: each procedure at every rate, in the order tried
#: (`_sweep`: a rate that meets the quality on every seed first, so that the best median is finite early
#: and the rates after it are stopped there). The issue asked for 0.05-0.3; 0.45, 0.6 and 0.9 were added for
#: both procedures after the reference met the quality in 3 iterations at 0.6 on one seed (BENCHMARKS.md).
#: The reference's 0.05 and 0.15 and the fast mode's 0.15 are the arms above (their curves are reused).
#: "fast": the fast mode, each concept trained on its own; "group": the group's concepts trained together.
SWEEP_RATES = (0.3, 0.6, 0.45, 0.2, 0.9, 0.15, 0.1, 0.05)
_FIXED = {("reference", 0.15): ARMS["reference_fast_lr"], ("reference", RECIPE_LR): ARMS["reference"],
          ("fast", FAST_LR): ARMS["fast"]}
SWEEPS: dict[str, dict[float, Arm]] = {
    family: {lr: _FIXED.get((family, lr)) or _rate_arm(family, lr) for lr in SWEEP_RATES}
    for family in ("reference", "fast", "group")}
#: Smoke sweeps (CI): the quick arms again where they are the same procedure (reused), and one group rate.
QUICK_SWEEPS = {"reference": {FAST_LR: QUICK_ARMS["reference_fast_lr"], RECIPE_LR: QUICK_ARMS["reference"]},
                "fast": {FAST_LR: QUICK_ARMS["fast"]}, "group": {0.3: SWEEPS["group"][0.3].smoke()}}


class _Curves:
    """Each (seed, arm) trained once: the fixed arms' curves are reused by the sweeps. A curve stopped unmet
    at a budget is trained again when asked for with a larger one (or none)."""

    def __init__(self, pipe, probe: QualityProbe, workdir: Path) -> None:
        self.pipe, self.probe, self.workdir, self.done = pipe, probe, workdir, {}

    def __call__(self, arm: Arm, seed: int, budget: float | None = None) -> list[dict]:
        key = (seed, json.dumps(asdict(arm), sort_keys=True))
        cached = self.done.get(key)
        if cached is not None and (cached[1] is None or reached_point(self.probe, cached[0]) is not None
                                   or (budget is not None and budget <= cached[1])):
            return cached[0]
        tag = f"{arm.mode}-{len(self.done)}-{seed}-{budget}"
        began = time.perf_counter()
        curve = arm.curve(self.pipe, self.probe, seed, self.workdir / tag, budget)
        self.done[key] = (curve, budget)
        reached = reached_point(self.probe, curve)
        print(f"[train bench] {arm.mode} {arm.settings} seed {seed} budget {budget}: "
              f"{'%.2f s' % reached['seconds'] if reached else 'unmet'} after {len(curve)} evaluations "
              f"({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)
        return curve


def _sweep(curves: _Curves, rates: dict[float, Arm], seeds: tuple[int, ...]) -> dict:
    """A procedure's best rate: the lowest median over `seeds` of its seconds to the quality, a seed that
    never meets it counting as infinitely slow (a rate that works on one seed only is not one a user can
    rely on). Two exact prunings keep it affordable: a run is stopped, unmet, once its training time passes
    the best median so far (it is slower than it either way), and a rate is dropped once more than half of
    its seeds are slower than the best median (its median cannot beat it). Returns the sweep's record and
    the best rate's curves by seed."""
    tried, best, best_median = {}, None, math.inf
    majority = len(seeds) // 2 + 1
    for lr, arm in rates.items():
        times: dict[int, float] = {}
        for seed in seeds:
            curve = curves(arm, seed, best_median if math.isfinite(best_median) else None)
            reached = reached_point(curves.probe, curve)
            times[seed] = reached["seconds"] if reached else math.inf
            if sum(t >= best_median for t in times.values()) >= majority:
                break
        median = statistics.median(times.values()) if len(times) == len(seeds) else math.inf
        tried[str(lr)] = {"seconds_by_seed": {str(s): (t if math.isfinite(t) else None) for s, t in times.items()},
                          "median_seconds": median if math.isfinite(median) else None,
                          "dropped": len(times) < len(seeds),
                          "stopped_at_seconds": best_median if math.isfinite(best_median) else None}
        if median < best_median:
            best, best_median = lr, median
    by_seed = {seed: curves(rates[best], seed) for seed in seeds} if best is not None else {}
    return {"rates": tried, "best_lr": best, "best_median_seconds": best_median if best is not None else None,
            "selected_by": f"median over seeds {list(seeds)}"}, by_seed


def _ratio_keys(key: str, runs: list[dict], num: str, den: str) -> dict:
    """`key`, `_low`, `_high`: the median over seeds of num's / den's seconds, with its bootstrap interval."""
    reached = [r for r in runs if r.get(f"{num}_seconds_to_reach") and r.get(f"{den}_seconds_to_reach")]
    median = low = high = 0.0
    if reached:
        median, low, high = _bootstrap_median_ratio([r[f"{num}_seconds_to_reach"] for r in reached],
                                                    [r[f"{den}_seconds_to_reach"] for r in reached])
    return {key: median, f"{key}_low": low, f"{key}_high": high, f"{key}_seeds_reached": len(reached)}


def bench_training(pipe, arms: dict[str, Arm], images: int, workdir: Path, seeds: tuple[int, ...] = (0, 1, 2),
                   threshold: float = 0.05, agreement_target: float | None = 0.90,
                   sweeps: dict[str, dict[float, Arm]] | None = None) -> dict:
    """Time to an equal, fixed quality: the reference procedure vs the fast mode, over several seeds.

    Quality (`QualityProbe`): fair generation over the shape group on the professions with a planted shape
    bias, mean deviation ratio <= `threshold` (and, with `agreement_target`, same-seed colour agreement with
    the plain images >= it). Each arm trains the world recipe's circle and square concepts and is evaluated
    at its milestones, then bisected down to its step (`training_curve`); its time is training time only, up
    to the first point that meets the quality. Speedup per seed = an arm's time / the fast arm's; reported
    as the median over seeds with a bootstrap interval, whose lower end is the headline:
    `train_speedup_equal_quality` (arm "reference") and `train_speedup_equal_lr` (arm "reference_fast_lr").
    With `sweeps` (`SWEEPS`), each procedure at its best learning rate (`_sweep`): `train_speedup_best`
    (the reference / the group trained together), `train_speedup_best_per_concept` (the reference / the fast
    mode one concept at a time). `train_quality`: each arm's quality at that point (its last point where it
    never met it), with the untargeted columns and their intervals.
    """
    probe = QualityProbe(pipe, images, threshold, agreement_target)
    curves = _Curves(pipe, probe, workdir)
    runs = [{"seed": seed} for seed in seeds]
    for run in runs:
        for name, arm in arms.items():
            curve = curves(arm, run["seed"])
            run[f"{name}_curve"], run[f"{name}_seconds_to_reach"] = curve, seconds_to_reach(probe, curve)
    out: dict = {"train_threshold": {"deviation_ratio": threshold, "colour_agreement": agreement_target},
                 "train_arms": {name: asdict(arm) for name, arm in arms.items()}, "train_runs": runs,
                 "eval_images_per_profession": images, "eval_professions": list(probe.config.professions)}
    if "reference" in arms:
        out.update(_ratio_keys("train_speedup_equal_quality", runs, "reference", "fast"))
    if "reference_fast_lr" in arms:
        out.update(_ratio_keys("train_speedup_equal_lr", runs, "reference_fast_lr", "fast"))
    reached = [r for r in runs if r["reference_seconds_to_reach"] and r["fast_seconds_to_reach"]]
    out["train_seeds_reached"] = len(reached)
    out["train_speedup"] = statistics.median(r["reference_curve"][-1]["seconds"] / r["fast_seconds_to_reach"]
                                             for r in reached) if reached else 0.0
    quality = {name: [r[f"{name}_curve"] for r in runs] for name in arms}
    if sweeps:
        out["train_sweep"] = {}
        for family, rates in sweeps.items():
            out["train_sweep"][family], by_seed = _sweep(curves, rates, seeds)
            for run in runs:
                if run["seed"] in by_seed:
                    curve = by_seed[run["seed"]]
                    run[f"{family}_best_curve"] = curve
                    run[f"{family}_best_seconds_to_reach"] = seconds_to_reach(probe, curve)
            if by_seed:
                quality[f"{family}_best"] = list(by_seed.values())
        out.update(_ratio_keys("train_speedup_best", runs, "reference_best", "group_best"))
        _reliable(out, runs, arms)
        out.update(_ratio_keys("train_speedup_best_reliable", runs, "reference_reliable", "group_best"))
        if "fast" in sweeps:  # the per-concept sweep is opt-in (run.py --per-concept-sweep)
            out.update(_ratio_keys("train_speedup_best_per_concept", runs, "reference_best", "fast_best"))
            out.update(_ratio_keys("train_group_speedup", runs, "fast_best", "group_best"))
    out["train_quality"] = {name: _quality_at_reach(probe, c) for name, c in quality.items()}
    return out


def _reliable(out: dict, runs: list[dict], arms: dict[str, Arm]) -> None:
    """The reference's fastest rate (lowest median) among those that met the quality on every seed: the
    fixed arms and every rate of the sweep timed on all seeds. The sweep's best counts a seed that never met
    the quality as infinitely slow, so a rate that lands on the bar by chance on two seeds of three (a batch
    of 1 at a large rate) can still win it; this is the rate a user could rely on. Adds
    `reference_reliable_*` per run and `train_sweep["reference"]["reliable_lr"]`."""
    timed: dict[float, list[float | None]] = {}
    for name in ("reference", "reference_fast_lr"):
        if name in arms:
            timed[arms[name].settings.get("lr", RECIPE_LR)] = [r.get(f"{name}_seconds_to_reach") for r in runs]
    for lr, record in out.get("train_sweep", {}).get("reference", {}).get("rates", {}).items():
        by_seed = record.get("seconds_by_seed", {})
        timed.setdefault(float(lr), [by_seed.get(str(r["seed"])) for r in runs])
    reliable = {lr: statistics.median(t) for lr, t in timed.items() if t and all(t)}
    if not reliable:
        return
    lr = min(reliable, key=reliable.get)
    out.setdefault("train_sweep", {}).setdefault("reference", {})["reliable_lr"] = lr
    for run, seconds in zip(runs, timed[lr]):
        run["reference_reliable_seconds_to_reach"] = seconds


def _quality_at_reach(probe: QualityProbe, curves: list[list[dict]]) -> dict:
    """Median over seeds of an arm's quality where it first met the bar (else its last point), and the worst
    interval ends: the lowest fidelity and colour agreement, the largest colour deviation-ratio change."""
    points = [reached_point(probe, curve) or curve[-1] for curve in curves]
    out = {key: statistics.median(p[key] for p in points)
           for key in ("iterations", "seconds", "deviation_ratio", "colour_agreement", "colour_deviation_change",
                       "fidelity") if all(p.get(key) is not None for p in points)}
    out["fidelity_min"] = min(p["fidelity"] for p in points)
    lows = [p["colour_agreement_ci"][0] for p in points if p.get("colour_agreement_ci")]
    highs = [p["colour_deviation_change_ci"][1] for p in points if p.get("colour_deviation_change_ci")]
    if lows:
        out["colour_agreement_ci_low_min"] = min(lows)
    if highs:
        out["colour_deviation_change_ci_high_max"] = max(highs)
    return out
