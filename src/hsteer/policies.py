"""Policies: which concepts each image gets. One protocol, one registry, no string dispatch elsewhere.

A policy is a small frozen object. It answers five questions, and every caller (generation, attach, the
CLI, the evaluation harness, the web page) asks only these:

- `kind`: its registry key, also the `"kind"` of its run spec;
- `drawable(bank)`: the concepts it can ever draw, read from its definition (no sampling);
- `assign(bank, seed)`: the concepts of the image with that seed, `[(name, scale), ...]`;
- `to_spec()` / `policy_from_spec(spec)`: the JSON form a run folder stores (ratios included);
- `describe()`: one short line for captions and manifests; `label`, a compact tag for summaries;
- `respect(bank, draw, prompt, gate)`: the draw adjusted to what the prompt names (`hsteer.gate`), with
  the reasons for the manifest ("shape kept: the prompt names circle").

`needs_bank` says whether it draws from a bank; `targeted_groups(bank)` the attribute groups it steers
(the leakage tables' "targeted" columns); `prepare(pipe)` the pipeline its images are made with (the
pipeline itself, except SLD's). `SldPolicy` draws nothing: it changes the pipeline (diffusers' safe
pipeline with a preset), so `generate`, the evaluation harness and the attacks all get SLD from
`prepare`, and run specs name it like any policy.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, runtime_checkable

from hsteer.errors import HsteerError
from hsteer.gate import PromptGate
from hsteer.steering.bank import ConceptBank
from hsteer.model.sld import SLD_PRESETS, sld_pipeline, sld_preset
from hsteer.outputs import check_policy

#: The largest block of images a ratio policy may need to balance exactly.
MAX_BLOCK = 100_000
#: The largest ratio weight (weights are relative; this keeps their sum finite).
MAX_RATIO = 1e6
#: The baselines that need no bank: the plain model and SLD with each preset (`baseline_policy`).
BASELINES = ("plain", *(f"sld-{preset}" for preset in SLD_PRESETS))

Draw = list[tuple[str, float]]


def unchanged(bank: ConceptBank | None, draw: Draw, prompt: str, gate: PromptGate) -> tuple[Draw, list[str]]:
    """`respect` of a policy the prompt cannot overrule (plain, SLD, explicit concepts)."""
    return list(draw), []


@runtime_checkable
class Policy(Protocol):
    """What every policy offers (see the module docstring)."""

    kind: ClassVar[str]
    needs_bank: ClassVar[bool]

    def drawable(self, bank: ConceptBank | None) -> set[str]:
        """The names of every concept the policy can ever draw from `bank` (read from its definition, no
        sampling); unknown names, groups or ratios are refused here."""

    def assign(self, bank: ConceptBank | None, image_seed: int) -> list[tuple[str, float]]:
        """The concepts of the image with seed `image_seed`, as `[(name, scale), ...]`."""

    def to_spec(self) -> dict[str, Any]:
        """The policy's JSON form, as a run folder stores it (`policy_from_spec` reads it back)."""

    def describe(self) -> str:
        """One short line for captions and manifests."""

    @property
    def label(self) -> str:
        """A compact tag for summaries and tables."""

    def targeted_groups(self, bank: ConceptBank | None) -> set[str]:
        """The attribute groups the policy steers (the leakage tables' targeted columns)."""

    def respect(self, bank: ConceptBank | None, draw: Draw, prompt: str, gate: PromptGate) -> tuple[Draw, list[str]]:
        """`draw` adjusted to what `prompt` names (`hsteer.gate`), with the reasons for the manifest."""

    def prepare(self, pipe: Any) -> Any:
        """The pipeline the policy's images are made with (the pipeline itself, except SLD's safe
        pipeline)."""


class _KeepsPipeline:
    """`prepare` of every policy that steers through the hook or not at all: the pipeline as it is."""

    def prepare(self, pipe: Any) -> Any:
        """The pipeline this policy's images are made with."""
        return pipe


