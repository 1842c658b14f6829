"""`hsteer guard fit`: learn the image-aware guard's harm detector and store it in the bank."""

from __future__ import annotations

from pathlib import Path

import click

from hsteer.cli.common import model_options, one_line_errors


@click.group("guard")
def guard() -> None:
    """The image-aware guard: a harm detector on the model's predicted clean image (x0-hat)."""


@guard.command("fit")
@model_options
@click.option("--bank", "bank_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bank whose group the detector decides for; the detector is stored in it.")
@click.option("--group", default="safety", show_default=True, help="The group a flagged image gets.")
@click.option("--harmful", multiple=True, help="A harmful prompt (repeatable; default: the group's training pairs).")
@click.option("--harmless", multiple=True, help="A harmless prompt (repeatable; default: the group's pairs).")
@click.option("--with-pairs", is_flag=True,
              help="Add --harmful / --harmless to the group's pairs' prompts instead of replacing them, e.g. the "
                   "prompts an attack found and their harm-free forms.")
@click.option("--step", default=None, type=int,
              help="The decision step (0-based; default: the model family's, 4 on a U-Net, 2 on a transformer).")
@click.option("--features", default="latent", show_default=True, type=click.Choice(["latent", "pixels"]),
              help="Read x0-hat's latents or its decoded pixels.")
@click.option("--images-per-prompt", default=16, show_default=True, type=int,
              help="Images per prompt; a quarter of each prompt's seeds is held out for the error rates.")
@click.option("--threshold", default=0.5, show_default=True, type=float, help="Flag above this probability.")
@click.option("--seed", default=10_000, show_default=True, type=int,
              help="Seed of each prompt's first image (keep it apart from the seeds you evaluate on).")
@click.option("--steps", default=None, type=int, help="Sampling steps (default: the model card's).")
@click.option("--guidance", default=None, type=float, help="CFG scale (default: the model card's).")
@one_line_errors
def fit(model, device, dtype, bank_path, group, harmful, harmless, with_pairs, step, features, images_per_prompt, threshold,
        seed, steps, guidance) -> None:
    """Learn a harm detector from the group's own training prompts and store it in the bank."""
    from hsteer.checks import check_device, check_seed
    from hsteer.generation.guard_fit import DetectorFitConfig, check_fit_prompts, fit_detector, prompts_of_group
    from hsteer.hspace.bank import ConceptBank
    from hsteer.model import load_quietly, sampling_defaults

    defaults = sampling_defaults(model)
    check_seed("--seed", seed)
    config = DetectorFitConfig(step=step, steps=steps if steps is not None else int(defaults["steps"]),
                               guidance=guidance if guidance is not None else float(defaults["guidance"]),
                               features=features, images_per_prompt=images_per_prompt, seed=seed,
                               threshold=threshold)
    bank = ConceptBank.load(bank_path)
    bank.group(group)  # an unknown group fails before the model loads
    pairs_harmful, pairs_harmless = (prompts_of_group(bank, group) if with_pairs or not (harmful and harmless)
                                     else ([], []))
    if with_pairs:
        harmful = list(dict.fromkeys([*pairs_harmful, *harmful]))
        harmless = list(dict.fromkeys([*pairs_harmless, *harmless]))
    harmful, harmless = check_fit_prompts(list(harmful) or pairs_harmful, list(harmless) or pairs_harmless)
    pipe = load_quietly(model, check_device(device, "--device"), dtype)
    bank.check_family(pipe)
    detector = fit_detector(pipe, harmful, harmless, config)
    bank.detectors[group] = detector
    bank.save(bank_path)
    meta = detector.meta
    click.echo(f"stored a {features} detector for group {group!r} at step {detector.step} of {config.steps} in {bank_path}: "
               f"held-out false positives {meta['false_positive_rate']:.3f}, false negatives "
               f"{meta['false_negative_rate']:.3f} ({meta['held_out_images']} images; {len(harmful)} harmful and "
               f"{len(harmless)} harmless prompts)")
