"""What a training run keeps: parameters and their optimisers, checkpoints, the loss log, the result.

Checkpoints hold the concept's tensors, the Adam states, the progress and (fast mode) the trajectory
pool in one safetensors file: no pickles, and a resumed run ends exactly where an uninterrupted one ends.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hsteer._version import __version__
from hsteer.errors import BankError, HsteerError, TrainingDivergedError
from hsteer.fileio import atomic_png, atomic_save, atomic_write_text
from hsteer.steering.bank import Concept
from hsteer.model.geometry import unet_fingerprint
from hsteer.model.sites import denoiser_of, family_of
from hsteer.training.config import TrainConfig

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


@dataclass
class TrainResult:
    """One training call's outcome: the concept and its loss rows, with where and how long it ran."""

    concept: Concept
    losses: list[dict[str, float]]
    seconds: float  # training time of this call (setup, evaluation and the loss plot excluded)
    resumed_from: int = 0
    run_dir: Path | None = None


#: The longest run folder name, in bytes: below the 255 of common file systems, with room to spare.
RUN_NAME_MAX = 200


def run_dir_for(bank_path: str | Path, concept: str) -> Path:
    """Where checkpoints and loss logs of `concept` (a group's run: its names joined by `+`) live: beside the
    bank, in `<bank stem>.runs/`. A name longer than `RUN_NAME_MAX` bytes is cut and ends in a digest of the
    whole name, so a group of long names still has one folder of its own; a bank stem too long to carry
    `.runs` is refused here, before anything is written."""
    bank_path = Path(bank_path)
    runs = f"{bank_path.stem}.runs"
    if len(runs.encode("utf-8", "surrogateescape")) > 255:
        raise HsteerError(f"bank file {bank_path}: its run folder name {runs[:40]}....runs would be longer than 255 "
                          "bytes, which file systems refuse; choose a shorter bank file name")
    name = concept
    if len(name.encode("utf-8", "surrogateescape")) > RUN_NAME_MAX:
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        name = f"{name[:RUN_NAME_MAX - 17]}-{digest}"
    return bank_path.parent / runs / name


def init_params(config: TrainConfig, shape: tuple[int, ...], device) -> dict[str, torch.nn.Parameter]:
    """The concept's tensors at their seeded start (zeros unless `init_std`)."""
    init = torch.Generator("cpu").manual_seed(config.seed)
    return {name: torch.nn.Parameter((config.init_std * torch.randn(shape, generator=init)).to(device))
            for name in config.modules}


def make_optimizers(config: TrainConfig, params: dict[str, torch.nn.Parameter]) -> dict[str, torch.optim.Adam]:
    """One Adam (0.9, 0.999) per tensor, at the learning rate its method gives it."""
    rates = config.learning_rates()
    return {name: torch.optim.Adam([p], lr=getattr(config, rates[name]), betas=(0.9, 0.999))
            for name, p in params.items()}


class IterationLosses:
    """One iteration's losses, kept on the device as the steps make them and read back in one transfer when
    the iteration ends (`row`), so a GPU is not stalled by a host sync after every prediction.

    A loss added with a `name` is checked there: the first non-finite one raises TrainingDivergedError,
    naming it, its value, the iteration and its learning rate (the setting `lr_field`). The optimiser steps of that iteration have
    already been taken then, but the run stops before anything (checkpoint, bank) keeps their result."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration
        self._entries: list[tuple[str, torch.Tensor, str | None, float | None, str]] = []

    def add(self, key: str, loss: torch.Tensor, name: str | None = None, lr: float | None = None,
            lr_field: str = "lr") -> None:
        """Keep `loss` under `key` in the row; checked for finiteness when `name` (its name in the error)."""
        self._entries.append((key, loss.detach().float(), name, lr, lr_field))

    def row(self) -> dict[str, float]:
        """{"iteration": i, key: value, ...} in the order added, after the finiteness check."""
        values = torch.stack([loss for _, loss, *_ in self._entries]).tolist() if self._entries else []
        for (_, _, name, lr, lr_field), value in zip(self._entries, values):
            if name is not None and not math.isfinite(value):
                raise TrainingDivergedError(f"{name} became {value} at iteration {self.iteration}; lower the "
                                            f"learning rate (now {lr_field}={lr}) or the guidance scales, or check "
                                            "the prompts", field=lr_field)
        return {"iteration": self.iteration, **{key: value for (key, *_), value in zip(self._entries, values)}}


def optimise(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on `loss` (gradients cleared first)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def adam_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], float | None]:
    """A one-tensor Adam's moments as `prefix/exp_avg`, `prefix/exp_avg_sq` (CPU), and its step count
    (None before its first step): what a checkpoint keeps of it."""
    state = optimizer.state_dict()["state"].get(0, {})
    tensors = {f"{prefix}/{key}": state[key].detach().cpu().contiguous() for key in ("exp_avg", "exp_avg_sq")
               if key in state}
    return tensors, (float(state["step"]) if "step" in state else None)


def restore_adam(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str, step: float) -> None:
    """Put back what `adam_tensors` kept, on the device of the optimiser's tensor."""
    device = optimizer.param_groups[0]["params"][0].device
    state = optimizer.state_dict()
    state["state"] = {0: {"step": torch.tensor(step), "exp_avg": tensors[f"{prefix}/exp_avg"].to(device),
                          "exp_avg_sq": tensors[f"{prefix}/exp_avg_sq"].to(device)}}
    optimizer.load_state_dict(state)


