"""What every command shares: one-line errors, the model options, the eval options' checks."""

from __future__ import annotations

import functools
import re
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
                "world_train": "rerun the same command to continue",
                "attack": "rerun the same command with --resume to continue",
                "attack_set": "rerun the same command to continue"}


#: The settings the library's errors name (`HsteerError.fields`, Python keywords and config fields) -> the
#: options that set them: the library never names an option; the command line shows its own. A training
#: method's own settings (`lr_sam`) are its options in `hsteer train` (`method_flag`).
FIELD_OPTIONS = {
    # generation and policies
    "groups": "--fair", "scales": "--group-scale", "ratios": "--ratio", "concepts": "--concept", "bank": "--bank",
    "prompts": "--prompt", "num_images_per_prompt": "--num-images", "seed": "--seed", "steps": "--steps",
    "guidance": "--guidance", "batch_size": "--batch-size", "height": "--height", "width": "--width",
    "overwrite": "--overwrite", "resume": "--resume", "out_dir": "--out", "window": "--window", "site": "--site",
    "model": "--model", "device": "--device", "allow_other_model": "--allow-other-model",
    # training (TrainConfig's fields, train_into_bank's keywords)
    "concept": "--concept", "group": "--group", "neutral": "--neutral", "target": "--target",
    "negative": "--negative", "pairs": "--pair", "objective": "--objective", "iterations": "--iterations",
    "lr": "--lr", "target_guidance": "--target-guidance", "sampling_guidance": "--sampling-guidance",
    "init_std": "--init-std", "stored_scale": "--stored-scale", "mode": "--mode", "bank_path": "--bank",
    "checkpoint_every": "--checkpoint-every",
    # guard fit (DetectorFitConfig's fields, fit_detector's prompts)
    "step": "--step", "features": "--features", "threshold": "--threshold", "images_per_prompt": "--images-per-prompt",
    "harmful": "--harmful", "harmless": "--harmless",
    # evaluation runs, their prompt files and scoring settings
    "run_dir": "--out", "limit": "--limit", "prompt_column": "--prompt-column", "baseline_run": "--baseline-run",
    "professions": "--professions", "templates": "--templates", "classifier": "--classifier",
    "detectors": "--detectors",
    "q16_prompts": "--q16-prompts", "attributes": "--attributes", "no_score": "--no-score",
    # banks
    "out": "--out", "directory": "--save-dir",
    # the bundled world (`hsteer world quality`) and the apps (`hsteer demo`, `compare`, `sites`)
    "n_per_set": "--images", "threads": "--threads", "harm_images_per_prompt": "--harm-images-per-prompt",
    "gate_images_per_prompt": "--gate-images-per-prompt", "keep": "--keep", "timing_batches": "--timing-batches",
    # attacks (`hsteer attack`; each attack's own settings are `<attack>.<field>`, `ATTACK_CONFIG_OPTIONS`)
    "num_images": "--num-images", "exclude": "--exclude", "tokens": "--tokens", "guard": "--guard",
    "method": "--attack", "sld_concept": "--sld-concept",
    # scans (`hsteer sites`)
    "sites": "--site", "windows": "--window",
}

#: `hsteer attack`'s options that set an attack's budget -> the config field each sets (an attack takes those
#: its config has). The library names them `<attack>.<field>` (`whitebox.steps`), shown as the option.
ATTACK_CONFIG_OPTIONS = {"tokens": "tokens", "position": "position", "attack_steps": "steps", "lr": "lr", "top": "top",
                         "eval_every": "eval_every", "objective": "objective", "targets": "targets",
                         "population": "population", "generations": "generations", "eta": "eta",
                         "mutation": "mutation"}


def method_flag(name: str) -> str:
    """The option of a training method's own setting (a field of its config class): `lr_sam` -> `--lr-sam`."""
    return "--" + name.replace("_", "-")


def field_option(name: str) -> str | None:
    """The option that sets the library's field `name`; None where the command line has none."""
    if name in FIELD_OPTIONS:
        return FIELD_OPTIONS[name]
    attack_field = name.partition(".")[2]
    if attack_field:  # an attack's own setting, `<attack>.<field>`
        return next((method_flag(option) for option, field in ATTACK_CONFIG_OPTIONS.items() if field == attack_field),
                    None)
    from hsteer.training.registry import METHODS

    return method_flag(name) if any(o.field == name for m in METHODS for o in m.options) else None


