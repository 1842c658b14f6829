"""When does an attribute settle? Switch the prompt from one value to another part-way, read what the image shows.

For a switch step i (0..steps), every image starts from the same seed with prompt A for the steps before i
and prompt B from step i on; i = 0 is prompt B throughout, i = steps prompt A throughout. A reader (the
bundled world's probe, or any classifier) says which value each final image shows. The share of images
showing B falls from about 1 to about 0 as i grows; the *settle step* is the first i where it drops
below 0.5: from there on, the steps left no longer decide the attribute. A concept that should change
that attribute has to act before its settle step; one that should leave it alone, after it.

The switch works on any diffusers pipeline (SD 1.x/2.x, SDXL, SD3, FLUX, SANA): a forward pre-hook on
the denoiser records the text conditioning of every denoiser call of the B run (the prompt embeddings,
pooled projections, attention masks, SDXL's added text embeddings) and, in each A run, replaces A's by
B's for the calls of steps i and later. Nothing else differs between the runs (same seeds, same sampler).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hsteer.errors import HsteerError
from hsteer.evaluation.metrics import wilson_interval

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

#: The denoiser's keyword arguments that carry the prompt (the rest, e.g. latents and timestep, is the same).
TEXT_KWARGS = ("encoder_hidden_states", "pooled_projections", "encoder_attention_mask", "added_cond_kwargs",
               "txt_ids")

#: The bundled world's groups: the word each value puts into the prompt, and the default template.
WORLD_WORDS: dict[str, dict[str, str] | None] = {"shape": None, "colour": None, "profession": None,
                                                 "harm": {"no": "", "yes": "violent"}}
WORLD_TEMPLATES = {"shape": "a photo of a {} figure", "colour": "a photo of a {} figure",
                   "profession": "a photo of a {}", "harm": "a photo of a {} figure"}


@dataclass
class SettleResult:
    prompt_a: str
    prompt_b: str
    value_b: str
    steps: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # per switch step: share showing B, its interval

    @property
    def settle_step(self) -> int | None:
        """The first switch step at which fewer than half the images show B (None: B wins at every step)."""
        return next((r["switch_step"] for r in self.rows if r["share_b"] < 0.5), None)

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (prompts, value, steps, settle step and per-step rows)."""
        return {"prompt_a": self.prompt_a, "prompt_b": self.prompt_b, "value_b": self.value_b,
                "steps": self.steps, "settle_step": self.settle_step, "rows": self.rows}


def _text_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in TEXT_KWARGS:
        value = kwargs.get(key)
        if value is not None:
            out[key] = dict(value) if isinstance(value, dict) else value
    return out


@contextlib.contextmanager
def _conditioning_hook(denoiser, recorded: list[dict[str, Any]], replace_from: int | None) -> Iterator[None]:
    """Record each call's text conditioning (replace_from None), or replace it from call `replace_from` on."""
    calls = [0]

    def hook(module, args, kwargs):
        n = calls[0]
        calls[0] += 1
        if replace_from is None:
            found = _text_kwargs(kwargs)
            if not found:
                raise HsteerError(f"{type(module).__name__} was called without its text conditioning as a keyword "
                                  f"argument ({', '.join(TEXT_KWARGS)}): the prompt switch cannot reach it")
            recorded.append(found)
            return None
        if n < replace_from:
            return None
        if n >= len(recorded):
            raise HsteerError("the switched run called the denoiser more often than the run it switches to")
        return args, {**kwargs, **recorded[n]}

    handle = denoiser.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def switched_images(pipe: Pipeline, prompt_a: str, prompt_b: str, switch_steps: Sequence[int], *, steps: int,
                    images: int, seed: int = 0, guidance: float | None = None, height: int | None = None,
                    width: int | None = None) -> dict[int, list[Any]]:
    """switch step -> the images of prompt A switched to prompt B at that step (same seeds for every step;
    `height`, `width`: default the model's native size)."""
    from hsteer.generation import generate
    from hsteer.model.sites import denoiser_of

    denoiser = denoiser_of(pipe)
    kwargs = dict(num_images_per_prompt=images, seed=seed, steps=steps, guidance=guidance, batch_size=images,
                  height=height, width=width, progress=False)
    recorded: list[dict[str, Any]] = []
    with _conditioning_hook(denoiser, recorded, None):
        out = {0: generate(pipe, [prompt_b], **kwargs).images}
    if len(recorded) % steps:
        raise HsteerError(f"the denoiser ran {len(recorded)} times in {steps} steps: the switch needs a whole "
                          "number of calls per step")
    per_step = len(recorded) // steps
    for step in sorted(set(switch_steps) - {0}):
        with _conditioning_hook(denoiser, recorded, step * per_step):
            out[step] = generate(pipe, [prompt_a], **kwargs).images
    return out


