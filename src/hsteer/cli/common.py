"""What every command shares: one-line errors, the model options, loading, the policy options."""

from __future__ import annotations

import functools
import sys

import click

from hsteer.errors import HsteerError

#: Exit status of every handled error (bad input, a missing or broken file, a failed check, a full disk):
#: one line on stderr, no traceback. Click's own usage errors (an unknown option, a bad number) exit 2 too.
EXIT_ERROR = 2
#: Exit status after Ctrl-C.
EXIT_INTERRUPTED = 130

#: What to rerun after Ctrl-C, per command (commands not listed just stop).
RESUME_HINTS = {"train": "rerun the same command with --resume to continue",
                "generate": "rerun the same command with --resume to finish the folder",
                "winobias": "rerun the same command to continue", "i2p": "rerun the same command to continue",
                "coco": "rerun the same command to continue", "score": "rerun the same command to continue",
                "world_train": "rerun the same command to continue"}


class HandledError(click.ClickException):
    """A handled error: `Error: <one line>` on stderr and exit status EXIT_ERROR."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()) or "failed")


def _os_error_line(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    if isinstance(exc, FileNotFoundError):
        return f"{where}no such file or folder"
    if isinstance(exc, IsADirectoryError):
        return f"{where}is a folder, not a file"
    return f"{where}{exc.strerror or exc}"


def one_line_errors(fn):
    """Errors are one clear line on stderr and exit status EXIT_ERROR, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HsteerError as exc:
            raise HandledError(str(exc)) from None
        except OSError as exc:
            raise HandledError(_os_error_line(exc)) from None
        except UnicodeDecodeError as exc:
            raise HandledError(f"an input file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except MemoryError:
            raise HandledError("out of memory; use smaller settings (--batch-size, image size)") from None
        except KeyboardInterrupt:
            hint = RESUME_HINTS.get(fn.__name__)
            click.echo(f"interrupted; {hint}" if hint else "interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def checked_device(device: str) -> str:
    """--device, checked before anything loads."""
    from hsteer.checks import check_device

    return check_device(device, "--device")


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
    if group_scales and not (fair or safe):
        raise HsteerError("--group-scale applies to the groups of --fair or --safe; with --concept write NAME=SCALE")
    if fair:
        return FairPolicy(tuple(g.strip() for g in fair.split(",")), group_scales)
    if safe:
        other = sorted(set(group_scales) - {"safety"})
        if other:
            raise HsteerError(f"--group-scale {other[0]}=...: --safe steers only the group 'safety'")
        return SafePolicy(scale=group_scales.get("safety", 1.0))
    if concepts:
        return parse_concept_specs(concepts)
    return PlainPolicy()


def check_eval_options(o: dict) -> None:
    """The generation options every `hsteer eval` task shares, checked before any file or model is touched."""
    from hsteer.checks import check_count, check_float, check_seed, check_size

    checked_device(o["device"])
    check_count("--batch-size", o["batch_size"], 1, 4096)
    if o["steps"] is not None:
        check_count("--steps", o["steps"], 1, 10_000)
    if o["guidance"] is not None:
        check_float("--guidance", o["guidance"], -1e4, maximum=1e4)
    check_size("--height", o["height"])
    check_size("--width", o["width"])
    check_seed("--seed", o["seed"], span=2**32)
