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
import gc
import os
import stat
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from hsteer.checks import check_float, file_kind
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


def write_error(path: str | Path, exc: BaseException, elsewhere: str = "another folder") -> HsteerError:
    """One line for an OS error while writing `path`, with what to do: on a full disk, the folder to free
    space in, or `elsewhere` to write instead (e.g. 'another --out')."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    code = getattr(exc, "errno", None)
    folder = Path(path).parent
    full = f"; free space on the disk that holds {folder}, or write to {elsewhere}"
    hint = {errno.ENOSPC: full, errno.EDQUOT: f"; your disk quota is used up: free space in {folder} (or "
            f"elsewhere under the quota), or write to {elsewhere}",
            errno.EROFS: f"; write to {elsewhere}, on a writable disk", errno.EACCES: "; check its permissions",
            errno.EPERM: "; check its permissions"}.get(code, "")
    return HsteerError(f"cannot write {path}: {reason}{hint}")


def check_write_target(path: Path) -> None:
    """Refuse to replace anything but a regular file: a rename over `/dev/null`, a FIFO or a socket
    would put a regular file in its place (and a folder cannot be replaced)."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise write_error(path, exc) from None
    if not stat.S_ISREG(mode):
        raise HsteerError(f"cannot write {path}: it is {file_kind(mode)}, not a regular file; hsteer writes "
                          "files by replacing them, so give the path of a file (new or existing)")


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", elsewhere: str = "another folder") -> Iterator[str]:
    """Yield a temporary name beside `path`; on success it replaces `path`, on error it is removed.

    `path` keeps its mode (new: 0o666 under the umask) and a symlink at `path` is followed; a target
    that is not a regular file is refused (`check_write_target`). `elsewhere` goes in the message of a
    full disk (`write_error`).
    """
    path = write_target(path)
    check_write_target(path)
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
        raise write_error(path, exc, elsewhere) from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str, elsewhere: str = "another folder") -> None:
    """Write `text` (UTF-8) to `path` atomically: a temporary file, synced, then renamed, so a reader
    never sees half a file."""
    with atomic_path(path, elsewhere=elsewhere) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_save(path: str | Path, save: Callable[[str], None], suffix: str = ".tmp",
                elsewhere: str = "another folder") -> None:
    """Run `save(temporary_name)` and move the result to `path` atomically.

    A writer that reports a full disk or another I/O failure with its own exception type (safetensors
    does) is turned into the same one line as an `OSError`.
    """
    with atomic_path(path, suffix, elsewhere) as tmp:
        try:
            save(tmp)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - only I/O failures of foreign writers are translated
            if type(exc).__name__ != "SafetensorError" and not isinstance(exc, (IOError,)):
                raise
            raise write_error(write_target(path), exc, elsewhere) from None


def atomic_png(path: str | Path, picture, *, elsewhere: str = "another folder", **options) -> None:
    """Write a PIL image or a matplotlib figure as a PNG, atomically (`options`: e.g. dpi for a figure)."""
    save = getattr(picture, "savefig", None) or picture.save
    atomic_save(path, lambda tmp: save(tmp, format="png", **options), suffix=".png", elsewhere=elsewhere)


def lock_timeout() -> float:
    """`HSTEER_LOCK_TIMEOUT` seconds (unset or empty: `LOCK_TIMEOUT`): a finite number from 0 to a week, so
    that `nan` or `inf` never waits forever and `abc` is one line, not a ValueError."""
    raw = os.environ.get("HSTEER_LOCK_TIMEOUT", "").strip()
    if not raw:
        return LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 7 * 86400:  # NaN fails too
        raise HsteerError(f"HSTEER_LOCK_TIMEOUT must be a number of seconds from 0 to 604800, got {raw[:40]!r}; "
                          "fix or unset it")
    return value


def _flock(fd: int, timeout: float, busy: Callable[[float], str]) -> None:
    """Take an exclusive `flock` on `fd`, waiting up to `timeout` seconds, else HsteerError(busy(timeout))."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise HsteerError(busy(timeout)) from None
            time.sleep(0.05)


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str | None = None, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of `path` (through symlinks) against other processes.

    The lock is an advisory `flock` on the folder that holds the file, so no lock file is left
    behind. Waits up to `timeout` seconds (default `LOCK_TIMEOUT`, or HSTEER_LOCK_TIMEOUT), then
    raises one `HsteerError` line.
    """
    target = write_target(path)
    folder = target.parent
    timeout = lock_timeout() if timeout is None else check_float("timeout", timeout, 0.0, maximum=7 * 86400)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise write_error(target, exc) from None
    try:
        _flock(fd, timeout, lambda waited: f"{what or target} is being written by another process (waited "
                                           f"{waited:g}s for its lock); try again when it has finished")
        yield
    finally:
        os.close(fd)  # closing releases the lock


class FolderLock:
    """An exclusive `flock` on a folder itself, so that one writer at a time fills it (an output folder).

    The folder is created if missing. The lock is held until `release()`, until the object is
    garbage-collected, or until the process ends (a kill -9 included: the kernel drops it), and no lock
    file is left behind. A folder already locked is refused at once with `busy`, one line saying why.
    With `name`, the lock is the hidden file `name` in the folder instead (created once and kept: it
    must never be removed while others may open it), for folders that several writers share, one
    part each (the shards of an evaluation run).
    """

    def __init__(self, folder: str | Path, busy: str, timeout: float = 0.0, name: str | None = None) -> None:
        self.folder = Path(folder)
        target = self.folder / name if name else self.folder
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if name:
                fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666 & ~_umask())
            else:
                fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise write_error(target, exc) from None
        try:
            try:
                _flock(fd, 0.0, lambda waited: busy)
            except HsteerError:
                gc.collect()  # a holder this process no longer reaches (an old run's error) lets go
                _flock(fd, timeout, lambda waited: busy)
        except BaseException:
            os.close(fd)
            raise
        self._release = weakref.finalize(self, os.close, fd)

    @property
    def held(self) -> bool:
        """Whether this process still holds the folder's lock."""
        return self._release.alive

    def release(self) -> None:
        """Drop the lock (closing the descriptor); calling it again does nothing."""
        self._release()


#: The most pixels an image read from a file may have (8192 x 8192, the largest side hsteer makes): a
#: PNG that claims more is a decompression bomb, refused before its pixels are decoded.
MAX_IMAGE_PIXELS = 8192 * 8192


def read_image(path: str | Path, what: str = "image", *, no_links: bool = False):
    """An RGB PIL image from `path`, or one HsteerError line naming the file: not a regular file (a FIFO
    would block, a folder fails), a symbolic link where `no_links` (a run folder's images are hsteer's own,
    never links out of it), more than MAX_IMAGE_PIXELS pixels, truncated or not an image."""
    import warnings

    from PIL import Image

    path = Path(path)
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            if no_links:
                raise HsteerError(f"{what} {path} is a symbolic link, not an image hsteer wrote; replace it by "
                                  "the image (or regenerate it); nothing was read through it")
            info = path.stat()
    except OSError as exc:
        raise HsteerError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise HsteerError(f"{what} {path} is {file_kind(info.st_mode)}, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise HsteerError(f"{what} {path} is {width} x {height} pixels, more than {MAX_IMAGE_PIXELS} "
                                      "(a decompression bomb?); give a smaller image")
                return img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise HsteerError(f"{what} {path} claims too many pixels (a decompression bomb?); refused") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise HsteerError(f"{what} {path} cannot be read as an image ({reason}); it is damaged: regenerate or "
                          "replace it") from None

