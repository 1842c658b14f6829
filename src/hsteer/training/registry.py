"""Training methods, registered once: a method's name, config class, trainer, optimiser step, what it
supports and its own settings, in one `Method` object in one registry (`METHODS`).

Each method lives in its own folder (`hsteer.training.methods.<name>`) and registers itself there. What
offers or checks a method reads this registry and never compares a method's name: the command line's
`--objective` choices and method options, the web page's Learn form, the bundled world's recipes,
`hsteer compare`, group training and the check that a model and site can train a method. The name is
what banks and run folders store (`Concept.objective`, `config.json`), so it never changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hsteer.errors import HsteerError
from hsteer.model.sites import family_of

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

#: How messages name the denoiser families and sites a method is limited to.
FAMILY_LABELS = {"unet": "U-Net", "sd3": "SD3", "flux": "FLUX", "sana": "SANA"}
SITE_LABELS = {"mid_block": "the mid-block"}


@dataclass(frozen=True)
class MethodOption:
    """A setting only this method takes (a field of its config class), as `hsteer train` (an option of the
    field's name) and the web page (`label`, bounds `low` .. `high`, `whole`: a whole number) offer it."""

    field: str
    help: str
    label: str
    low: float
    high: float
    whole: bool = False


@dataclass(frozen=True)
class Method:
    """A training method.

    config: its config class (a `TrainConfig`); trainer(pipe, plan, *, resume, checkpoint_every, progress,
    callback) -> TrainResult, on a `hsteer.training.plan.TrainPlan` checked and resolved once (config,
    site, size, shape, run folder), which it trusts; step: its optimiser step on the steered trainer's
    latents (None for a method with its own loop); summary: one line for `hsteer train --help`; families / sites: the
    denoiser families and steering sites it trains (None: all); group_training: a group's concepts can
    share one trajectory pool (`hsteer.training.group`); counts_iterations: it trains for `iterations`
    steps, one loss row each (not for epochs over images it makes first); pairs: it learns from
    (neutral, target) prompt pairs; baseline: a published baseline that hsteer's methods are compared to.
    """

    name: str
    title: str
    config: type
    trainer: Callable[..., Any]
    summary: str
    step: Callable[..., Any] | None = None
    families: tuple[str, ...] | None = None
    sites: tuple[str, ...] | None = None
    group_training: bool = False
    counts_iterations: bool = True
    pairs: bool = True
    baseline: bool = False
    options: tuple[MethodOption, ...] = ()

    def check_supports(self, pipe: Pipeline, site: str | None) -> None:
        """Refuse a model family or site this method cannot train, naming the methods that can."""
        family = family_of(pipe)
        if self.families is not None and family not in self.families:
            others = [FAMILY_LABELS.get(f, f) for f in FAMILY_LABELS if f not in self.families]
            raise HsteerError(f"objective={self.name!r} trains "
                              f"{_either(FAMILY_LABELS.get(f, f) for f in self.families)} models only; use "
                              f"{METHODS.able('families')} on {_all(others)}", field="objective")
        if self.sites is not None and site is not None and site not in self.sites:
            raise HsteerError(f"objective={self.name!r} learns at "
                              f"{_either(SITE_LABELS.get(s, s) for s in self.sites)} only, not at site {site}; use "
                              f"{METHODS.able('sites')} there", field="objective")


def _either(items) -> str:
    return " or ".join(items)


def _all(items: list[str]) -> str:
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else "".join(items)


class MethodRegistry:
    """name -> Method, in the order registered (the order the command line and the page list them)."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def register(self, method: Method) -> Method:
        """Register `method` and return it; a second method of the same name, or an option field another
        method already uses, is refused."""
        if method.name in self._methods:
            raise HsteerError(f"a training method named {method.name!r} is already registered")
        taken = {o.field for m in self for o in m.options}
        if any(o.field in taken for o in method.options):
            raise HsteerError(f"{method.name}: an option of another method has the same name")
        self._methods[method.name] = method
        return method

    def get(self, name: str) -> Method:
        """The method called `name`; an unknown one is refused naming the valid ones."""
        method = self._methods.get(name) if isinstance(name, str) else None
        if method is None:
            raise HsteerError(f"unknown objective {name!r}; choose one of {', '.join(self.names())}")
        return method

    def of(self, config: Any) -> Method:
        """The method of a config: the one its `objective` names, which must be its class's."""
        method = self.get(config.objective)
        if not isinstance(config, method.config):
            raise HsteerError(f"unknown objective {config.objective!r}; choose one of {', '.join(self.names())}")
        return method

    def names(self) -> tuple[str, ...]:
        """The registered methods' names, in registration order."""
        return tuple(self._methods)

    def options(self) -> tuple[MethodOption, ...]:
        """Every method's own options, in registration order."""
        return tuple(o for m in self for o in m.options)

    def owner(self, field: str) -> Method | None:
        """The method whose own option `field` is (None: a setting every method shares)."""
        return next((m for m in self if any(o.field == field for o in m.options)), None)

    def able(self, capability: str) -> str:
        """'a or b': the methods with no limit on `capability` ('families', 'sites')."""
        return _either(m.name for m in self if getattr(m, capability) is None)

    def __iter__(self) -> Iterator[Method]:
        return iter(self._methods.values())

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __len__(self) -> int:
        return len(self._methods)


#: The training methods (each registered by its folder under `hsteer.training.methods`).
METHODS = MethodRegistry()
