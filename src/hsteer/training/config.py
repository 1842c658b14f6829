"""What decides a concept: the settings every method shares; each method's own config class (a subclass)
lives in its folder under `hsteer.training.methods` and is registered in `hsteer.training.registry`.

`TrainConfig.for_objective("respodiff", lam=0.5, ...)` builds the config of the method named at run time
(`RespoDiffConfig`); the method classes (`CodsmaConfig`, ...) are used directly where the method is fixed.
`TrainConfig` itself only holds the shared settings and is not built on its own. A config is stored in the
bank with its concept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from hsteer.checks import check_count, check_float, check_name, check_seed, check_size
from hsteer.errors import HsteerError, as_field
from hsteer.seeding import ITERATION_STRIDE
from hsteer.training.registry import METHODS

MODES = ("fast", "reference")


@dataclass
class TrainConfig:
    """Settings shared by every method.

    target: the target prompt (fairness: "a woman"); negative: a prompt to steer away from
    (safety: "violence"); at least one is needed. The target noise is
    eps(base) + target_guidance * (eps(positive) - eps(base)) with positive = target or neutral,
    base = negative or the empty prompt.
    pairs: (neutral, target) prompt pairs that replace neutral/target row by row (row i of a batch uses
    pairs[i % len(pairs)]): pairs that hold the other attributes fixed ("a red figure" -> "a red square
    figure", over every colour) leave the concept nothing to learn but its own attribute.
    window: (start, end) fractions of the denoising steps where the concept acts, in training and at use
    (stored with the concept); attributes settle at different steps (docs/methods.md §8).
    site: the steering site (`hsteer.model.sites`: `mid_block`, `transformer_blocks.N`,
    `single_transformer_blocks.N`, `text`); None: the model's default site.
    stored_scale: the learned tensors are stored at this fraction of their trained length (1: as learned).
    Training is unchanged; only what lands in the bank is scaled, so `scale` at use composes with it. A
    concept trained hard against adversarial prompts (the world recipe's safety concept) repaints harmless
    images at full length and keeps its reach shorter (docs/attacks.md measures 0.8).
    """

    concept: str
    group: str
    neutral: str
    target: str | None = None
    negative: str | None = None
    objective: str = "codsma"
    iterations: int = 1000
    batch_size: int = 8
    steps: int = 50
    lr: float = 0.05
    target_guidance: float = 4.0
    sampling_guidance: float = 3.0
    seed: int = 0
    init_std: float = 0.0
    mode: str = "fast"
    height: int | None = None
    width: int | None = None
    pairs: tuple[tuple[str, str], ...] | None = None
    window: tuple[float, float] | None = None
    site: str | None = None
    stored_scale: float = 1.0

    #: The concept's tensors, in the bank as "<concept>/<module>".
    modules: ClassVar[tuple[str, ...]] = ("c",)

    def __post_init__(self) -> None:
        if type(self) is TrainConfig:  # the shared settings alone train nothing: say how to name a method
            raise HsteerError("TrainConfig holds the settings every method shares; build a method's config with "
                              "TrainConfig.for_objective('codsma', ...) or its class (CodsmaConfig(...), ...)")

    @classmethod
    def for_objective(cls, objective: str, **settings: Any) -> TrainConfig:
        """The config of the method named `objective` (`CodsmaConfig`, `RespoDiffConfig`, `SdiscConfig`).

        For callers that learn the method at run time (the command line, recipes): an unknown objective
        and a setting of another method are refused here, naming what is valid, rather than by a TypeError.
        """
        target = METHODS.get(objective).config
        own = {f.name for f in fields(target)} - {"objective"}
        foreign = sorted(k for k in settings if k not in own)
        if foreign:
            raise HsteerError(f"{', '.join(foreign)}: not settings of the {objective} objective; "
                              f"it takes {', '.join(sorted(own))}")
        return target(**settings)

    def validate(self) -> None:
        """Refuse settings that cannot train, before any work is done."""
        METHODS.of(self)
        if not self.neutral or not self.neutral.strip():
            raise HsteerError("the neutral prompt is empty; give it text, e.g. neutral='a photo of a person'",
                              field="neutral")
        if self.target is not None and not self.target.strip():
            raise HsteerError("the target prompt is empty; give it text, e.g. target='a photo of a woman'",
                              field="target")
        if self.negative is not None and not self.negative.strip():
            raise HsteerError("the negative prompt is empty; give it text, e.g. negative='violence'",
                              field="negative")
        if self.mode not in MODES:
            raise HsteerError(f"unknown training mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.target is None and self.negative is None and not self.pairs:
            raise HsteerError("give a target prompt (target), prompt pairs (pairs) or a negative prompt (negative)",
                              field=("target", "negative", "pairs"))
        if self.pairs is not None:
            if not self.pairs or not all(len(pair) == 2 and all(isinstance(p, str) and p.strip() for p in pair)
                                         for pair in self.pairs):
                raise HsteerError("pairs must be non-empty (neutral, target) prompt pairs", field="pairs")
        if self.site is not None and (not isinstance(self.site, str) or not self.site.strip()):
            raise HsteerError(f"site must be a site name such as mid_block, transformer_blocks.2 or text, got "
                              f"{self.site!r}", field="site")
        if self.window is not None:
            from hsteer.steering.scoped import check_window

            check_window(*self.window)
        check_train_settings(self)

    def learning_rates(self) -> dict[str, str]:
        """module -> the setting that holds its learning rate."""
        return {module: "lr" for module in self.modules}

    def resume_key(self) -> dict[str, Any]:
        """The settings a checkpoint must share to be resumed (iterations may grow)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("iterations", "stored_scale") and not (k == "site" and v is None)}


def config_class(objective: str) -> type[TrainConfig]:
    """The config class of `objective`; an unknown one is refused naming the valid ones."""
    return METHODS.get(objective).config


def __getattr__(name: str):
    """`OBJECTIVES` (the method names) and `CONFIGS` (name -> config class), read from the registry when
    asked, since the methods register after this module has loaded."""
    if name == "OBJECTIVES":
        return METHODS.names()
    if name == "CONFIGS":
        return {method.name: method.config for method in METHODS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_train_settings(config: TrainConfig) -> None:
    """The checks every method shares: names, counts, seed, sizes and finite numbers; each error carries the
    setting at fault as its field."""
    check_name("concept", config.concept)
    check_name("group", config.group)
    for name in ("iterations", "batch_size", "steps"):
        as_field(name, check_count, getattr(config, name), 1, 10**7 if name == "iterations" else 10_000)
    as_field("seed", check_seed, config.seed, span=config.iterations + 1, scale=ITERATION_STRIDE)
    as_field("height", check_size, config.height)
    as_field("width", check_size, config.width)
    for name in config.learning_rates().values():
        as_field(name, check_float, getattr(config, name), 0.0, above=True)
    for name in ("target_guidance", "sampling_guidance"):
        as_field(name, check_float, getattr(config, name), maximum=1e4)
    as_field("init_std", check_float, config.init_std, 0.0, maximum=1e4)
    as_field("stored_scale", check_float, config.stored_scale, 0.0, maximum=1e3, above=True)