class Checkpoint:
    """Concept tensors + Adam states + progress (+ extra tensors such as the trajectory pool), in one file."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "checkpoint.safetensors"
        self.extra: dict[str, torch.Tensor] = {}

    def save(self, iteration: int, config: TrainConfig, params: dict[str, torch.Tensor],
             optimizers: dict[str, torch.optim.Optimizer], extra: dict[str, torch.Tensor] | None = None) -> None:
        """Save the iteration, parameters, Adam moments and steps and `extra` tensors atomically, keyed by
        the config's resume key so that only a run with the same settings resumes from it."""
        tensors = {f"param/{k}": v.detach().cpu().contiguous() for k, v in params.items()}
        tensors.update(extra or {})
        steps = {}
        for name, opt in optimizers.items():
            moments, step = adam_tensors(f"adam/{name}", opt)
            tensors.update(moments)
            if step is not None:
                steps[name] = step
        meta = {"iteration": iteration, "config": config.resume_key(), "adam_steps": steps}
        atomic_save(self.path, lambda tmp: save_file(tensors, tmp, metadata={"hsteer_checkpoint": json.dumps(meta)}))

    def load(self, config: TrainConfig, params: dict[str, torch.Tensor],
             optimizers: dict[str, torch.optim.Optimizer]) -> int:
        """Restore into `params` and `optimizers`; returns the iteration to continue from."""
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                text = (handle.metadata() or {})["hsteer_checkpoint"]
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
            raise BankError(f"checkpoint {self.path} is corrupt ({type(exc).__name__}); delete it to start "
                            "over") from None
        meta = _checked_meta(self.path, text, config, params, optimizers, tensors)
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(tensors[f"param/{k}"].to(p.device, p.dtype))
        self.extra = {k: v for k, v in tensors.items() if not k.startswith(("param/", "adam/"))}
        for name, opt in optimizers.items():
            if name in meta["adam_steps"]:
                restore_adam(opt, tensors, f"adam/{name}", meta["adam_steps"][name])
        return int(meta["iteration"])


