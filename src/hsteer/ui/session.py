"""Per-session state and the shared, thread-safe pool of pipelines.

Each browser session (each `gradio_client.Client`) has its own `Session`: its bank, its files, its
training run and cancel flag. Sessions share the model's weights but never a pipeline object: steering
attaches hooks to the U-Net's mid-block and training toggles the U-Net's state, so every running job
borrows a pipeline of its own from `PipelinePool`. The pool's extra pipelines are structural copies that
share the weight tensors, so they cost module objects, not memory for weights.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hsteer.ui._lib import Concept, ConceptBank

log = logging.getLogger("hsteer.ui")


def fork_pipeline(pipe: Any) -> Any:
    """A copy of `pipe` with its own module objects, scheduler and hooks, sharing every weight tensor."""
    import torch

    memo: dict[int, object] = {}
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for tensor in list(component.parameters()) + list(component.buffers()):
                memo[id(tensor)] = tensor
    return copy.deepcopy(pipe, memo)


class PipelinePool:
    """Hands each job a pipeline no other job is using; forks a new one when all are busy."""

    def __init__(self, pipe) -> None:
        self.base = pipe
        # Forks are copied from a template no job ever runs: copying a pipeline while another thread
        # generates with it reads dicts that the run is changing (its hooks, its step state).
        self._template = fork_pipeline(pipe)
        self._free = [pipe]
        self._lock = threading.Lock()
        self.created = 1

    @contextlib.contextmanager
    def acquire(self) -> Iterator[object]:
        with self._lock:
            if self._free:
                pipe = self._free.pop()
            else:
                pipe = fork_pipeline(self._template)
                self.created += 1
        try:
            yield pipe
        finally:
            with self._lock:
                self._free.append(pipe)


class Cancelled(Exception):
    """Raised inside a training run when its session asked to cancel it."""


def copy_bank(bank: ConceptBank | None) -> ConceptBank:
    """A new bank holding the same (immutable, shared) concepts."""
    if bank is None:
        return ConceptBank()
    return ConceptBank(bank.hspace_shape, bank.unet_fingerprint, list(bank))


class Session:
    """One browser session's bank, files and training run."""

    def __init__(self, bank: ConceptBank | None = None, bank_label: str = "new bank") -> None:
        self.id = uuid.uuid4().hex[:12]
        self.dir = Path(tempfile.mkdtemp(prefix=f"hsteer-ui-{self.id}-"))
        self.bank = copy_bank(bank)
        self.bank_label = bank_label
        self.slider_names: list[str] = []
        self.cancel = threading.Event()
        self.training = False
        self.runs = 0
        #: each event's failure message, kept until its tab's status line shows it (`wiring.guard`)
        self.errors: dict[str, str] = {}
        self.lock = threading.Lock()

    def __deepcopy__(self, memo):  # gr.State copies its initial value per session; a Session is never shared
        return self

    def next_dir(self, kind: str) -> Path:
        with self.lock:
            self.runs += 1
            n = self.runs
        folder = self.dir / f"{kind}-{n:03d}"
        folder.mkdir(parents=True)
        return folder

    def snapshot(self) -> ConceptBank:
        with self.lock:
            return copy_bank(self.bank)

    def set_bank(self, bank: ConceptBank, label: str) -> None:
        with self.lock:
            self.bank = bank
            self.bank_label = label

    def add_concept(self, concept: Concept) -> None:
        with self.lock:
            bank = copy_bank(self.bank)
            bank.add(concept, replace=True)
            self.bank = bank

    def close(self) -> None:
        self.cancel.set()
        shutil.rmtree(self.dir, ignore_errors=True)
