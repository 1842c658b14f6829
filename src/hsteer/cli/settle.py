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
@click.option("--group", required=True, type=click.Choice(["shape", "colour", "profession", "harm"]),
              help="The attribute to switch (the harm mark's values: no, yes).")
@click.option("--from", "value_a", required=True, help="The value of the prompt before the switch, e.g. circle.")
@click.option("--to", "value_b", required=True, help="The value from the switch step on, e.g. square.")
@click.option("--template", default=None,
              help="The prompt with '{}' where the value goes (default per group, e.g. 'a photo of a {} figure').")
@click.option("--steps", default=20, show_default=True, type=int, help="Denoising steps.")
@click.option("--guidance", default=None, type=float, help="Guidance scale (default: the model's).")
@click.option("--images", default=32, show_default=True, type=int, help="Images per switch step (same seeds).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--switch-step", "switch_steps", multiple=True, type=int,
              help="A switch step to measure (repeatable; default: every step 0..--steps).")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results to this JSON file.")
@one_line_errors
def settle(model, device, dtype, group, value_a, value_b, template, steps, guidance, images, seed, switch_steps,
           json_path) -> None:
    """Switch the prompt from one value to another at each step; report the share of images showing the second.

    \b
    For switch step i the first i steps use the --from prompt, the rest the --to prompt, on the same seeds;
    each share has its Wilson 95% interval. The settle step is the first i where fewer than half the images
    show the --to value: a concept for that attribute must act before it. Images are read by the bundled
    world's probes; on another model call hsteer.evaluation.settle.settle from Python with a classifier.
    """
    from hsteer.checks import check_count, check_device, check_output_file, check_seed
    from hsteer.errors import HsteerError
    from hsteer.evaluation.settle import settle_table, world_prompts, world_settle
    from hsteer.fileio import atomic_write_text
    from hsteer.model import load_quietly

    if not _reads_world(model):
        raise HsteerError(f"hsteer settle reads images with the bundled world's probes, which cannot read {model}; "
                          "call hsteer.evaluation.settle.settle(pipe, ..., read=<your classifier>) from Python")
    check_count("--steps", steps, 1, 10_000)
    check_count("--images", images, 1, 4096)
    check_seed("--seed", seed, span=2**32)
    world_prompts(group, value_a, value_b, template)  # checked before the model loads
    device = check_device(device, "--device")
    if json_path is not None:
        check_output_file(json_path, "--json")
    pipe = load_quietly(model, device, dtype)
    result = world_settle(pipe, group, value_a, value_b, template=template, steps=steps, images=images, seed=seed,
                          guidance=guidance, switch_steps=list(switch_steps) or None)
    click.echo(f"'{result.prompt_a}' -> '{result.prompt_b}' at step i; share of images showing {value_b}:")
    click.echo(settle_table([(f"{group}: {value_a} -> {value_b}", result)]))
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