def _checked_meta(path: Path, text: Any, config: TrainConfig, params: dict[str, torch.Tensor],
                  optimizers: dict[str, torch.optim.Optimizer], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A checkpoint's progress, checked before anything is restored: an iteration in [0, iterations], the
    settings of this run, a finite Adam step per optimiser whose moments it holds, tensors of the right
    shapes; any damage is one line naming the file."""
    from hsteer.checks import load_json

    def damaged(why: str) -> BankError:
        return BankError(f"checkpoint {path} is damaged ({why}); delete it and start over without resume=True",
                         field="resume")

    meta = load_json(text if isinstance(text, str) else "", f"checkpoint {path}", error=BankError)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) \
            or not isinstance(meta.get("adam_steps"), dict):
        raise damaged("its metadata is not an object with config and adam_steps")
    iteration = meta.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise damaged(f"iteration {str(iteration)[:30]} is not a whole number >= 0")
    if iteration > config.iterations:
        raise HsteerError(f"checkpoint {path} is at iteration {iteration}, beyond iterations={config.iterations}; "
                          f"resume with iterations={iteration} or more, or start over without resume=True",
                          field=("iterations", "resume"))
    wanted = json.loads(json.dumps(config.resume_key()))
    changed = sorted(k for k, v in wanted.items() if meta["config"].get(k) != v)
    if changed:
        raise HsteerError(f"checkpoint {path} was made with other settings ({', '.join(changed)}); "
                          "use the same settings to resume, or start over without resume=True", field="resume")
    for k, p in params.items():
        if tuple(getattr(tensors.get(f"param/{k}"), "shape", ())) != tuple(p.shape):
            raise damaged(f"its tensor param/{k} is missing or of another shape")
    for name, step in meta["adam_steps"].items():
        moments = [tensors.get(f"adam/{name}/{key}") for key in ("exp_avg", "exp_avg_sq")]
        if name not in optimizers or isinstance(step, bool) or not isinstance(step, (int, float)) \
                or not 0 <= step < 2**53 or any(m is None or tuple(m.shape) != tuple(params[name].shape)
                                                for m in moments):
            raise damaged(f"its Adam state {name!r} is incomplete or does not match")
    broken = sorted(k for k, v in tensors.items() if (v.is_floating_point() and not bool(torch.isfinite(v).all()))
                    or (k.startswith(("param/", "adam/")) and not v.is_floating_point()))
    if broken:
        raise BankError(f"checkpoint {path} holds NaN or infinite values, or tensors that are not floats "
                        f"({', '.join(broken[:5])}); it is damaged: delete it and start over without "
                        "resume=True", field="resume")
    return meta


class LossLog:
    """losses.jsonl (and losses.png), rewritten atomically at each checkpoint and at the end."""

    def __init__(self, run_dir: Path, rows: list[dict[str, float]] | None = None) -> None:
        self.path = run_dir / "losses.jsonl"
        self.rows: list[dict[str, float]] = list(rows or [])

    def restore(self, up_to: int) -> None:
        """The rows before iteration `up_to`; a log that is not strict JSON lines of objects with a whole
        `iteration` is one line (a torn last line, a kill's mark, is dropped)."""
        from hsteer.checks import check_input_file, load_json

        if not self.path.exists():
            return
        check_input_file(self.path, "loss log")
        try:
            lines = [line for line in self.path.read_text(encoding="utf-8").split("\n") if line.strip()]
        except UnicodeDecodeError:
            raise HsteerError(f"loss log {self.path} is not UTF-8 text; it is damaged: delete it") from None
        rows = []
        for n, line in enumerate(lines):
            try:
                row = load_json(line, f"loss log {self.path} line {n + 1}")
            except HsteerError:
                if n == len(lines) - 1:
                    break  # torn by a kill while written
                raise
            if not isinstance(row, dict) or isinstance(row.get("iteration"), bool) \
                    or not isinstance(row.get("iteration"), int):
                raise HsteerError(f"loss log {self.path} line {n + 1} is not a row with a whole iteration; it is "
                                  "damaged: delete it")
            rows.append(row)
        self.rows = [r for r in rows if r["iteration"] < up_to]

    def flush(self) -> None:
        """Write every row logged so far to the log file (JSON lines, atomically)."""
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def plot(self) -> Path | None:
        """Plot each loss against the iteration (log scale) to a PNG beside the log; returns its path
        (None before any row)."""
        if not self.rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        keys = [k for k in self.rows[0] if k.startswith("loss")]
        its = [r["iteration"] for r in self.rows]
        for key in keys:
            ax.plot(its, [r[key] for r in self.rows], label=key, lw=0.8)
        ax.set_xlabel("iteration")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        out = self.path.with_suffix(".png")
        atomic_png(out, fig, dpi=110)
        plt.close(fig)
        return out


def stored_tensors(config: TrainConfig, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trained tensors as the bank keeps them: float32 on the CPU, at `config.stored_scale` of their length."""
    return {k: p.detach().cpu().float() * float(config.stored_scale) for k, p in params.items()}  # x 1.0 is exact


def concept_meta(pipe: Pipeline, config: TrainConfig, shape: tuple[int, ...],
                 site: str = "mid_block") -> dict[str, Any]:
    """What the bank stores about how a concept was made: its method's settings, the model's identity, and
    the site and shape it acts at (`site`: the site's spec)."""
    meta = {k: v for k, v in asdict(config).items() if k not in ("concept", "group", "objective")}
    # recorded only where used: a concept without them has the same meta keys whichever version wrote it
    for optional in ("pairs", "window"):
        if meta.get(optional) is None:
            meta.pop(optional, None)
    if meta.get("stored_scale") == 1.0:
        meta.pop("stored_scale")
    meta.update({"site": site, "family": family_of(pipe), "hspace_shape": list(shape),
                 "unet_fingerprint": unet_fingerprint(denoiser_of(pipe)),
                 "hsteer_version": __version__, "model": str(getattr(pipe, "name_or_path", "") or "")})
    return {k: v for k, v in meta.items() if not (isinstance(v, float) and math.isnan(v))}
