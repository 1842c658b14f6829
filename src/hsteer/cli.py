"""The `hsteer` command line: a thin layer over the Python API."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from hsteer.errors import HsteerError


def _quiet_libraries() -> None:
    """Library load bars and warnings would drown hsteer's own progress bars."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.disable_progress_bar()
    tlog.set_verbosity_error()


def _one_line_errors(fn):
    """Errors are one clear line on stderr and exit status 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HsteerError as exc:
            raise click.ClickException(str(exc)) from None
        except FileNotFoundError as exc:
            raise click.ClickException(f"file not found: {exc.filename or exc}") from None
        except KeyboardInterrupt:
            click.echo("interrupted; rerun with --resume where the command supports it", err=True)
            sys.exit(130)

    return wrapper


def _load(model: str | None, device: str, dtype: str):
    from hsteer.models import load_pipeline

    _quiet_libraries()
    if threads := os.environ.get("HSTEER_THREADS"):
        import torch

        torch.set_num_threads(int(threads))
    return load_pipeline(model, device=device, dtype=dtype)


def model_options(fn):
    fn = click.option("--dtype", default="float32", show_default=True,
                      type=click.Choice(["float32", "float16", "bfloat16"]), help="Weights' precision.")(fn)
    fn = click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda, cuda:1.")(fn)
    fn = click.option("--model", default=None,
                      help="Hub id or local diffusers folder (SD 1.x/2.x or SDXL). Default: the bundled world model.")(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="hsteer")
def main() -> None:
    """hsteer: fair and safe text-to-image generation by steering the h-space of diffusers U-Nets."""


# --- train ---------------------------------------------------------------------------------------


@main.command()
@model_options
@click.option("--objective", type=click.Choice(["codsma", "respodiff", "sdisc"]), default="codsma", show_default=True)
@click.option("--bank", "bank_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Bank file to add the concept to (created if missing).")
@click.option("--concept", required=True, help="Concept name, e.g. woman.")
@click.option("--group", required=True, help="Group name, e.g. gender or safety.")
@click.option("--neutral", required=True, help="Neutral prompt, e.g. 'a person'.")
@click.option("--target", default=None, help="Target prompt, e.g. 'a woman'.")
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
@click.option("--lr-sam", default=1e-3, show_default=True, type=float, help="RespoDiff: learning rate of SAM.")
@click.option("--lam", default=0.5, show_default=True, type=float, help="RespoDiff: weight lambda of L_sem.")
@click.option("--sdisc-images", default=64, show_default=True, type=int,
              help="SDisc: target-prompt images generated with the plain model.")
@click.option("--sdisc-epochs", default=20, show_default=True, type=int, help="SDisc: epochs over those images.")
@click.option("--height", default=None, type=int, help="Image height (default: the model's native size).")
@click.option("--width", default=None, type=int, help="Image width (default: the model's native size).")
@click.option("--mode", type=click.Choice(["fast", "reference"]), default="fast", show_default=True,
              help="fast: reuse staggered reverse trajectories for every training signal; reference: the papers' "
                   "fresh reverse process per sample (slow; for comparison).")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute the up blocks' activations in backward: less memory, ~1 extra up-block pass.")
@click.option("--checkpoint-every", default=100, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue from the concept's last checkpoint.")
@_one_line_errors
def train(model, device, dtype, objective, bank_path, concept, group, neutral, target, negative, iterations,
          batch_size, steps, lr, target_guidance, sampling_guidance, seed, init_std, lr_sam, lam, sdisc_images,
          sdisc_epochs, height, width, mode, gradient_checkpointing, checkpoint_every, resume) -> None:
    """Learn a concept and add (or replace) it in a bank.

    \b
    codsma:    one vector c; || eps(z_t; h + c, neutral) - eps_target ||^2
    respodiff: ram on that loss, sam on lam * || eps(h + ram + sam, neutral) - eps(h, neutral) ||^2
    sdisc:     c by the plain denoising loss on images of the target prompt, conditioned on neutral
    """
    from hsteer.training import TrainConfig, train_into_bank

    config = TrainConfig(concept=concept, group=group, neutral=neutral, target=target, negative=negative,
                         objective=objective, iterations=iterations, batch_size=batch_size, steps=steps, lr=lr,
                         target_guidance=target_guidance, sampling_guidance=sampling_guidance, seed=seed,
                         init_std=init_std, height=height, width=width, lr_sam=lr_sam, lam=lam,
                         sdisc_images=sdisc_images, sdisc_epochs=sdisc_epochs, mode=mode)
    config.validate()
    pipe = _load(model, device, dtype)
    result = train_into_bank(pipe, config, bank_path, resume=resume, checkpoint_every=checkpoint_every,
                             checkpoint_activations=gradient_checkpointing)
    last = result.losses[-1]["loss"] if result.losses else float("nan")
    click.echo(f"saved concept {concept!r} (group {group!r}, {objective}) to {bank_path}; "
               f"final loss {last:.4g}; {result.seconds:.1f}s; log in {result.run_dir}")


# --- generate ------------------------------------------------------------------------------------


def build_policy(fair: str | None, safe: bool, concepts: tuple[str, ...], scales: tuple[str, ...] = ()):
    from hsteer.generation import FairPolicy, PlainPolicy, SafePolicy, parse_concept_specs

    chosen = sum(bool(x) for x in (fair, safe, concepts))
    if chosen > 1:
        raise HsteerError("choose one of --fair, --safe or --concept")
    group_scales = {}
    for spec in scales:
        group, _, value = spec.partition("=")
        try:
            group_scales[group] = float(value)
        except ValueError:
            raise HsteerError(f"bad --group-scale {spec!r}: write GROUP=SCALE, e.g. gender=1.1") from None
    if fair:
        return FairPolicy(tuple(g.strip() for g in fair.split(",") if g.strip()), group_scales)
    if safe:
        return SafePolicy(scale=group_scales.get("safety", 1.0))
    if concepts:
        return parse_concept_specs(concepts)
    return PlainPolicy()


@main.command()
@model_options
@click.option("--prompt", "prompts", multiple=True, required=True, help="Prompt (repeat for several).")
@click.option("--num-images", default=1, show_default=True, type=int, help="Images per prompt.")
@click.option("--seed", default=0, show_default=True, type=int, help="Image i of each prompt gets seed SEED + i.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--bank", "bank_path", default=None, type=click.Path(dir_okay=False, path_type=Path))
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
@click.option("--allow-other-model", is_flag=True, help="Use a bank learned on a U-Net with another config.")
@_one_line_errors
def generate(model, device, dtype, prompts, num_images, seed, out_dir, bank_path, fair, safe, concepts, scales,
             steps, guidance, batch_size, height, width, steer_unconditional, allow_other_model) -> None:
    """Generate images (plain, fair, safe or with explicit concepts) and write manifest.jsonl."""
    from hsteer.bank import ConceptBank
    from hsteer.generation import PlainPolicy, generate as run
    from hsteer.models import sampling_defaults

    policy = build_policy(fair, safe, concepts, scales)
    if not isinstance(policy, PlainPolicy) and bank_path is None:
        raise HsteerError("--fair, --safe and --concept need --bank")
    bank = ConceptBank.load(bank_path) if bank_path else None
    defaults = sampling_defaults(model)
    pipe = _load(model, device, dtype)
    out = run(pipe, list(prompts), num_images_per_prompt=num_images, seed=seed, bank=bank, policy=policy,
              steps=steps or defaults["steps"], guidance=guidance if guidance is not None else defaults["guidance"],
              height=height, width=width, batch_size=batch_size, steer_unconditional=steer_unconditional,
              allow_other_model=allow_other_model, out_dir=out_dir)
    click.echo(f"wrote {len(out)} images and manifest.jsonl to {out_dir}")


# --- bank ----------------------------------------------------------------------------------------


@main.group()
def bank() -> None:
    """Inspect and combine concept banks."""


@bank.command("show")
@click.argument("bank_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_one_line_errors
def bank_show(bank_path, as_json) -> None:
    """List a bank's concepts, groups, tensors and training settings."""
    from hsteer.bank import ConceptBank

    info = ConceptBank.load(bank_path).describe()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{bank_path}: h-space {tuple(info['hspace_shape'])}, U-Net {info['unet_fingerprint']}")
    for c in info["concepts"]:
        tensors = ", ".join(f"{k}{tuple(v)}" for k, v in c["tensors"].items())
        prompts = " ".join(f"{k}={c[k]!r}" for k in ("neutral", "target", "negative") if c.get(k))
        click.echo(f"  {c['group']}/{c['name']}: {c['objective']} [{tensors}] {prompts}")


