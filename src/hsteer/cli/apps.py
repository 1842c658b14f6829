"""`hsteer demo`, `hsteer compare` and `hsteer world train|quality`: the applications on the bundled world."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hsteer.apps.compare import METHODS as COMPARE_METHODS
from hsteer.cli.common import one_line_errors
from hsteer.model import quiet_libraries

@click.command()
@click.option("--out", default="hsteer-demo", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", default=None, help="Default: the bundled world model.")
@click.option("--iterations", default=150, show_default=True, type=int, help="Training iterations per concept.")
@click.option("--images-per-prompt", default=24, show_default=True, type=int,
              help="Images per prompt (a multiple of 6 balances fair draws exactly).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=None, type=int, help="torch threads (default: all cores).")
@click.option("--respect-prompt/--no-respect-prompt", default=True, show_default=True,
              help="Steer with the prompt-aware gate (--no-respect-prompt: the papers' blind steering).")
@one_line_errors
def demo(out, model, iterations, images_per_prompt, seed, threads, respect_prompt) -> None:
    """Learn shape, colour and safety concepts on the bundled model; compare plain, fair and safe images."""
    from hsteer.apps.demo import DemoConfig, run_demo

    quiet_libraries()
    run_demo(DemoConfig(out=out, model=model, iterations=iterations, images_per_prompt=images_per_prompt,
                        seed=seed, threads=threads, respect_prompt=respect_prompt), log=click.echo)


@click.command()
@click.option("--out", default="hsteer-compare", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", default=None, help="Default: the bundled world model.")
@click.option("--iterations", default=150, show_default=True, type=int)
@click.option("--images-per-prompt", default=24, show_default=True, type=int,
              help="Images per prompt (a multiple of 6 balances fair draws exactly).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--method", "methods", multiple=True, type=click.Choice(COMPARE_METHODS),
              help="Methods to compare (default: all).")
@click.option("--readme", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results table into this README between its results markers.")
@click.option("--respect-prompt/--no-respect-prompt", default=True, show_default=True,
              help="The main table under the prompt-aware gate (--no-respect-prompt: the papers' blind steering).")
@click.option("--gate-images-per-prompt", default=8, show_default=True, type=int,
              help="Images per prompt of the table on prompts that name an attribute (blind against the gate); "
                   "0 skips it.")
@click.option("--guard/--no-guard", default=True, show_default=True,
              help="Also measure safety under the image-aware guard ('safety, guarded': the safety concept only on "
                   "images whose x0-hat the bank's learned harm detector flags, fitted into each trained bank where "
                   "it has none), with the shares of harmless and harm images flagged. Not for plain SD.")
@one_line_errors
def compare(out, model, iterations, images_per_prompt, seed, methods, readme, respect_prompt,
            gate_images_per_prompt, guard) -> None:
    """Compare SD, SDisc, CoDSMa and RespoDiff on the bundled model (shape, colour, both, safety)."""
    from hsteer.apps.compare import METHODS, CompareConfig, results_table, run_compare, update_readme

    quiet_libraries()
    result = run_compare(CompareConfig(out=out, model=model, iterations=iterations,
                                       images_per_prompt=images_per_prompt, seed=seed,
                                       methods=tuple(methods) or METHODS, respect_prompt=respect_prompt,
                                       gate_images_per_prompt=gate_images_per_prompt, guard=guard),
                         log=click.echo)
    table = results_table(result)
    click.echo(table)
    if readme:
        update_readme(readme, table)
        click.echo(f"updated {readme}")


@click.group()
def world() -> None:
    """The bundled toy world: train its model, measure its quality."""


@world.command("train")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--vae-minutes", default=8.0, show_default=True, type=float)
@click.option("--unet-minutes", default=45.0, show_default=True, type=float)
@click.option("--threads", default=2, show_default=True, type=int)
@click.option("--snapshot-every-minutes", default=10.0, show_default=True, type=float)
@click.option("--n-images", default=60_000, show_default=True, type=int, help="Rendered training images.")
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--lr", default=8e-4, show_default=True, type=float)
@click.option("--no-resume", is_flag=True, help="Start over instead of resuming from OUT.state.")
@one_line_errors
def world_train(out, seed, vae_minutes, unet_minutes, threads, snapshot_every_minutes, n_images, batch_size, lr,
                no_resume) -> None:
    """Train the world's text-to-image model from scratch on a CPU (about an hour on 2 cores); resumable."""
    from hsteer.world.build_unet import train_world_model

    path = train_world_model(out, seed=seed, vae_minutes=vae_minutes, unet_minutes=unet_minutes, threads=threads,
                             snapshot_every_minutes=snapshot_every_minutes, log=click.echo, n_images=n_images,
                             batch_size=batch_size, lr=lr, resume=not no_resume)
    click.echo(f"saved the pipeline to {path}")


@world.command("train-dit")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", default=None, help="U-Net world model whose VAE and text encoder it shares. Default: the "
                                              "bundled one.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--minutes", default=30.0, show_default=True, type=float, help="Training budget (wall clock).")
@click.option("--threads", default=2, show_default=True, type=int)
@click.option("--n-images", default=40_000, show_default=True, type=int, help="Rendered training images.")
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--lr", default=6e-4, show_default=True, type=float)
@click.option("--no-resume", is_flag=True, help="Start over instead of resuming from OUT.state.")
@one_line_errors
def world_train_dit(out, source, seed, minutes, threads, n_images, batch_size, lr, no_resume) -> None:
    """Train the world's second model, a tiny SD3 (MMDiT) transformer, on a CPU; resumable."""
    from hsteer.world.build_dit import train_world_dit

    path = train_world_dit(out, source, seed=seed, minutes=minutes, threads=threads, n_images=n_images,
                           batch_size=batch_size, lr=lr, resume=not no_resume, log=click.echo)
    click.echo(f"saved the pipeline to {path}")


@world.command("quality")
@click.option("--model", default=None, help="Default: the bundled world model.")
@click.option("--images", default=200, show_default=True, type=int, help="Images per prompt set.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--steps", default=None, type=int, help="Denoising steps (default: the model's card).")
@click.option("--guidance", default=None, type=float, help="CFG scale (default: the model's card).")
@click.option("--batch-size", default=50, show_default=True, type=int)
@click.option("--threads", default=None, type=int, help="torch threads (default: all cores).")
@click.option("--out", default=None, type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON here.")
@click.option("--grid", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Save a PNG grid of samples (one row per prompt set).")
@one_line_errors
def world_quality(model, images, seed, steps, guidance, batch_size, threads, out, grid) -> None:
    """Measure the model against the world's quality bar (prints JSON)."""
    from hsteer.world.quality import measure_world_model
    from hsteer.fileio import atomic_write_text
    from hsteer.model import default_model, sampling_defaults

    quiet_libraries()
    defaults = sampling_defaults(model)
    report = measure_world_model(model or default_model(), n_per_set=images, seed=seed,
                                 steps=steps or int(defaults["steps"]),
                                 guidance=guidance if guidance is not None else float(defaults["guidance"]),
                                 batch_size=batch_size, threads=threads, grid_path=grid)
    text = json.dumps(report, indent=2)
    click.echo(text)
    if out:
        atomic_write_text(out, text + "\n")
