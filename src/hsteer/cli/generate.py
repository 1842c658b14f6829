"""`hsteer generate`: plain, fair, safe or explicit-concept images with their manifest."""

from __future__ import annotations

from pathlib import Path

import click

from hsteer.cli.common import model_options, one_line_errors
from hsteer.cli.options import (build_guard_config, build_policy, guard_options, policy_options, resolve_guard_choice,
                                sampling_options)


@click.command()
@model_options
@click.option("--prompt", "prompts", multiple=True, required=True, help="Prompt (repeat for several).")
@click.option("--num-images", default=1, show_default=True, type=int, help="Images per prompt.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@policy_options
@guard_options
@click.option("--q16-prompts", "guard_q16_prompts", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="With --guard q16: Q16's prompt embeddings (see `hsteer q16 convert`).")
@sampling_options
@click.option("--init-image", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="img2img: start from this image (the model's img2img pipeline).")
@click.option("--strength", default=None, type=float, help="img2img strength (default 0.8 with --init-image).")
@click.option("--site", default=None, metavar="SITE",
              help="The steering site the bank's concepts must live at (default: the bank's own site); a bank of "
                   "another site is refused.")
@click.option("--overwrite", is_flag=True, help="Replace the images and manifest already in --out.")
@click.option("--resume", is_flag=True, help="Finish an interrupted run in --out (same settings).")
@one_line_errors
def generate(model, device, dtype, prompts, num_images, seed, out_dir, bank_path, fair, safe, concepts, scales,
             steps, guidance, batch_size, height, width, steer_unconditional, allow_other_model, ratios, window,
             respect_prompt, gate, init_image, strength, site, overwrite, resume, guard, guard_step, guard_threshold,
             guard_design, guard_q16_prompts) -> None:
    """Generate images (plain, fair, safe or with explicit concepts) and write manifest.jsonl."""
    from hsteer.checks import check_device
    from hsteer.errors import HsteerError
    from hsteer.fileio import read_image
    from hsteer.generation import generate_planned, plan_generation
    from hsteer.model import load_quietly, sampling_defaults
    from hsteer.model.geometry import check_model_folder_size
    from hsteer.outputs import OutputFolder
    from hsteer.policy_forms import parse_window
    from hsteer.steering.bank import ConceptBank

    policy = build_policy(fair, safe, concepts, scales, ratios)
    if strength is not None and init_image is None:
        raise HsteerError("--strength needs --init-image")
    if init_image is not None and strength is None:
        strength = 0.8
    bank = ConceptBank.load(bank_path) if bank_path else None
    _check_site(site, bank)
    image = read_image(init_image, "--init-image") if init_image is not None else None  # a FIFO, a bomb: refused
    # every setting checked once, before loading, against the model folder's sampling defaults; the run
    # resolves the ones not given from the loaded pipeline (hsteer.model.sampling_for), and its manifest says
    # where each came from
    defaults = sampling_defaults(model)
    plan = plan_generation(list(prompts), sampling=(int(defaults["steps"]), float(defaults["guidance"])),
                           num_images_per_prompt=num_images, seed=seed, bank=bank, policy=policy, steps=steps,
                           guidance=guidance, height=height, width=width, batch_size=batch_size,
                           steer_unconditional=steer_unconditional, allow_other_model=allow_other_model,
                           out_dir=out_dir, overwrite=overwrite, resume=resume, keep_images=False,
                           window=parse_window(window), image=image, strength=strength,
                           respect_prompt=respect_prompt, gate=gate,
                           guard=_guard_config(resolve_guard_choice(guard, policy, bank), bank, bank_path, guard_step,
                                               guard_threshold, guard_design, guard_q16_prompts))
    check_model_folder_size(model, height, width)  # a size the model's denoiser cannot make: before it loads
    if not (overwrite or resume):
        OutputFolder(out_dir).close()  # refuse a folder in use before loading the model
    pipe = load_quietly(model, check_device(device, "--device"), dtype)
    if init_image is not None:
        from diffusers import AutoPipelineForImage2Image

        pipe = AutoPipelineForImage2Image.from_pipe(pipe)
        pipe.set_progress_bar_config(disable=True)
    out = generate_planned(pipe, plan)
    click.echo(f"wrote {len(out)} images and manifest.jsonl to {out_dir}")


def _check_site(site: str | None, bank) -> None:
    """`--site` only names the bank's own site: a bank of another site is refused, not moved."""
    from hsteer.errors import HsteerError

    if site is not None and (bank is None or bank.site_spec != site.strip()):
        raise HsteerError(f"--site {site}: " + (f"the bank's concepts live at site {bank.site_spec}; train a bank at "
                                                f"{site} (hsteer train --site {site})" if bank is not None
                                                else "a site needs --bank"))


def _guard_config(guard: str, bank, bank_path, guard_step, guard_threshold, guard_design, guard_q16_prompts):
    """The run's guard configuration from its options (None for --guard none); the plan checks its group,
    detector and decision step against the bank."""
    from hsteer.errors import HsteerError

    if guard != "none" and bank is None:
        raise HsteerError("--guard adds the bank's safety group to flagged images: give --bank (with --safe or --fair)")
    if guard == "learned" and "safety" not in bank.detectors:
        raise HsteerError("the bank has no harm detector for its safety group; fit one with "
                          f"`hsteer guard fit --bank {bank_path}`, or choose --guard nudenet")
    if guard_q16_prompts is not None and guard != "q16":
        raise HsteerError("--q16-prompts is read only by --guard q16 (Q16's prompt embeddings); drop it, or pass "
                          "--guard q16")
    return build_guard_config(guard, guard_step, guard_threshold, guard_design, guard_q16_prompts)