#: Where a field's name stands alone in a message: not inside a word, a path, a quoted value or an option.
_ALONE = r"(?<![\w'\"./-]){}(?![\w'\"/-])"


def cli_message(exc: HsteerError) -> str:
    """The error as the command line shows it: each field it names written as its option. A message names
    a field where it means the setting (`HsteerError`): every `name=True` becomes the switch (`--resume`),
    every `name=VALUE` the option and its value (`iterations=9` -> `--iterations 9`, `site='text'` ->
    `--site text`); failing those, the first `(name)` after what it labels, else the first `name` alone."""
    text = str(exc)
    for name in getattr(exc, "fields", ()):
        option = field_option(name)
        if option is None:
            continue
        key = _ALONE.format(re.escape(name))
        switch, setting = rf"{key}=True\b", rf"{key}=(?:'([^'\s]+)'|(?=[^\s=]))"
        if re.search(switch, text) or re.search(setting, text):
            text = re.sub(switch, option, text)
            text = re.sub(setting, lambda m, option=option: f"{option} {m.group(1) or ''}", text)
        elif re.search(rf"\({re.escape(name)}\)", text):
            text = re.sub(rf"\({re.escape(name)}\)", f"({option})", text, count=1)
        else:
            text = re.sub(key, option, text, count=1)
    return text


class HandledError(click.ClickException):
    """A handled error: `Error: <one line>` on stderr and exit status EXIT_ERROR."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()) or "failed")


def _os_error_line(exc: OSError) -> str:
    """An OSError that no hsteer writer turned into a message (a library writing a file itself), with
    the fix: on a full disk or quota, the folder to free space in or to write elsewhere."""
    import errno
    from pathlib import Path

    where = f"{exc.filename}: " if exc.filename else ""
    if isinstance(exc, FileNotFoundError):
        return f"{where}no such file or folder"
    if isinstance(exc, IsADirectoryError):
        return f"{where}is a folder, not a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        folder = f"the disk that holds {Path(str(exc.filename)).parent}" if exc.filename else "the disk being written"
        return f"{where}{exc.strerror or 'no space left'}; free space on {folder}, or write to another folder"
    return f"{where}{exc.strerror or exc}"


def one_line_errors(fn):
    """Errors are one clear line on stderr and exit status EXIT_ERROR, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HsteerError as exc:
            raise HandledError(cli_message(exc)) from None
        except OSError as exc:
            raise HandledError(_os_error_line(exc)) from None
        except UnicodeDecodeError as exc:
            raise HandledError(f"an input file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except MemoryError:
            raise HandledError("out of memory; use smaller settings (--batch-size, image size)") from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (TerminatedError, raised by cli.main's handler)
            from hsteer.errors import TerminatedError

            hint = RESUME_HINTS.get(fn.__name__)
            what = "terminated (SIGTERM)" if isinstance(exc, TerminatedError) else "interrupted"
            click.echo(f"{what}; {hint}" if hint else what, err=True)
            sys.exit(TerminatedError.exit_code if isinstance(exc, TerminatedError) else EXIT_INTERRUPTED)

    return wrapper


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
                      help="Hub id or local diffusers folder (SD 1.x/2.x, SDXL, SD3, FLUX or SANA). Default: the "
                           "bundled world model.")(fn)
    return fn


def check_eval_options(o: dict) -> None:
    """The generation options every `hsteer eval` task shares, checked before any file or model is touched."""
    from hsteer.checks import check_count, check_device, check_float, check_seed, check_size

    check_device(o["device"], "--device")
    check_count("--batch-size", o["batch_size"], 1, 4096)
    if o["steps"] is not None:
        check_count("--steps", o["steps"], 1, 10_000)
    if o["guidance"] is not None:
        check_float("--guidance", o["guidance"], -1e4, maximum=1e4)
    check_size("--height", o["height"])
    check_size("--width", o["width"])
    check_seed("--seed", o["seed"], span=2**32)