def settle(pipe: Pipeline, prompt_a: str, prompt_b: str, read: Callable[[list[Any]], Sequence[str]],
           value_b: str, *,
           steps: int = 20, images: int = 32, seed: int = 0, guidance: float | None = None,
           switch_steps: Sequence[int] | None = None, height: int | None = None,
           width: int | None = None) -> SettleResult:
    """Per switch step (default every step 0..steps): the share of images `read` labels `value_b`, with its
    Wilson 95% interval. `read(images)` returns one label per image (a classifier of the attribute)."""
    from hsteer.checks import check_count

    check_count("steps", steps, 1, 10_000)
    check_count("images", images, 1, 4096)
    chosen = list(range(steps + 1)) if switch_steps is None else sorted(set(switch_steps))
    if any(not 0 <= s <= steps for s in chosen):
        raise HsteerError(f"switch steps must lie in 0..{steps}, got {chosen}")
    made = switched_images(pipe, prompt_a, prompt_b, chosen, steps=steps, images=images, seed=seed,
                           guidance=guidance, height=height, width=width)
    result = SettleResult(prompt_a, prompt_b, value_b, steps)
    for step in chosen:
        labels = list(read(made[step]))
        if len(labels) != images:
            raise HsteerError(f"the reader returned {len(labels)} labels for {images} images")
        hits = sum(label == value_b for label in labels)
        result.rows.append({"switch_step": step, "share_b": hits / images,
                            "ci": [round(v, 4) for v in wilson_interval(hits, images)], "n": images})
    return result


def world_prompts(group: str, value_a: str, value_b: str, template: str | None = None) -> tuple[str, str]:
    """The two prompts of a world switch, e.g. shape circle -> square: 'a photo of a circle figure' -> '... square ...'."""
    from hsteer.world.scene import WorldProbe

    if group not in WORLD_WORDS:
        raise HsteerError(f"unknown world group {group!r}; choose one of {', '.join(WORLD_WORDS)}")
    values = tuple(WORLD_WORDS[group] or WorldProbe.attributes.get(group, ())) or _professions()
    for value in (value_a, value_b):
        if value not in values:
            raise HsteerError(f"{value!r} is not a value of {group}; choose one of {', '.join(values)}")
    if value_a == value_b:
        raise HsteerError("the switch needs two different values")
    template = template or WORLD_TEMPLATES[group]
    if template.count("{}") != 1:
        raise HsteerError(f"the template needs exactly one '{{}}' where the value goes, got {template!r}")
    words = WORLD_WORDS[group] or {}
    return tuple(" ".join(template.format(words.get(v, v)).split()) for v in (value_a, value_b))


def _professions() -> tuple[str, ...]:
    from hsteer.world.scene import PROFESSIONS

    return PROFESSIONS


def world_settle(pipe: Pipeline, group: str, value_a: str, value_b: str, *, template: str | None = None,
                 **kwargs: Any) -> SettleResult:
    """`settle` on a model of the bundled world, read by its probe (`WORLD_TEMPLATES` unless `template`)."""
    from hsteer.world.scene import WorldProbe

    prompt_a, prompt_b = world_prompts(group, value_a, value_b, template)
    probe = WorldProbe()
    return settle(pipe, prompt_a, prompt_b, lambda images: probe.classify(images)[group], value_b, **kwargs)


def free_prompts(value_a: str, value_b: str, template: str) -> tuple[str, str]:
    """The two prompts of a switch on any model: `template` with its one '{}' filled by each value."""
    for name, value in (("the first value", value_a), ("the second value", value_b)):
        if not value.strip():
            raise HsteerError(f"{name} is empty; give the word the prompt switches, e.g. woman")
    if value_a.strip() == value_b.strip():
        raise HsteerError("the switch needs two different values")
    if template.count("{}") != 1:
        raise HsteerError(f"the template needs exactly one '{{}}' where the value goes, got {template!r}")
    return tuple(" ".join(template.format(v.strip()).split()) for v in (value_a, value_b))


def clip_settle(pipe: Pipeline, scorer, value_a: str, value_b: str, template: str,
                **kwargs: Any) -> SettleResult:
    """`settle` on any model, each image read by CLIP zero-shot between the two prompts themselves (the
    prompt it is closer to names its value), e.g. 'a photo of a woman doctor' against '... man doctor'.
    `scorer` is a `hsteer.evaluation.clip.ClipScorer`."""
    from hsteer.evaluation.clip import ClipZeroShot

    prompt_a, prompt_b = free_prompts(value_a, value_b, template)
    classifier = ClipZeroShot(scorer, {"switch": (prompt_a, prompt_b)})
    names = {prompt_a: value_a, prompt_b: value_b}

    def read(images: list[Any]) -> list[str]:
        return [names[label] for label in classifier.classify(images)["switch"]]

    return settle(pipe, prompt_a, prompt_b, read, value_b, **kwargs)


def settle_table(results: Sequence[tuple[str, SettleResult]]) -> str:
    """A markdown table: one column per labelled result, one row per switch step (share of B [95% interval])."""
    steps = sorted({r["switch_step"] for _, res in results for r in res.rows})
    lines = ["| switch step | " + " | ".join(label for label, _ in results) + " |",
             "|---|" + "---|" * len(results)]
    for step in steps:
        cells = []
        for _, res in results:
            row = next((r for r in res.rows if r["switch_step"] == step), None)
            cells.append("-" if row is None else f"{row['share_b']:.2f} [{row['ci'][0]:.2f}, {row['ci'][1]:.2f}]")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines.append("| **settle step** | " + " | ".join(str(res.settle_step) for _, res in results) + " |")
    return "\n".join(lines) + "\n"