def require_bank(bank: ConceptBank | None, policy: Policy | str) -> ConceptBank:
    """The bank a steering policy draws from; the one check that it was given."""
    name = policy if isinstance(policy, str) else policy.describe()
    if bank is None:
        raise HsteerError(f"bank: the {name} policy needs a bank of concepts", field="bank")
    return bank


class _DrawsNothing(_KeepsPipeline):
    """What the policies without concepts share (plain, SLD): nothing to draw, target or gate."""

    needs_bank: ClassVar[bool] = False

    def drawable(self, bank: ConceptBank | None) -> set[str]:
        return set()

    def assign(self, bank: ConceptBank | None, image_seed: int) -> list[tuple[str, float]]:
        return []

    @property
    def label(self) -> str:
        """A compact tag for summaries and progress bars (`describe()` is the readable line)."""
        return self.describe()

    def targeted_groups(self, bank: ConceptBank | None) -> set[str]:
        return set()

    respect = staticmethod(unchanged)


@dataclass(frozen=True)
class PlainPolicy(_DrawsNothing):
    """No concept: the unmodified model."""

    kind: ClassVar[str] = "plain"
    name: str = "plain"

    def to_spec(self) -> dict[str, Any]:
        """The plain policy's spec: its kind only."""
        return {"kind": self.kind}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> PlainPolicy:
        """The plain policy (the spec holds nothing else)."""
        return cls()

    def describe(self) -> str:
        """Always `plain`."""
        return "plain"


@dataclass(frozen=True)
class SldPolicy(_DrawsNothing):
    """The SLD baseline: no concept, diffusers' safe pipeline with a preset (`evaluation.baselines`)."""

    kind: ClassVar[str] = "sld"
    preset: str = "medium"
    name: str = "sld"

    def __post_init__(self) -> None:
        if self.preset not in SLD_PRESETS:
            raise HsteerError(f"unknown SLD preset {self.preset!r}; use one of "
                              f"{', '.join('sld-' + p for p in SLD_PRESETS)}")

    def to_spec(self) -> dict[str, Any]:
        """The SLD policy's spec: its kind and preset."""
        return {"kind": self.kind, "preset": self.preset}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> SldPolicy:
        """The SLD policy of the spec's preset (medium where none is stored)."""
        return cls(preset=str(spec.get("preset", "medium")))

    def describe(self) -> str:
        """`sld-<preset>`, the baseline's name."""
        return f"sld-{self.preset}"

    def settings(self) -> dict[str, float]:
        """The preset's SLD settings (diffusers' `SafetyConfig`: guidance scale, warm-up, threshold, ...)."""
        return sld_preset(self.preset)

    def prepare(self, pipe: Any) -> Any:
        """diffusers' safe pipeline built from the loaded SD pipeline's own parts, called with the preset."""
        return sld_pipeline(pipe, self.preset)


def baseline_policy(name: str) -> Policy | None:
    """The policy of a bank-free baseline named as in `BASELINES`: None for the plain model, else SLD."""
    if name not in BASELINES:
        raise HsteerError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)}")
    return SldPolicy(preset=name.removeprefix("sld-")) if name.startswith("sld-") else None


