"""`hsteer train`: learn a concept into a bank."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from hsteer.cli.common import method_flag, model_options, one_line_errors
from hsteer.errors import HsteerError
from hsteer.training.registry import METHODS


def method_option_flags(command):
    """Each registered method's own settings as options (`--lr-sam`, ...), defaults from its config class."""
    for method in reversed(tuple(METHODS)):
        defaults = {f.name: f.default for f in fields(method.config)}
        for option in reversed(method.options):
            command = click.option(method_flag(option.field), option.field, default=defaults[option.field], show_default=True,
                                   type=int if option.whole else float,
                                   help=f"{method.title}: {option.help}")(command)
    return command


HELP = "Learn a concept and add (or replace) it in a bank.\n\n\b\n" + "\n".join(
    f"{method.name + ':':10} {method.summary}" for method in METHODS)


@click.command(help=HELP)
@model_options
@click.option("--objective", type=click.Choice(METHODS.names()), default=METHODS.names()[0], show_default=True)
@click.option("--bank", "bank_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Bank file to add the concept to (created if missing).")
@click.option("--concept", "concepts", required=True, multiple=True,
              help="Concept name, e.g. woman. Give it several times (with one --target each, in order) to train "
                   "a group's concepts together: one trajectory pool and one U-Net pass per iteration for all.")
@click.option("--group", required=True, help="Group name, e.g. gender or safety.")
@click.option("--neutral", required=True, help="Neutral prompt, e.g. 'a person'.")
@click.option("--target", "targets", multiple=True,
              help="Target prompt, e.g. 'a woman' (one per --concept; or one holding {concept}, filled per concept).")
@click.option("--negative", default=None, help="Prompt to steer away from (safety), e.g. 'violence'.")
@click.option("--iterations", default=1000, show_default=True, type=int)
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--steps", default=50, show_default=True, type=int, help="Denoising steps of the DDIM schedule.")
@click.option("--lr", default=0.05, show_default=True, type=float, help="Learning rate (RespoDiff: of RAM).")
@click.option("--target-guidance", default=4.0, show_default=True, type=float,
              help="CFG scale of the target noise (safety: 12 in RespoDiff).")
@click.option("--sampling-guidance", default=3.0, show_default=True, type=float,
              help="CFG scale of the reverse process that reaches z_t.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--init-std", default=0.0, show_default=True, type=float, help="Std of the random initial concept.")
@click.option("--stored-scale", default=1.0, show_default=True, type=float,
              help="Store the learned concept at this fraction of its length (the world recipe's hardened safety "
                   "concept: 0.8, docs/attacks.md).")
@method_option_flags
@click.option("--height", default=None, type=int, help="Image height (default: the model's native size).")
@click.option("--width", default=None, type=int, help="Image width (default: the model's native size).")
@click.option("--pair", "pairs", nargs=2, multiple=True, metavar="NEUTRAL TARGET",
              help="A (neutral, target) prompt pair that holds the other attributes fixed (repeatable; rows of a "
                   "batch cycle through them), e.g. --pair 'a photo of a Black person' 'a photo of a Black woman'.")
@click.option("--window", default=None, metavar="START,END",
              help="Learn and apply the concept only in these fractions of the denoising steps, e.g. 0.4,1.0.")
@click.option("--site", "site", multiple=True, metavar="SITE",
              help="Steering site: mid_block (U-Net), transformer_blocks.N, single_transformer_blocks.N (FLUX) or text "
                   "(an offset on the prompt embeddings). Default: the model's default site. Repeated, or joined by "
                   "commas (A,B): a set of sites, one tensor per site learned jointly and applied together.")
@click.option("--mode", type=click.Choice(["fast", "reference"]), default="fast", show_default=True,
              help="fast: reuse staggered reverse trajectories for every training signal; reference: the papers' "
                   "fresh reverse process per sample (slow; for comparison).")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute the up blocks' activations in backward: less memory, ~1 extra up-block pass.")
