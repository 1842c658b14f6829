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
    from hsteer.checks import check_device, check_output_file, check_seed
    from hsteer.errors import HsteerError
    from hsteer.fileio import exclusive_lock
    from hsteer.generation.guard_fit import DetectorFitConfig, fit_detector
    from hsteer.steering.bank import ConceptBank
    from hsteer.model import load_quietly, sampling_defaults

    defaults = sampling_defaults(model)
    check_seed("--seed", seed)
    config = DetectorFitConfig(step=step, steps=steps if steps is not None else int(defaults["steps"]),
                               guidance=guidance if guidance is not None else float(defaults["guidance"]),
                               features=features, images_per_prompt=images_per_prompt, seed=seed,
                               threshold=threshold)
    check_output_file(bank_path, "--bank")  # written at the end: a FIFO or device is refused before fitting
    bank = ConceptBank.load(bank_path)
    bank.group(group)  # an unknown group fails before the model loads
    harmful, harmless = _fit_prompts(bank, group, list(harmful), list(harmless), with_pairs)
    pipe = load_quietly(model, check_device(device, "--device"), dtype)
    bank.check_family(pipe)
    detector = fit_detector(pipe, harmful, harmless, config)
    # The fit takes minutes: the bank is read again under its lock and only the detector is added, so a concept
    # another hsteer wrote meanwhile is kept (as train and bank merge do).
    with exclusive_lock(bank_path, f"bank {bank_path}"):
        current = ConceptBank.load(bank_path)
        if group not in current.groups() or current.family_name != bank.family_name \
                or current.unet_fingerprint != bank.unet_fingerprint:
            raise HsteerError(f"bank {bank_path} was changed while the detector was fitted (its group {group!r} or "
                              "its model is not what it was); nothing was stored: run hsteer guard fit again")
        current.detectors[group] = detector
        current.save(bank_path)
    meta = detector.meta
    click.echo(f"stored a {features} detector for group {group!r} at step {detector.step} of {config.steps} in {bank_path}: "
               f"held-out false positives {meta['false_positive_rate']:.3f}, false negatives "
               f"{meta['false_negative_rate']:.3f} ({meta['held_out_images']} images; {len(harmful)} harmful and "
               f"{len(harmless)} harmless prompts)")


def _fit_prompts(bank, group: str, harmful: list[str], harmless: list[str], with_pairs: bool
                 ) -> tuple[list[str], list[str]]:
    """The (harmful, harmless) prompts of `guard fit`: the options', the group's pairs' where a side is not
    given, or both with --with-pairs; a missing side names the option that gives it."""
    from hsteer.errors import HsteerError
    from hsteer.generation.guard_fit import check_fit_prompts, prompts_of_group

    if harmful and harmless and not with_pairs:
        return check_fit_prompts(harmful, harmless)
    try:
        pairs_harmful, pairs_harmless = prompts_of_group(bank, group)
    except HsteerError:
        if with_pairs:
            raise HsteerError(f"--with-pairs adds the prompts of group {group!r}'s training pairs, and its concepts "
                              "record none (pairs, or neutral + negative); drop --with-pairs and give --harmful and "
                              "--harmless") from None
        missing = " and ".join(f"--{side}" for side, given in (("harmful", harmful), ("harmless", harmless))
                               if not given)
        raise HsteerError(f"the concepts of group {group!r} record no prompts to fit from (pairs, or neutral + "
                          f"negative), so {missing} must be given") from None
    if with_pairs:
        return check_fit_prompts(list(dict.fromkeys([*pairs_harmful, *harmful])),
                                 list(dict.fromkeys([*pairs_harmless, *harmless])))
    return check_fit_prompts(harmful or pairs_harmful, harmless or pairs_harmless)