@dataclass(frozen=True)
class FairPolicy(_KeepsPipeline):
    """One concept per group for each image, drawn from the image's seed, summed with per-group scales.

    The draw is stratified: the combinations of the groups' concepts fill a block of K slots (each
    combination as many slots as its share of K), the slots are shuffled (by a permutation seeded with
    `seed // K`) and image seed s takes slot `s % K`. Each image's concepts thus depend on its seed alone,
    and any K consecutive seeds (aligned on a multiple of K) hold every combination exactly its share,
    so a fair batch is balanced, not just balanced on average.

    `ratios` (concept -> weight) makes a group non-uniform, e.g. {"woman": 0.3, "man": 0.7}. Weights are
    normalised within their group and rounded to the nearest fraction with denominator <= 100
    (`Fraction.limit_denominator(100)`, then renormalised); K is the least common multiple of the
    combinations' denominators (10 for 0.3/0.7; 3 for 1/3, 2/3). A group without ratios is uniform; a
    group with some must give every member (0 never draws that concept).
    """

    kind: ClassVar[str] = "fair"
    needs_bank: ClassVar[bool] = True
    groups: tuple[str, ...]
    scales: dict[str, float] = field(default_factory=dict)
    name: str = "fair"
    ratios: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.groups, str):  # FairPolicy("shape"): one group, not the letters of its name
            object.__setattr__(self, "groups", (self.groups,))
        if not self.groups:
            raise HsteerError("groups is empty: fair generation needs at least one group, e.g. gender",
                              field="groups")
        check_policy(self.groups, self.scales, ratios=self.ratios)

    def _members(self, bank: ConceptBank) -> list[list[str]]:
        members = [sorted(c.name for c in bank.group(group)) for group in self.groups]
        known = {name for names in members for name in names}
        unknown = sorted(set(self.ratios) - known)
        if unknown:
            raise HsteerError(f"ratios names {', '.join(unknown)}, not a concept of the groups "
                              f"{', '.join(self.groups)} (their concepts: {', '.join(sorted(known))})",
                              field="ratios")
        return members

    def _slots(self, bank: ConceptBank) -> list[tuple[str, ...]]:
        """The block: each combination repeated by its share (sorted members; uniform: each once)."""
        members = self._members(bank)
        weights = [_group_weights(group, names, self.ratios) for group, names in zip(self.groups, members)]
        combos = list(itertools.product(*members))
        shares = [math.prod(weights[g][name] for g, name in enumerate(combo)) for combo in combos]
        block = math.lcm(*(share.denominator for share in shares))
        if block > MAX_BLOCK:
            raise HsteerError(f"these ratios need blocks of {block} images to balance exactly; use simpler "
                              "ratios (e.g. tenths)")
        return [combo for combo, share in zip(combos, shares) for _ in range(int(share * block))]

    def drawable(self, bank: ConceptBank | None) -> set[str]:
        """Every concept of the policy's groups that some slot can draw (a ratio of zero draws none)."""
        return {name for combo in set(self._slots(require_bank(bank, self))) for name in combo}

    def assign(self, bank: ConceptBank | None, image_seed: int) -> list[tuple[str, float]]:
        """One concept per group for the image with `image_seed`: seeds are dealt in blocks of all slots,
        shuffled per block, so every block of images is balanced to the ratios exactly."""
        slots = self._slots(require_bank(bank, self))
        block, position = divmod(image_seed, len(slots))
        order = list(range(len(slots)))
        random.Random(f"hsteer-fair-{block}").shuffle(order)
        chosen = slots[order[position]]
        return [(name, float(self.scales.get(group, 1.0))) for group, name in zip(self.groups, chosen)]

    def to_spec(self) -> dict[str, Any]:
        """The fair policy's spec: its groups, scales and (where given) ratios."""
        spec: dict[str, Any] = {"kind": self.kind, "groups": list(self.groups), "scales": dict(self.scales)}
        if self.ratios:
            spec["ratios"] = dict(self.ratios)
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> FairPolicy:
        """The fair policy of a stored spec (scales and ratios as floats)."""
        return cls(tuple(spec["groups"]), {k: float(v) for k, v in dict(spec.get("scales", {})).items()},
                   ratios={k: float(v) for k, v in dict(spec.get("ratios", {})).items()})

    def describe(self) -> str:
        """`fair: <groups>`, with the ratios and the scales other than 1."""
        ratios = f" ({', '.join(f'{n} {w:g}' for n, w in self.ratios.items())})" if self.ratios else ""
        scales = "".join(f" {g}x{s:g}" for g, s in self.scales.items() if s != 1.0)
        return f"fair: {', '.join(self.groups)}{ratios}{scales}"

    @property
    def label(self) -> str:
        """`fair:<groups>`, for summaries."""
        return "fair:" + ",".join(self.groups)

    def targeted_groups(self, bank: ConceptBank | None) -> set[str]:
        """The groups the policy balances."""
        return set(self.groups)

    def respect(self, bank: ConceptBank | None, draw: Draw, prompt: str, gate: PromptGate) -> tuple[Draw, list[str]]:
        """A group whose member the prompt names is not redrawn: kept as the prompt has it, or, with the
        gate's `named="add"`, steered by the named member's own concept."""
        bank = require_bank(bank, self)
        out, notes = [], []
        for group, (name, scale) in zip(self.groups, draw):
            named = gate.named(prompt, sorted(c.name for c in bank.group(group)))
            if named is None:
                out.append((name, scale))
            elif gate.config.named == "add":
                out.append((named[0], scale))
                notes.append(f"{group}: the prompt names {named[0]}, its concept added")
            else:
                notes.append(f"{group} kept: the prompt names {named[0]}")
        return out, notes


