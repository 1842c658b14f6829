"""What every command shares: one-line errors, the model options, loading, the policy options."""

from __future__ import annotations

import functools
import sys

import click

from hsteer.errors import HsteerError

#: Exit status of a handled error (bad input, a missing file, a failed check): one line on stderr.
EXIT_ERROR = 1


def one_line_errors(fn):
    """Errors are one clear line on stderr and exit status 1 (EXIT_ERROR), not a traceback."""

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


def load(model: str | None, device: str, dtype: str):
    """The pipeline of a command's --model/--device/--dtype, with library logs silenced."""
    from hsteer.model import load_quietly

    return load_quietly(model, device, dtype)


def resolve_device(device: str | None) -> str:
    """'auto' (or nothing): cuda if available, then mps, then cpu; any other value as given."""
    if device not in (None, "", "auto"):
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def model_options(fn):
    fn = click.option("--dtype", default="float32", show_default=True,
                      type=click.Choice(["float32", "float16", "bfloat16"]), help="Weights' precision.")(fn)
    fn = click.option("--device", default="auto", show_default=True,
                      callback=lambda ctx, param, value: resolve_device(value),
                      help="torch device, e.g. cuda, cuda:1, cpu; auto: cuda, then mps, then cpu.")(fn)
    fn = click.option("--model", default=None,
                      help="Hub id or local diffusers folder (SD 1.x/2.x or SDXL). Default: the bundled world model.")(fn)
    return fn


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
