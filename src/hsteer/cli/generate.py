"""`hsteer generate`: plain, fair, safe or explicit-concept images with their manifest."""

from __future__ import annotations

from pathlib import Path

import click

from hsteer.cli.common import build_policy, checked_device, load, model_options, one_line_errors


@click.command()
@model_options
@click.option("--prompt", "prompts", multiple=True, required=True, help="Prompt (repeat for several).")
@click.option("--num-images", default=1, show_default=True, type=int, help="Images per prompt.")
@click.option("--seed", default=0, show_default=True, type=int, help="Image i of each prompt gets seed SEED + i.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--bank", "bank_path", default=None,
              help="Bank file or folder, or a Hub repo: USER/REPO[:FILE][@REVISION].")
@click.option("--fair", default=None, help="Group(s) to draw one concept from per image, e.g. gender,race.")
@click.option("--safe", is_flag=True, help="Add the sum of the bank's safety group.")
@click.option("--concept", "concepts", multiple=True, help="NAME or NAME=SCALE (repeatable; summed).")
@click.option("--group-scale", "scales", multiple=True, help="GROUP=SCALE for --fair/--safe, e.g. gender=1.1.")
@click.option("--steps", default=None, type=int, help="Denoising steps (default 50; bundled model: 20).")
@click.option("--guidance", default=None, type=float, help="CFG scale (default 7.5; bundled model: its card's).")
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--height", default=None, type=int)
@click.option("--width", default=None, type=int)
@click.option("--steer-unconditional", is_flag=True, help="Also steer the unconditional CFG half.")
@click.option("--ratio", "ratios", multiple=True,
              help="Non-uniform --fair draws, e.g. woman=0.3,man=0.7 (exact per block of seeds).")
@click.option("--window", default=None, help="Steer only these fractions of the denoising steps, e.g. 0.0,0.6.")
@click.option("--init-image", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="img2img: start from this image (the model's img2img pipeline).")
@click.option("--strength", default=None, type=float, help="img2img strength (default 0.8 with --init-image).")
@click.option("--allow-other-model", is_flag=True, help="Use a bank learned on a U-Net with another config.")
@click.option("--overwrite", is_flag=True, help="Replace the images and manifest already in --out.")
@click.option("--resume", is_flag=True, help="Finish an interrupted run in --out (same settings).")
@one_line_errors
def generate(model, device, dtype, prompts, num_images, seed, out_dir, bank_path, fair, safe, concepts, scales,
             steps, guidance, batch_size, height, width, steer_unconditional, allow_other_model, ratios, window,
             init_image, strength, overwrite, resume) -> None:
    """Generate images (plain, fair, safe or with explicit concepts) and write manifest.jsonl."""
    import dataclasses

    from hsteer.errors import HsteerError
    from hsteer.generation import FairPolicy, PlainPolicy, generate as run, parse_ratios, parse_window, require_bank
    from hsteer.hspace.bank import ConceptBank
    from hsteer.model import sampling_defaults
    from hsteer.outputs import OutputFolder, check_generate_settings

    policy = build_policy(fair, safe, concepts, scales)
    if ratios:
        if not isinstance(policy, FairPolicy):
            raise HsteerError("--ratio needs --fair GROUP")
        policy = dataclasses.replace(policy, ratios=parse_ratios(ratios))
    if strength is not None and init_image is None:
        raise HsteerError("--strength needs --init-image")
    defaults = sampling_defaults(model)
    steps = steps if steps is not None else int(defaults["steps"])
    guidance = guidance if guidance is not None else float(defaults["guidance"])
    check_generate_settings(prompts, num_images, seed, steps, guidance, batch_size, height, width, cli=True)
    steer_window = parse_window(window)
    bank = ConceptBank.load(bank_path) if bank_path else None
    if not isinstance(policy, PlainPolicy):
        require_bank(bank, policy.name)
    if not (overwrite or resume):
        OutputFolder(out_dir)  # refuse a folder in use before loading the model
    pipe = load(model, checked_device(device), dtype)
    image = None
    if init_image is not None:
        from diffusers import AutoPipelineForImage2Image
        from PIL import Image

        pipe = AutoPipelineForImage2Image.from_pipe(pipe)
        pipe.set_progress_bar_config(disable=True)
        image = Image.open(init_image).convert("RGB")
        strength = 0.8 if strength is None else strength
    out = run(pipe, list(prompts), num_images_per_prompt=num_images, seed=seed, bank=bank, policy=policy,
              steps=steps, guidance=guidance, height=height, width=width, batch_size=batch_size,
              steer_unconditional=steer_unconditional, allow_other_model=allow_other_model, out_dir=out_dir,
              overwrite=overwrite, resume=resume, keep_images=False, window=steer_window, image=image,
              strength=strength)
    click.echo(f"wrote {len(out)} images and manifest.jsonl to {out_dir}")
