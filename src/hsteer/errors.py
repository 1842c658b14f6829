"""Errors hsteer raises on bad input. The CLI prints them as one line, without a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


class HsteerError(Exception):
    """Base class: a problem with the user's input, files or settings, stated with its fix.

    `field`: the setting at fault (or several), by the name the message gives it: the Python keyword or
    config field (`ratios`, `num_images_per_prompt`). The library never names a command-line option; the
    command line shows each field as its option (`hsteer.cli.common.cli_message`). A message names a field
    where it means the setting: `name=VALUE` (`resume=True`, `iterations=9`), `(name)` after what it labels,
    or else the first time the word stands alone.
    """

    def __init__(self, *args: object, field: str | tuple[str, ...] | None = None) -> None:
        super().__init__(*args)
        self.fields: tuple[str, ...] = (field,) if isinstance(field, str) else tuple(field or ())


@contextlib.contextmanager
def field_errors(name: str | tuple[str, ...]) -> Iterator[None]:
    """Errors inside carry `name` as their field (the message names it so; the CLI shows it as its option)."""
    try:
        yield
    except HsteerError as exc:
        if exc.fields:
            raise
        raise type(exc)(str(exc), field=name) from None


def as_field(name: str, check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`check(name, ...)` (a check labelled by the field it checks), its error carrying `name` as its field."""
    with field_errors(name):
        return check(name, *args, **kwargs)


class BankError(HsteerError):
    """A concept bank is missing, corrupt, or does not fit the model it is used with."""


class ShapeMismatchError(BankError):
    """A concept's tensor does not have the shape of the model's h-space at this resolution."""


class ModelMismatchError(BankError):
    """A bank was learned on a U-Net with another configuration."""


class UnknownConceptError(BankError, KeyError):
    """A concept or group name that the bank does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class TrainingDivergedError(HsteerError):
    """The loss became NaN or infinite."""


class ModelLoadError(HsteerError):
    """A model path or id that cannot be loaded as a supported diffusers pipeline."""


class TerminatedError(KeyboardInterrupt):
    """SIGTERM, raised where the process is so that it unwinds like Ctrl-C: temporary files are removed,
    locks released, and the CLI prints one line and exits `exit_code` (128 + SIGTERM, the shell's code).

    It derives from KeyboardInterrupt, not Exception, so that no `except Exception` swallows it.
    """

    exit_code = 143
