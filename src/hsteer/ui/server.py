"""The page's server side: one model shared by every session, the command line's banks and folders.

`HsteerUI` is what every handler is given. It owns no session: each browser session's bank, files and
training run are its `Session` (`gr.State`), and each job borrows a pipeline of its own from the pool.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hsteer.ui._lib as _lib
from hsteer.ui._lib import ConceptBank
from hsteer.ui.paths import AllowedDirs
from hsteer.ui.render import bank_label, plain
from hsteer.ui.session import PipelinePool, Session


class HsteerUI:
    """The model (shared by every session), the command line's banks and the folders the page may read."""

    def __init__(self, model: Any = None, banks: Sequence[str | os.PathLike] = (),
                 allowed_dirs: Sequence[str | os.PathLike] = (), device: str = "cpu", dtype: str = "float32",
                 hub: bool = True) -> None:
        self.allowed = AllowedDirs(allowed_dirs)
        self.hub = hub
        self.device = device
        if model is None or isinstance(model, (str, os.PathLike)):
            pipe = _lib.load_pipeline(model, device=device, dtype=dtype)
            self.model_label = "bundled world model" if model is None else str(model)
            model_path = None if model is None else str(model)
        else:  # an already loaded pipeline
            pipe = model
            model_path = str(getattr(pipe, "name_or_path", "") or "") or None
            self.model_label = model_path or type(pipe).__name__
        self.pool = PipelinePool(pipe)
        self.is_world = self._is_world_model(None if model_path is None else _lib.model_location(model_path))
        if self.is_world:
            self.model_label = "bundled world model" + (" (DiT)" if getattr(pipe, "unet", None) is None else "")
        self.defaults = _lib.sampling_defaults(model_path)  # SD's, unless the folder has an hsteer.json
        self.resolution = int(_lib.resolve_resolution(pipe)[0])  # U-Net or transformer: its native size
        # Banks named on the command line: loaded now, so that a broken one stops the server at start-up.
        self.cli_banks: dict[str, ConceptBank] = {}
        for spec in banks:  # a file, a folder or a Hub repo id
            bank = _lib.ConceptBank.load(spec)
            self.check_bank(bank)
            self.cli_banks[str(spec)] = bank

    @staticmethod
    def _is_world_model(model_path: str | None) -> bool:
        if model_path is None:
            return True
        try:
            here = Path(model_path).resolve()  # the world's probes score both bundled models' images
            return here in {folder.resolve() for folder in _lib.BUNDLED_NAMES.values()}
        except (OSError, FileNotFoundError):
            return False

    def check_bank(self, bank: ConceptBank) -> None:
        """Refuse a bank learned on another model (family, site shape or weights) before a session takes it."""
        if len(bank):
            pipe = self.pool.base
            bank.check_family(pipe)
            bank.check_compatible(pipe, _lib.site_shape(pipe, _lib.site_for(pipe, bank.site_spec)))

    def starting_bank(self) -> tuple[str, ConceptBank]:
        """Every new session's bank and its label: the command line's first bank, or a new empty one."""
        if self.cli_banks:
            spec, bank = next(iter(self.cli_banks.items()))
            return bank_label(spec), bank
        return "new bank", ConceptBank()

    def new_session(self) -> Session:
        label, bank = self.starting_bank()
        return Session(bank, label)

    def session(self, sess: Session | None) -> Session:
        """The event's session; a new one for a call that came before the page's load event set it."""
        return sess if isinstance(sess, Session) else self.new_session()

    def load_bank_file(self, sess: Session, path: str | os.PathLike, label: str) -> str:
        """Replace the session's bank with the bank file at `path` (checked against the model first)."""
        bank = _lib.ConceptBank.load(path)
        self.check_bank(bank)
        sess.set_bank(bank, label)
        return f"Loaded **{plain(label)}**: {len(bank)} concept(s)."

    def report_folders(self) -> list[str]:
        """Run folders with a report.md under the allowed folders."""
        return [str(p) for p in self.allowed.find("report.md")]
