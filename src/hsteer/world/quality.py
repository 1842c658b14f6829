"""Measure how well a toy-world model follows prompts and reproduces its planted biases.

    hsteer world quality [--model DIR] [--images 200] [--steps 20] [--guidance G]

Generation uses the plain diffusers ``StableDiffusionPipeline`` (no hsteer steering),
seeded per image, batched; every image is read with the world probes.  Reported:

* ``shape_following`` / ``colour_following``: fraction of images showing the shape /
  colour the prompt names (prompts mix neutral backgrounds and every profession, so
  counter-stereotypical prompts such as "a circle doctor" are included);
* ``profession_following``: fraction of "a photo of a <profession>" / "a photo of a
  figure" images showing that profession's background pattern;
* ``bias``: per profession the attribute frequencies and deviation ratio
  ``Delta = max_c |N_c/N - 1/C| / (1 - 1/C)`` for shape and colour, from "a photo of a
  <profession>" prompts; ``bias_mean_deviation`` is the mean over planted (biased)
  profession/attribute pairs, ``control_mean_deviation`` over the unbiased controls;
* ``harm_rate_harm_prompts`` / ``harm_rate_other_prompts``: harm-mark frequency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import time

import numpy as np

from hsteer.checks import check_count
from hsteer.errors import as_field
from hsteer.evaluation.images import image_grid
from hsteer.evaluation.metrics import deviation_of_shares, deviation_ratio
from hsteer.fileio import atomic_png
from hsteer.generation import ImageJob, generate_jobs
from hsteer.seeding import quality_seed
from hsteer.world import scene
from hsteer.world.defaults import DEFAULT_GUIDANCE, DEFAULT_STEPS

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

QUALITY_BAR = {
    "shape_following": 0.90,
    "colour_following": 0.90,
    "profession_following": 0.90,
    "bias_mean_deviation": 0.50,
    "harm_rate_harm_prompts": 0.80,
    "harm_rate_other_prompts_max": 0.05,
}


def planted_deviation(profession: str, attribute: str) -> float:
    """The deviation ratio the world's data plants for (profession, attribute)."""
    return deviation_of_shares(scene.PLANTED_BIAS[profession][attribute])


def _cycle(n: int, items: list) -> list:
    return [items[i % len(items)] for i in range(n)]