@bank.command("merge")
@click.argument("banks", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="On a name clash, later banks win (default: error).")
@_one_line_errors
def bank_merge(banks, out, replace) -> None:
    """Merge banks of the same model into one."""
    from hsteer.bank import ConceptBank

    merged = ConceptBank.load(banks[0])
    for path in banks[1:]:
        merged = merged.merge(ConceptBank.load(path), replace=replace)
    merged.save(out)
    click.echo(f"wrote {len(merged)} concepts to {out}")


# --- demo and the bundled world --------------------------------------------------------------------


@main.command()
@click.option("--out", default="hsteer-demo", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", default=None, help="Default: the bundled world model.")
@click.option("--iterations", default=150, show_default=True, type=int, help="Training iterations per concept.")
@click.option("--images-per-prompt", default=24, show_default=True, type=int,
              help="Images per prompt (a multiple of 6 balances fair draws exactly).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=None, type=int, help="torch threads (default: all cores).")
@_one_line_errors
def demo(out, model, iterations, images_per_prompt, seed, threads) -> None:
    """Learn shape, colour and safety concepts on the bundled model; compare plain, fair and safe images."""
    from hsteer.demo import DemoConfig, run_demo

    _quiet_libraries()
    run_demo(DemoConfig(out=out, model=model, iterations=iterations, images_per_prompt=images_per_prompt,
                        seed=seed, threads=threads), log=click.echo)


@main.command()
@click.option("--out", default="hsteer-compare", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", default=None, help="Default: the bundled world model.")
@click.option("--iterations", default=150, show_default=True, type=int)
@click.option("--images-per-prompt", default=24, show_default=True, type=int,
              help="Images per prompt (a multiple of 6 balances fair draws exactly).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--method", "methods", multiple=True, type=click.Choice(["sd", "sdisc", "codsma", "respodiff"]),
              help="Methods to compare (default: all).")
@click.option("--readme", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results table into this README between its results markers.")
@_one_line_errors
def compare(out, model, iterations, images_per_prompt, seed, methods, readme) -> None:
    """Compare SD, SDisc, CoDSMa and RespoDiff on the bundled model (shape, colour, both, safety)."""
    from hsteer.compare import METHODS, CompareConfig, results_table, run_compare, update_readme

    _quiet_libraries()
    result = run_compare(CompareConfig(out=out, model=model, iterations=iterations,
                                       images_per_prompt=images_per_prompt, seed=seed,
                                       methods=tuple(methods) or METHODS), log=click.echo)
    table = results_table(result)
    click.echo(table)
    if readme:
        update_readme(readme, table)
        click.echo(f"updated {readme}")


@main.group()
def world() -> None:
    """The bundled toy world: train its model, measure its quality."""


@world.command("train")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--vae-minutes", default=8.0, show_default=True, type=float)
@click.option("--unet-minutes", default=45.0, show_default=True, type=float)
@click.option("--threads", default=2, show_default=True, type=int)
@_one_line_errors
def world_train(out, seed, vae_minutes, unet_minutes, threads) -> None:
    """Train the world's text-to-image model from scratch on a CPU (about an hour on 2 cores)."""
    from hsteer.world.train import train_world_model

    path = train_world_model(out, seed=seed, vae_minutes=vae_minutes, unet_minutes=unet_minutes, threads=threads,
                             log=click.echo)
    click.echo(f"saved the pipeline to {path}")


@world.command("quality")
@click.option("--model", default=None, help="Default: the bundled world model.")
@click.option("--images", default=200, show_default=True, type=int, help="Images per prompt set.")
@click.option("--seed", default=0, show_default=True, type=int)
@_one_line_errors
def world_quality(model, images, seed) -> None:
    """Measure the model against the world's quality bar (prints JSON)."""
    from hsteer.models import default_model
    from hsteer.world.quality import measure_world_model

    _quiet_libraries()
    click.echo(json.dumps(measure_world_model(model or default_model(), n_per_set=images, seed=seed), indent=2))


@main.command()
@click.option("--model", default=None, help="Hub id or local diffusers folder. Default: the bundled world model.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]))
@click.option("--bank", "banks", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A bank the page may load (repeatable); the first is every session's starting bank.")
@click.option("--allow-dir", "allowed_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A folder whose files (banks, eval runs) may be opened by path from the page (repeatable).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", default=None, type=int, help="Port (default: 7860 or the next free one).")
@click.option("--share", is_flag=True, help="Also open a public Gradio share link.")
@_one_line_errors
def ui(model, device, dtype, banks, allowed_dirs, host, port, share) -> None:
    """Open the web page: plain vs responsible images, learn concepts, inspect banks, evaluate."""
    try:
        from hsteer.ui.app import launch
    except ImportError as exc:
        raise click.ClickException(f"the web page needs the ui extra: pip install 'hsteer[ui]' ({exc})") from None
    _quiet_libraries()
    launch(model=model, bank=banks, host=host, port=port, share=share, allowed_dirs=allowed_dirs, device=device,
           dtype=dtype)


from hsteer.cli_eval import register as _register_eval  # noqa: E402

_register_eval(main)


if __name__ == "__main__":
    main()