def _group_weights(group: str, names: list[str], ratios: dict[str, float]) -> dict[str, Fraction]:
    """Each member's share of its group as a fraction (uniform without ratios)."""
    given = {n: ratios[n] for n in names if n in ratios}
    if not given:
        return {n: Fraction(1, len(names)) for n in names}
    missing = [n for n in names if n not in given]
    if missing:
        raise HsteerError(f"ratios gives some concepts of group {group!r} but not {', '.join(missing)}; "
                          "give every member (0 to never draw one)", field="ratios")
    total = math.fsum(given.values())
    if any(not math.isfinite(v) or v < 0 for v in given.values()) or not 0 < total < math.inf:
        raise HsteerError(f"ratios of group {group!r} must be finite, >= 0 and with a positive finite sum, "
                          f"got {given}", field="ratios")
    rounded = {n: Fraction(v / total).limit_denominator(100) for n, v in given.items()}
    norm = sum(rounded.values())
    if norm == 0:
        raise HsteerError(f"ratios of group {group!r} round to 0 for every member ({given}); use larger weights",
                          field="ratios")
    return {n: r / norm for n, r in rounded.items()}


@dataclass(frozen=True)
class SafePolicy(_KeepsPipeline):
    """The sum of every concept of the safety group."""

    kind: ClassVar[str] = "safe"
    needs_bank: ClassVar[bool] = True
    group: str = "safety"
    scale: float = 1.0
    name: str = "safe"

    def __post_init__(self) -> None:
        check_policy((self.group,), {self.group: self.scale})

    def drawable(self, bank: ConceptBank | None) -> set[str]:
        """Every concept of the safety group (all are applied to every image)."""
        return {c.name for c in require_bank(bank, self).group(self.group)}

    def assign(self, bank: ConceptBank | None, image_seed: int) -> list[tuple[str, float]]:
        """Every concept of the safety group at the policy's scale, the same for every seed."""
        return [(c.name, self.scale) for c in require_bank(bank, self).group(self.group)]

    def to_spec(self) -> dict[str, Any]:
        """The safe policy's spec: its scale, and its group where it is not `safety`."""
        spec: dict[str, Any] = {"kind": self.kind, "scales": {self.group: self.scale}}
        if self.group != "safety":
            spec["group"] = self.group
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> SafePolicy:
        """The safe policy of a stored spec (group `safety` and scale 1 where none is stored)."""
        group = str(spec.get("group", "safety"))
        return cls(group, float(dict(spec.get("scales", {})).get(group, 1.0)))

    def describe(self) -> str:
        """`safe`, with the scale where it is not 1."""
        return "safe" + (f" x{self.scale:g}" if self.scale != 1.0 else "")

    @property
    def label(self) -> str:
        """The policy's kind, for summaries."""
        return self.kind

    def targeted_groups(self, bank: ConceptBank | None) -> set[str]:
        """The one group it applies."""
        return {self.group}

    def respect(self, bank: ConceptBank | None, draw: Draw, prompt: str, gate: PromptGate) -> tuple[Draw, list[str]]:
        """The safety concepts scaled by how strongly the prompt carries the harm they were trained against."""
        members = [c.name for c in require_bank(bank, self).group(self.group)]
        score = gate.harm(prompt, members)
        strength = gate.config.strength(score)
        if strength >= 1.0:
            return list(draw), []
        kept = [(name, scale * strength) for name, scale in draw] if strength > 0 else []
        return kept, [f"{self.group} x{strength:.2f}: the prompt's harm score is {score:.2f}"]