@click.option("--checkpoint-every", default=100, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue from the concept's last checkpoint.")
@click.option("--allow-other-model", is_flag=True,
              help="Add to a bank learned on a U-Net with another config (same h-space shape).")
@one_line_errors
def train(model, device, dtype, objective, bank_path, concepts, group, neutral, targets, negative, iterations,
          batch_size, steps, lr, target_guidance, sampling_guidance, seed, init_std, stored_scale, height, width,
          pairs, window, site, mode, gradient_checkpointing, checkpoint_every, resume, allow_other_model,
          **method_settings) -> None:
    """Learn a concept and add (or replace) it in a bank (the help lists the registered methods: `HELP`)."""
    from hsteer.checks import check_device
    from hsteer.model import load_quietly
    from hsteer.policy_forms import parse_window
    from hsteer.training import TrainConfig, train_into_bank
    from hsteer.training.group import check_group_settings
    from hsteer.training.run import check_bank_target, train_group_into_bank

    extras = method_options(objective, **method_settings)
    _check_no_placeholder(neutral, negative, pairs)
    settings = dict(group=group, neutral=neutral, negative=negative, iterations=iterations, batch_size=batch_size,
                    steps=steps, lr=lr, target_guidance=target_guidance, sampling_guidance=sampling_guidance,
                    seed=seed, init_std=init_std, stored_scale=stored_scale, height=height, width=width, mode=mode,
                    window=parse_window(window), site=",".join(site) if site else None, **extras)
    configs = [TrainConfig.for_objective(objective, concept=name, target=target,
                                         pairs=_pairs_for(pairs, name, len(concepts)), **settings)
               for name, target in zip(concepts, _targets_for(targets, concepts))]
    from hsteer.model.geometry import check_model_folder_size

    for config in configs:
        config.validate()
        check_model_folder_size(model, config.height, config.width)
        check_bank_target(bank_path, config.concept, checkpoint_every)
    if len(configs) > 1:
        _check_group_flags(gradient_checkpointing)
        check_group_settings(configs)  # each config validated above
    pipe = load_quietly(model, check_device(device, "--device"), dtype)
    if len(configs) > 1:
        results = train_group_into_bank(pipe, configs, bank_path, resume=resume, checkpoint_every=checkpoint_every,
                                        allow_other_model=allow_other_model)
    else:
        results = [train_into_bank(pipe, configs[0], bank_path, resume=resume, checkpoint_every=checkpoint_every,
                                   checkpoint_activations=gradient_checkpointing,
                                   allow_other_model=allow_other_model)]
    for result in results:
        last = result.losses[-1]["loss"] if result.losses else float("nan")
        where = f"; log in {result.run_dir}" if result.run_dir is not None else ""
        click.echo(f"saved concept {result.concept.name!r} (group {group!r}, {objective}) to {bank_path}; "
                   f"final loss {last:.4g}; {result.seconds:.1f}s{where}")


def _targets_for(targets: tuple[str, ...], concepts: tuple[str, ...]) -> list[str | None]:
    """One target per concept: as given, one each (a {concept} in it filled with its concept's name); or one
    holding {concept}; none (safety) for a lone concept."""
    if len(targets) == len(concepts):
        return [target.replace("{concept}", name) for target, name in zip(targets, concepts)]
    if len(targets) == 1 and "{concept}" in targets[0]:
        return [targets[0].replace("{concept}", name) for name in concepts]
    if not targets and len(concepts) == 1:
        return [None]
    raise HsteerError(f"{len(concepts)} --concept and {len(targets)} --target given: give one --target per "
                      "--concept, in the same order, or one --target holding {concept}")


def _pairs_for(pairs: tuple[tuple[str, str], ...], concept: str, count: int) -> tuple[tuple[str, str], ...] | None:
    """--pair as given for one concept; for a group, each pair's target must hold {concept}."""
    if not pairs:
        return None
    if count > 1 and not all("{concept}" in target for _, target in pairs):
        raise HsteerError("with several --concept, each --pair's target must hold {concept}, e.g. --pair "
                          "'a photo of a red figure' 'a photo of a red {concept} figure'")
    return tuple((neutral, target.replace("{concept}", concept)) for neutral, target in pairs)


def _check_no_placeholder(neutral: str, negative: str | None, pairs: tuple[tuple[str, str], ...]) -> None:
    """{concept} is filled in targets only: in a prompt every concept shares it would be learned literally."""
    for label, text in (("--neutral", neutral), ("--negative", negative), *(("--pair's neutral side", n)
                                                                              for n, _ in pairs)):
        if text is not None and "{concept}" in text:
            raise HsteerError(f"{label} {text!r} holds {{concept}}, which is filled only in targets (--target and "
                              "--pair's second prompt); the neutral prompt is the same for every concept")


def _check_group_flags(gradient_checkpointing: bool) -> None:
    if gradient_checkpointing:
        raise HsteerError("--gradient-checkpointing is not available when training several concepts together; "
                          "drop it, or train them one by one")


def method_options(objective: str, **options) -> dict:
    """The method-specific options that `objective` takes; one given on the command line for another method
    is an error, since it would be silently ignored."""
    takes = {f.name for f in fields(METHODS.get(objective).config)}
    ctx = click.get_current_context()
    for name in options:
        given = ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        if name not in takes and given:
            raise HsteerError(f"--{name.replace('_', '-')} is a setting of --objective {METHODS.owner(name).name}, "
                              f"not of {objective}")
    return {name: value for name, value in options.items() if name in takes}