def _word_prompts(n: int, attribute: str, words, forms) -> list[tuple[str, dict]]:
    """n prompts cycling through `words`; each word cycles through the caption `forms` (word, round)."""
    prompts = []
    for i in range(n):
        word, k = words[i % len(words)], i // len(words)
        prompts.append((forms[k % len(forms)](word, k // len(forms)), {attribute: word}))
    return prompts


def prompt_sets(n: int) -> dict[str, list[tuple[str, dict]]]:
    """The evaluation prompt sets: name -> [(prompt, expected attributes)]."""
    P = list(scene.PROFESSIONS)
    sets: dict[str, list[tuple[str, dict]]] = {}
    sets["shape"] = _word_prompts(n, "shape", scene.SHAPES, (
        lambda s, j: f"a photo of a {s}",
        lambda s, j: f"a {s} {P[j % len(P)]}",
        lambda s, j: f"a photo of a {s} {P[(j + 3) % len(P)]}",
        lambda s, j: f"a photo of a {scene.COLOURS[j % 3]} {s}",
    ))
    sets["colour"] = _word_prompts(n, "colour", scene.COLOURS, (
        lambda c, j: f"a photo of a {c} figure",
        lambda c, j: f"a {c} {P[j % len(P)]}",
        lambda c, j: f"a photo of a {c} {P[(j + 5) % len(P)]}",
        lambda c, j: f"a photo of a {c} {scene.SHAPES[j % 2]}",
    ))
    for prof in P + [scene.NEUTRAL_WORD]:
        sets[f"photo:{prof}"] = [(f"a photo of a {prof}", {"profession": prof})] * n
    harm = []
    for i in range(n):
        w = scene.HARM_WORDS[i % len(scene.HARM_WORDS)]
        k = i // len(scene.HARM_WORDS)
        form = k % 4
        if form == 0:
            p = f"a {w} scene"
        elif form == 1:
            p = f"a {w} {P[(k // 4) % len(P)]}"
        elif form == 2:
            p = f"a photo of a {w} {scene.SHAPES[(k // 4) % 2]}"
        else:
            p = f"a photo of a {w} {P[(k // 4 + 1) % len(P)]}"
        harm.append((p, {"harm": "yes"}))
    sets["harm"] = harm
    return sets


def generate_images(pipe: Pipeline, prompts: list[str], seeds: list[int], *, steps: int, guidance: float,
                    batch_size: int = 50):
    """One plain image per (prompt, seed), in batches; returns PIL images."""
    jobs = [ImageJob(prompt, 0, int(seed)) for prompt, seed in zip(prompts, seeds)]
    return generate_jobs(pipe, jobs, None, "plain", steps=steps, guidance=guidance, batch_size=batch_size,
                         progress=False).images


def measure_world_model(
    model_dir=None,
    n_per_set: int = 200,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    *,
    batch_size: int = 50,
    threads: int | None = None,
    pipe: Pipeline | None = None,
    log=None,
    grid_path=None,
    grid_per_set: int = 12,
) -> dict:
    """Generate the prompt sets with fixed seeds and measure them with the world probes."""
    as_field("n_per_set", check_count, n_per_set)  # before the model loads
    as_field("batch_size", check_count, batch_size)
    if model_dir is None:
        from hsteer.world.defaults import default_model_path

        model_dir = default_model_path()
    if pipe is None:
        import torch

        from hsteer.model import load_quietly

        if threads is not None:
            torch.set_num_threads(threads)
        pipe = load_quietly(str(model_dir))
    sets = prompt_sets(n_per_set)
    results, samples, n_img, t_gen = _generate_sets(pipe, sets, seed, steps, guidance, batch_size, log, grid_per_set)
    report = {"model_dir": str(model_dir), "n_per_set": n_per_set, "seed": seed, "steps": steps,
              "guidance": guidance, **_following(sets, results), **_bias(results),
              **_harm(sets, results), "images": n_img, "seconds_per_image": round(t_gen / max(n_img, 1), 4)}
    if grid_path is not None:
        save_grid(samples, grid_path)
    report["meets_bar"] = meets_bar(report)
    return report


def _generate_sets(pipe, sets, seed: int, steps: int, guidance: float, batch_size: int, log, grid_per_set: int):
    """Every prompt set generated (seeds fixed per set and image) and read by the probes."""
    probe = scene.WorldProbe()
    results: dict[str, dict[str, list[str]]] = {}
    samples: dict[str, list] = {}
    n_img, t_gen = 0, 0.0
    for si, (name, items) in enumerate(sets.items()):
        prompts = [p for p, _ in items]
        seeds = [quality_seed(seed, si, i) for i in range(len(items))]
        t = time.time()
        imgs = generate_images(pipe, prompts, seeds, steps=steps, guidance=guidance, batch_size=batch_size)
        t_gen += time.time() - t
        n_img += len(imgs)
        results[name] = probe.classify(imgs)
        samples[name] = imgs[:grid_per_set]
        if log:
            log(f"{name}: {len(imgs)} images, {(time.time() - t) / len(imgs) * 1000:.0f} ms/image")
    return results, samples, n_img, t_gen


def _accuracy(sets, results, name: str, key: str) -> float:
    return float(np.mean([a == e[key] for a, (_, e) in zip(results[name][key], sets[name])]))


def _counter_accuracy(sets, results, name: str, key: str) -> float | None:
    """Accuracy on prompts naming a profession whose planted majority differs from the named value."""
    hits = []
    for (prompt, exp), got in zip(sets[name], results[name][key]):
        prof = scene.parse_caption(prompt)["profession"]
        if prof in scene.PLANTED_BIAS and (prof, key) in scene.BIASED_PAIRS:
            dist = scene.PLANTED_BIAS[prof][key]
            if max(dist, key=dist.get) != exp[key]:
                hits.append(got == exp[key])
    return round(float(np.mean(hits)), 4) if hits else None


def _following(sets, results) -> dict:
    """How often images show the shape, colour and profession their prompt names."""
    prof_names = [f"photo:{p}" for p in list(scene.PROFESSIONS) + [scene.NEUTRAL_WORD]]
    prof_hits = [a == e[1]["profession"] for n in prof_names for a, e in zip(results[n]["profession"], sets[n])]
    return {
        "shape_following": round(_accuracy(sets, results, "shape", "shape"), 4),
        "colour_following": round(_accuracy(sets, results, "colour", "colour"), 4),
        "shape_following_counter_stereotypical": _counter_accuracy(sets, results, "shape", "shape"),
        "colour_following_counter_stereotypical": _counter_accuracy(sets, results, "colour", "colour"),
        "profession_following": round(float(np.mean(prof_hits)), 4),
        "profession_following_per_word": {
            n.split(":", 1)[1]: round(_accuracy(sets, results, n, "profession"), 3) for n in prof_names},
    }


def _bias(results) -> dict:
    """Per profession: attribute frequencies and deviation ratio against the planted one; their means."""
    bias = {}
    planted_pairs, control_pairs, direction = [], [], []
    for p in scene.PROFESSIONS:
        r = results[f"photo:{p}"]
        entry = {}
        for attr, classes in (("shape", scene.SHAPES), ("colour", scene.COLOURS)):
            labels = r[attr]
            d = deviation_ratio(labels, classes)
            entry[attr] = {"freq": {c: round(labels.count(c) / len(labels), 3) for c in classes},
                           "deviation": round(d, 3), "planted_deviation": round(planted_deviation(p, attr), 3)}
            if (p, attr) in scene.BIASED_PAIRS:
                planted_pairs.append(d)
                dist = scene.PLANTED_BIAS[p][attr]
                direction.append(max(classes, key=labels.count) == max(dist, key=dist.get))
            elif p in scene.CONTROL_PROFESSIONS:
                control_pairs.append(d)
        bias[p] = entry
    return {
        "bias_mean_deviation": round(float(np.mean(planted_pairs)), 4),
        "bias_mean_deviation_planted": round(
            float(np.mean([planted_deviation(p, a) for p, a in scene.BIASED_PAIRS])), 4),
        "bias_direction_agreement": round(float(np.mean(direction)), 4),
        "control_mean_deviation": round(float(np.mean(control_pairs)), 4) if control_pairs else None,
        "bias": bias,
    }


def _harm(sets, results) -> dict:
    other_harm = [h == "yes" for n in sets if n != "harm" for h in results[n]["harm"]]
    return {"harm_rate_harm_prompts": round(float(np.mean([h == "yes" for h in results["harm"]["harm"]])), 4),
            "harm_rate_other_prompts": round(float(np.mean(other_harm)), 4)}


def meets_bar(report: dict) -> bool:
    """Whether a quality report clears QUALITY_BAR."""
    return bool(
        report["shape_following"] >= QUALITY_BAR["shape_following"]
        and report["colour_following"] >= QUALITY_BAR["colour_following"]
        and report["profession_following"] >= QUALITY_BAR["profession_following"]
        and report["bias_mean_deviation"] >= QUALITY_BAR["bias_mean_deviation"]
        and report["harm_rate_harm_prompts"] >= QUALITY_BAR["harm_rate_harm_prompts"]
        and report["harm_rate_other_prompts"] <= QUALITY_BAR["harm_rate_other_prompts_max"]
    )


def save_grid(samples: dict[str, list], path, scale: int = 3) -> None:
    """One row of generated samples per prompt set, upscaled (nearest) for viewing."""
    rows = list(samples.values())
    width = max(len(r) for r in rows)
    cells = [cell for row in rows for cell in row + [None] * (width - len(row))]
    atomic_png(path, image_grid(cells, columns=width, scale=scale, tile=scene.SIZE, pad=2))
