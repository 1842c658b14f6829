"""The installed package's version, in its own module so that any layer can read it without importing `hsteer`."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hsteer")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