@dataclass(frozen=True)
class ConceptPolicy(_KeepsPipeline):
    """Named concepts with scales for every image (e.g. {"woman": 0.5, "man": 0.5} interpolates)."""

    kind: ClassVar[str] = "concepts"
    needs_bank: ClassVar[bool] = True
    concepts: tuple[tuple[str, float], ...]
    name: str = "concepts"

    def __post_init__(self) -> None:
        check_policy((), {}, self.concepts)

    def drawable(self, bank: ConceptBank | None) -> set[str]:
        """The explicit concepts' names; a name the bank lacks is refused with the bank's list."""
        bank = require_bank(bank, self)
        for concept, _ in self.concepts:
            bank[concept]  # unknown names fail with the bank's list
        return {name for name, _ in self.concepts}

    def assign(self, bank: ConceptBank | None, image_seed: int) -> list[tuple[str, float]]:
        """The explicit concepts with their scales, the same for every seed (checked against the bank
        first)."""
        self.drawable(bank)
        return list(self.concepts)

    def to_spec(self) -> dict[str, Any]:
        """The policy's spec: its concepts as `[name, scale]` pairs."""
        return {"kind": self.kind, "concepts": [[n, s] for n, s in self.concepts]}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ConceptPolicy:
        """The policy of a stored spec (names as strings, scales as floats)."""
        return cls(tuple((str(n), float(s)) for n, s in spec["concepts"]))

    def describe(self) -> str:
        """`concepts: name=scale, ...`."""
        return "concepts: " + ", ".join(f"{n}={s:g}" for n, s in self.concepts)

    @property
    def label(self) -> str:
        """The policy's kind, for summaries."""
        return self.kind

    def targeted_groups(self, bank: ConceptBank | None) -> set[str]:
        """The groups of the explicit concepts, read from their bank (refused without one)."""
        if bank is None:
            raise HsteerError("the groups of explicit concepts are read from their bank; give the bank")
        return {bank[name].group for name in self.drawable(bank)}

    respect = staticmethod(unchanged)  # the user named these concepts: nothing to overrule


#: kind -> policy class: the one place a policy kind is looked up.
POLICIES: Mapping[str, type] = MappingProxyType(
    {cls.kind: cls for cls in (PlainPolicy, SldPolicy, FairPolicy, SafePolicy, ConceptPolicy)})


def policy_from_spec(spec: Mapping[str, Any] | None) -> Policy:
    """The policy a run spec describes (`policy.to_spec()` gives it back)."""
    spec = dict(spec or {"kind": "plain"})
    kind = spec.get("kind", "plain")
    cls = POLICIES.get(kind)
    if cls is None:
        raise HsteerError(f"unknown policy kind {kind!r}; known: {', '.join(POLICIES)}")
    try:
        return cls.from_spec(spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise HsteerError(f"bad {kind} policy spec {spec}: {exc}") from None


def check_policy_object(policy: Any) -> Policy:
    """A policy object, or a clear error naming what was passed instead (a string, None, ...)."""
    if not isinstance(policy, tuple(POLICIES.values())):
        known = isinstance(policy, str) and policy in POLICIES
        hint = f" (did you mean hsteer.{POLICIES[policy].__name__}(...)?)" if known else ""
        raise HsteerError(f"policy must be a policy object such as hsteer.FairPolicy(('gender',)), "
                          f"got {type(policy).__name__} {policy!r}{hint}")
    return policy
