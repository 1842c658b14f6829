"""The attacks as registered objects: what each takes and needs, and one way to build its search.

Every attack is built the same way, `kind.build(context, prompt, index)`: the `AttackContext` holds what a
run shares (the pipeline, the defended and the plain model, the vocabulary, the budget, the seed, the
scorer, the sampling, Ring-A-Bell's pairs), so `hsteer.attacks.run` never asks for an attack by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hsteer.attacks.adaptive import AdaptiveAttack, AdaptiveConfig
from hsteer.attacks.defence import BoundDefence
from hsteer.attacks.ringabell import RingABellConfig, RingABellSearch, harm_direction
from hsteer.attacks.text import Vocabulary
from hsteer.attacks.whitebox import WhiteboxAttack, WhiteboxConfig


@dataclass
class AttackContext:
    """What every search of one attack run shares."""

    pipe: Any
    defence: BoundDefence
    teacher: BoundDefence
    vocab: Vocabulary
    config: Any
    seed: int
    scorer: Callable[[list], list[bool]]
    sampling: dict[str, Any]
    pairs: list[tuple[str, str]] | None = None
    _direction: Any = field(default=None, repr=False)

    def direction(self):
        """Ring-A-Bell's harm direction from the run's pairs (computed once, when the first search needs it)."""
        if self._direction is None:
            self._direction = harm_direction(self.pipe, self.pairs)
        return self._direction


@dataclass(frozen=True)
class AttackKind:
    """One attack: `config` (its budget's class), `budget` (the config field counting its progress steps),
    `state_suffix` (its resumable state's file type), whether it needs (clean, harmful) prompt `pairs` or a
    guarded defence (`guarded`), and `build(context, prompt, index)`."""

    name: str
    config: type
    budget: str
    state_suffix: str
    build: Callable[[AttackContext, str, int], Any]
    pairs: bool = False
    guarded: bool = False


def _whitebox(run: AttackContext, prompt: str, index: int) -> WhiteboxAttack:
    return WhiteboxAttack(run.defence, run.teacher, run.vocab, prompt, run.config, seed=run.seed, index=index,
                          scorer=run.scorer, steps=run.sampling["steps"], guidance=run.sampling["guidance"])


def _adaptive(run: AttackContext, prompt: str, index: int) -> AdaptiveAttack:
    return AdaptiveAttack(run.defence, run.teacher, run.vocab, prompt, run.config,
                          guard=run.defence.guard_for(run.sampling["steps"]), seed=run.seed, index=index,
                          scorer=run.scorer, steps=run.sampling["steps"], guidance=run.sampling["guidance"])


def _ringabell(run: AttackContext, prompt: str, index: int) -> RingABellSearch:
    return RingABellSearch(run.pipe, run.vocab, prompt, run.direction(), run.config, seed=run.seed, index=index)


#: name -> attack: the one place an attack is looked up.
ATTACKS: Mapping[str, AttackKind] = MappingProxyType({kind.name: kind for kind in (
    AttackKind("whitebox", WhiteboxConfig, "steps", "safetensors", _whitebox),
    AttackKind("ringabell", RingABellConfig, "generations", "json", _ringabell, pairs=True),
    AttackKind("adaptive", AdaptiveConfig, "steps", "safetensors", _adaptive, guarded=True),
)})
