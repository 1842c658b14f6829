"""`hsteer settle`: when an attribute settles, by switching the prompt part-way (`hsteer.evaluation.settle`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hsteer.cli.common import model_options, one_line_errors


def _reads_world(model: str | None) -> bool:
    """The bundled models, and folders `hsteer world train` wrote (their images are the world's)."""
    from hsteer.model.loading import BUNDLED_NAMES

    return model is None or model in BUNDLED_NAMES or (Path(model) / "training_info.json").is_file()


@click.command("settle")
@model_options
@click.option("--group", default=None, type=click.Choice(["shape", "colour", "profession", "harm"]),
              help="On the bundled models: the world's attribute to switch (the harm mark's values: no, yes).")
@click.option("--classifier", default=None,
              help="On any model: a CLIP model (hub id or local folder) that reads each image as the --from or "
                   "the --to prompt, whichever it is closer to; needs --template.")
@click.option("--from", "value_a", required=True, help="The value of the prompt before the switch, e.g. circle.")
@click.option("--to", "value_b", required=True, help="The value from the switch step on, e.g. square.")
@click.option("--template", default=None,
              help="The prompt with '{}' where the value goes, e.g. 'a photo of a {} doctor' (on the bundled "
                   "models the default is per group, e.g. 'a photo of a {} figure').")
@click.option("--steps", default=20, show_default=True, type=int, help="Denoising steps.")
@click.option("--guidance", default=None, type=float, help="Guidance scale (default: the model's).")
@click.option("--images", default=32, show_default=True, type=int, help="Images per switch step (same seeds).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--switch-step", "switch_steps", multiple=True, type=int,
              help="A switch step to measure (repeatable; default: every step 0..--steps).")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results to this JSON file.")
@one_line_errors
def settle(model, device, dtype, group, classifier, value_a, value_b, template, steps, guidance, images, seed, switch_steps,
           json_path) -> None:
    """Switch the prompt from one value to another at each step; report the share of images showing the second.

    \b
    For switch step i the first i steps use the --from prompt, the rest the --to prompt, on the same seeds;
    each share has its Wilson 95% interval. The settle step is the first i where fewer than half the images
    show the --to value: a concept for that attribute must act before it. On the bundled models --group
    reads images with the world's probes; on any model --classifier reads them with CLIP
    (hsteer.evaluation.settle.settle takes any classifier from Python).
    """
    from hsteer.checks import check_count, check_device, check_output_file, check_seed
    from hsteer.errors import HsteerError
    from hsteer.evaluation.settle import clip_settle, free_prompts, settle_table, world_prompts, world_settle
    from hsteer.fileio import atomic_write_text
    from hsteer.model import load_quietly

    if (group is None) == (classifier is None):
        raise HsteerError("give --group (the bundled models, read by the world's probes) or --classifier (a CLIP "
                          "model, any model), not both or neither")
    if group is not None and not _reads_world(model):
        raise HsteerError(f"--group reads images with the bundled world's probes, which cannot read {model}; "
                          "pass --classifier CLIP (a hub id or local folder) and --template, or call "
                          "hsteer.evaluation.settle.settle(pipe, ..., read=<your classifier>) from Python")
    if classifier is not None and template is None:
        raise HsteerError("--classifier needs --template, the prompt with '{}' where the value goes, "
                          "e.g. 'a photo of a {} doctor'")
    check_count("--steps", steps, 1, 10_000)
    check_count("--images", images, 1, 4096)
    check_seed("--seed", seed, span=2**32)
    if group is not None:  # the prompts are checked before the model loads
        world_prompts(group, value_a, value_b, template)
    else:
        free_prompts(value_a, value_b, template)
    device = check_device(device, "--device")
    if json_path is not None:
        check_output_file(json_path, "--json")
    if classifier is not None:
        from hsteer.evaluation.clip import ClipScorer

        scorer = ClipScorer(classifier, device=device)
    pipe = load_quietly(model, device, dtype)
    budget = dict(steps=steps, images=images, seed=seed, guidance=guidance, switch_steps=list(switch_steps) or None)
    if group is not None:
        result = world_settle(pipe, group, value_a, value_b, template=template, **budget)
    else:
        result = clip_settle(pipe, scorer, value_a, value_b, template, **budget)
    click.echo(f"'{result.prompt_a}' -> '{result.prompt_b}' at step i; share of images showing {value_b}:")
    click.echo(settle_table([(f"{group or 'CLIP'}: {value_a} -> {value_b}", result)]))
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
