"""File writes that never leave half a file, and a lock for read-modify-write of shared files.

Every save goes through `atomic_path`: the new content is written to a hidden temporary file beside
the target and moved over it in one step, so a reader (or a crash, or a kill) sees the old file or
the new one, never half of one. The target keeps its permission bits (a new file gets the default
ones under the umask), a symbolic link is written through to the file it points to, and a failed
write (a full or read-only disk, no permission) leaves the old file intact, removes the temporary
file and raises one `HsteerError` line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from hsteer.errors import HsteerError

#: Seconds a writer waits for another process's lock on a shared file (HSTEER_LOCK_TIMEOUT overrides).
LOCK_TIMEOUT = 300.0


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_target(path: str | Path) -> Path:
    """The file a write to `path` should replace: the end of its symlink chain, else `path`."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def write_error(path: str | Path, exc: BaseException) -> HsteerError:
    """One line for an OS error while writing `path`."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    code = getattr(exc, "errno", None)
    hint = {errno.ENOSPC: "; free some space", errno.EDQUOT: "; free some space",
            errno.EROFS: "; write somewhere writable", errno.EACCES: "; check its permissions",
            errno.EPERM: "; check its permissions"}.get(code, "")
    return HsteerError(f"cannot write {path}: {reason}{hint}")


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary name beside `path`; on success it replaces `path`, on error it is removed.

    `path` keeps its mode (new: 0o666 under the umask) and a symlink at `path` is followed.
    """
    path = write_target(path)
    tmp = None
    try:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
        os.chmod(tmp, mode)
        yield tmp
        os.chmod(tmp, mode)  # some writers recreate the file
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_save(path: str | Path, save: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Run `save(temporary_name)` and move the result to `path` atomically.

    A writer that reports a full disk or another I/O failure with its own exception type (safetensors
    does) is turned into the same one line as an `OSError`.
    """
    with atomic_path(path, suffix) as tmp:
        try:
            save(tmp)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - only I/O failures of foreign writers are translated
            if type(exc).__name__ != "SafetensorError" and not isinstance(exc, (IOError,)):
                raise
            raise write_error(write_target(path), exc) from None


def atomic_png(path: str | Path, picture, **options) -> None:
    """Write a PIL image or a matplotlib figure as a PNG, atomically (`options`: e.g. dpi for a figure)."""
    save = getattr(picture, "savefig", None) or picture.save
    atomic_save(path, lambda tmp: save(tmp, format="png", **options), suffix=".png")


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str | None = None, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of `path` (through symlinks) against other processes.

    The lock is an advisory `flock` on the folder that holds the file, so no lock file is left
    behind. Waits up to `timeout` seconds (default `LOCK_TIMEOUT`, or HSTEER_LOCK_TIMEOUT), then
    raises one `HsteerError` line.
    """
    target = write_target(path)
    folder = target.parent
    timeout = float(os.environ.get("HSTEER_LOCK_TIMEOUT", LOCK_TIMEOUT)) if timeout is None else timeout
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise write_error(target, exc) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise HsteerError(f"{what or target} is being written by another process (waited "
                                      f"{timeout:g}s for its lock); try again when it has finished") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock
