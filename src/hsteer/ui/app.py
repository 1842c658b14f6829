"""`hsteer ui`: a Gradio page to generate plain and responsible images side by side, learn concepts,
inspect banks and evaluate.

    from hsteer.ui.app import launch
    launch()                      # the bundled world model on the CPU, http://127.0.0.1:7860

Tabs: Generate (plain vs steered images of the same seeds, captioned with the concepts applied,
downloadable with `manifest.jsonl`), Learn (a concept into the session's bank, with a live loss curve
and a cancel button), Bank (upload or choose a bank; its concepts and training settings), Evaluate (the
world evaluation on the bundled model; the report of a finished run folder for real models).

Each browser session has its own bank, files and training run (`gr.State`); jobs run concurrently on
pipelines that share the model's weights (`PipelinePool`). Files typed into the page are read only
under the folders allowed on the command line (`AllowedDirs`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import queue
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402

import hsteer.ui._lib as _lib  # noqa: E402
from hsteer.ui._lib import ConceptBank, HsteerError  # noqa: E402
from hsteer.ui.paths import AllowedDirs  # noqa: E402
from hsteer.ui.session import Cancelled, PipelinePool, Session, copy_bank  # noqa: E402

log = logging.getLogger("hsteer.ui")

MAX_SLIDERS = 12
MAX_IMAGES = 16
MAX_STEPS = 200
MAX_ITERATIONS = 10_000
MAX_EVAL_IMAGES = 24
MAX_REPORT_BYTES = 2_000_000
POLICIES = ("plain", "fair", "safe", "concepts")
OBJECTIVES = ("codsma", "respodiff", "sdisc")
SAFETY_GROUP = "safety"
VIEW_PX = 192  # small images are shown enlarged (nearest neighbour) so that their pixels can be seen

#: Learn-tab presets on the bundled model: label -> concept; each fills the tab with `hsteer demo`'s recipe
#: (conditioned prompt pairs and a step window, docs/methods.md §9).
WORLD_PRESETS: dict[str, str] = {f"{name} ({group})": name for name, group, *_ in _lib.WORLD_CONCEPTS}
PRESET_ITERATIONS = 150  # the demo's
WINDOW_MODES = ("as learned", "every step", "custom")
MAX_PAIRS = 64

CSS = """
.hsteer-status p { margin: 0.2em 0; }
#plain-gallery .grid-wrap, #steered-gallery .grid-wrap { height: auto !important; max-height: none !important; }
#plain-gallery .caption-label, #steered-gallery .caption-label {
    white-space: normal !important; overflow: visible !important; text-overflow: clip !important; max-width: 94%;
}
"""


class UserError(HsteerError):
    """Bad input typed into the page."""


# --- helpers ---------------------------------------------------------------------------------------


def _guard(fn: Callable) -> Callable:
    """Every handler: library and input errors become a message in the page; nothing kills the server."""

    def message(exc: BaseException) -> gr.Error:
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, HsteerError):
            return gr.Error(str(exc))
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(f"unexpected error ({type(exc).__name__}: {exc}); the server log has the details")

    if _is_generator(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - shown in the page, logged with its traceback
                raise message(exc) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise message(exc) from None

    return wrapper


def _named(fn: Callable, names: Sequence[str], progress: bool = False) -> Callable:
    """`fn(*args)` with a signature that names its inputs (the API's parameter names); with `progress`,
    a last `gr.Progress` parameter that Gradio fills."""
    import inspect

    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    if progress:
        params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress()))

    @functools.wraps(fn)
    def named(*args):
        return fn(*args)

    named.__signature__ = inspect.Signature(params)
    return named


def _is_generator(fn: Callable) -> bool:
    import inspect

    return inspect.isgeneratorfunction(fn)


def _int(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise UserError(f"{name} must be a whole number, got {value!r}")
    if not low <= number <= high:
        raise UserError(f"{name} must be between {low} and {high}, got {int(number)}")
    return int(number)


def _float(value: Any, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise UserError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return number


def _text(value: Any, name: str, required: bool = True, limit: int = 1000) -> str | None:
    text = (value or "").strip() if isinstance(value, str) or value is None else None
    if text is None:
        raise UserError(f"{name} must be text")
    if len(text) > limit:
        raise UserError(f"{name} is too long ({len(text)} characters; at most {limit})")
    if not text:
        if required:
            raise UserError(f"{name} is empty")
        return None
    return text


def _bank_label(spec: str) -> str:
    """A command-line bank's name in the page: a file's name, or the Hub repo id as given."""
    return spec if _lib.parse_hub_spec(spec) is not None and not Path(spec).exists() else Path(spec).name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "x"


def _concepts_caption(concepts: Sequence[dict[str, Any]]) -> str:
    """'circle + red' (scale 1 is not written), 'circle ×-1.5', or 'plain'; manifest.jsonl has the exact values."""
    if not concepts:
        return "plain"
    return " + ".join(c["name"] if float(c["scale"]) == 1.0 else f"{c['name']} ×{float(c['scale']):g}"
                      for c in concepts)


def _span(window: Sequence[float]) -> str:
    """A step window as the page writes it everywhere: '40%–100%'."""
    return f"{window[0]:.0%}–{window[1]:.0%}"


def _learned_windows(names: Sequence[str], bank: ConceptBank) -> str:
    """'green, red: steps 0%–45%; circle: steps 40%–100%' for the concepts that have a window."""
    by_window: dict[tuple[float, float], list[str]] = {}
    for name in dict.fromkeys(names):
        if name in bank and bank[name].window not in (None, (0.0, 1.0)):
            by_window.setdefault(bank[name].window, []).append(name)
    return "; ".join(f"{', '.join(n)}: steps {_span(w)}" for w, n in by_window.items())


def _pairs_text(pairs: Sequence[Sequence[str]] | None) -> str:
    return "\n".join(f"{neutral} => {target}" for neutral, target in pairs or ())


def _parse_pairs(value: Any) -> tuple[tuple[str, str], ...] | None:
    """'NEUTRAL => TARGET' lines (blank lines ignored) as training pairs; None when there are none."""
    text = _text(value, "the prompt pairs", required=False, limit=MAX_PAIRS * 400)
    pairs = []
    for number, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        neutral, sep, target = line.partition("=>")
        if not sep or not neutral.strip() or not target.strip():
            raise UserError(f"prompt pair on line {number} must read 'NEUTRAL => TARGET', got {line.strip()!r}")
        pairs.append((neutral.strip(), target.strip()))
    if len(pairs) > MAX_PAIRS:
        raise UserError(f"{len(pairs)} prompt pairs; at most {MAX_PAIRS}")
    return tuple(pairs) or None


def _window_text(window: Sequence[float] | None) -> str:
    return f"{window[0]:g},{window[1]:g}" if window else ""


def _parse_window(value: Any, name: str) -> tuple[float, float] | None:
    """'START,END' fractions of the denoising steps (the CLI's --window), or None when empty."""
    return _lib.parse_window(_text(value, name, required=False, limit=100))


def _view_copy(src: Path, dst: Path) -> Path:
    """A copy of an image enlarged (nearest neighbour) for display when it is small."""
    from PIL import Image

    with Image.open(src) as img:
        if max(img.size) < VIEW_PX:
            factor = max(1, VIEW_PX // max(img.size))
            img = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
        img.save(dst, format="PNG")
    return dst


def _zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path != out and "view" not in path.relative_to(folder).parts:
                zf.write(path, path.relative_to(folder).as_posix())
    return out


def _bank_rows(bank: ConceptBank) -> list[list[Any]]:
    rows = []
    for concept, info in zip(bank, bank.describe()["concepts"]):
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in info["tensors"].items())
        prompt = info.get("target") or (f"not: {info['negative']}" if info.get("negative") else "")
        iterations = (f"{info.get('sdisc_epochs', '?')} epochs x {info.get('sdisc_images', '?')} images"
                      if info["objective"] == "sdisc" else info.get("iterations", ""))
        pairs = info.get("pairs") or []
        shown = "; ".join(f"{n} => {t}" for n, t in pairs[:3])
        if len(pairs) > 3:
            shown += f"; … ({len(pairs)} in all)"
        rows.append([info["name"], info["group"], info["objective"], shapes, info.get("neutral", ""), prompt,
                     shown, _span(concept.window) if concept.window else "every step", iterations,
                     info.get("lr", ""), info.get("batch_size", ""), info.get("steps", ""), info.get("mode", ""),
                     info.get("seed", "")])
    return rows


BANK_HEADERS = ["concept", "group", "objective", "tensors", "neutral", "target / negative", "prompt pairs",
                "step window", "iterations", "lr", "batch", "steps", "mode", "seed"]


# --- the application -------------------------------------------------------------------------------


class HsteerUI:
    """The handlers, over one model (shared by every session) and the command line's banks and folders."""

    def __init__(self, model: Any = None, banks: Sequence[str | os.PathLike] = (),
                 allowed_dirs: Sequence[str | os.PathLike] = (), device: str = "cpu", dtype: str = "float32",
                 hub: bool = True) -> None:
        self.allowed = AllowedDirs(allowed_dirs)
        self.hub = hub
        if model is None or isinstance(model, (str, os.PathLike)):
            pipe = _lib.load_pipeline(model, device=device, dtype=dtype)
            self.model_label = "bundled world model" if model is None else str(model)
            model_path = None if model is None else str(model)
        else:  # an already loaded pipeline
            pipe = model
            model_path = str(getattr(pipe, "name_or_path", "") or "") or None
            self.model_label = model_path or type(pipe).__name__
        self.pool = PipelinePool(pipe)
        self.is_world = self._is_world_model(model_path)
        if self.is_world:
            self.model_label = "bundled world model"
        self.defaults = _lib.sampling_defaults(model_path)  # SD's, unless the folder has an hsteer.json
        native = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.resolution = int(native)
        # Banks named on the command line: loaded now, so that a broken one stops the server at start-up.
        self.cli_banks: dict[str, ConceptBank] = {}
        for spec in banks:  # a file, a folder or a Hub repo id
            bank = _lib.ConceptBank.load(spec)
            self._check_bank(bank)
            self.cli_banks[str(spec)] = bank

    @staticmethod
    def _is_world_model(model_path: str | None) -> bool:
        if model_path is None:
            return True
        try:
            return Path(model_path).resolve() == Path(_lib.default_model_path()).resolve()
        except (OSError, FileNotFoundError):
            return False

    def _check_bank(self, bank: ConceptBank) -> None:
        if len(bank):
            bank.check_compatible(self.pool.base.unet)

    # --- sessions ------------------------------------------------------------------------------
    def new_session(self) -> Session:
        if self.cli_banks:
            label, bank = next(iter(self.cli_banks.items()))
            return Session(bank, _bank_label(label))
        return Session()

    def session(self, sess: Session | None) -> Session:
        return sess if isinstance(sess, Session) else self.new_session()

    # --- bank views ----------------------------------------------------------------------------
    def bank_views(self, sess: Session, views: dict[str, Any]) -> dict[Any, Any]:
        """Every component that shows the session's bank, brought up to date."""
        bank = sess.snapshot()
        groups = sorted(bank.groups())
        fair_default = [g for g in groups if g != SAFETY_GROUP]
        out: dict[Any, Any] = {}
        if len(bank):
            path = sess.dir / f"{_slug(Path(sess.bank_label).stem or 'bank')}.safetensors"
            bank.save(path)
            summary = (f"**{sess.bank_label}**: {len(bank)} concept(s), groups "
                       + ", ".join(f"`{g}` ({', '.join(bank.groups()[g])})" for g in groups)
                       + f"; h-space {tuple(bank.hspace_shape or ())}, U-Net `{bank.unet_fingerprint}`")
        else:
            path = None
            summary = (f"**{sess.bank_label}**: no concepts yet. Learn one in the *Learn* tab, or load a bank "
                       "above.")
        out[views["bank_summary"]] = summary
        out[views["bank_table"]] = {"headers": BANK_HEADERS, "data": _bank_rows(bank) or [[""] * len(BANK_HEADERS)]}
        out[views["bank_json"]] = bank.describe()
        out[views["bank_file"]] = str(path) if path else None
        out[views["learn_bank_file"]] = str(path) if path else None
        out[views["remove_choice"]] = gr.update(choices=bank.names, value=None)
        out[views["fair_groups"]] = gr.update(choices=groups, value=fair_default)
        out[views["eval_groups"]] = gr.update(choices=groups, value=fair_default)
        names = bank.names[:MAX_SLIDERS]
        sess.slider_names = names
        for n, slider in enumerate(views["sliders"]):
            if n < len(names):
                concept = bank[names[n]]
                out[slider] = gr.update(visible=True, value=0.0, label=f"{concept.name} ({concept.group})")
            else:
                out[slider] = gr.update(visible=False, value=0.0, label=f"concept {n + 1}")
        more = len(bank) - len(names)
        out[views["slider_note"]] = ("Load or learn concepts to get one slider each." if not names else
                                     "Scale of each concept added to every image (0: off; negative: away from it)."
                                     + (f" The first {MAX_SLIDERS} concepts have sliders; {more} more are not shown."
                                        if more > 0 else ""))
        return out

    # --- generate ------------------------------------------------------------------------------
    def policy_for(self, sess: Session, bank: ConceptBank, policy: str, groups: Sequence[str] | None,
                   strength: float, scales: Sequence[float]):
        if policy not in POLICIES:
            raise UserError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
        if policy == "plain":
            return _lib.PlainPolicy()
        if not len(bank):
            raise UserError(f"the {policy} policy needs concepts, and this session's bank is empty: learn concepts "
                            "in the Learn tab or load a bank in the Bank tab")
        if policy == "fair":
            groups = [g for g in (groups or []) if g]
            if not groups:
                raise UserError("choose at least one group to be fair over")
            for g in groups:
                bank.group(g)  # unknown groups: a clear message with the bank's groups
            return _lib.FairPolicy(tuple(groups), {g: strength for g in groups})
        if policy == "safe":
            bank.group(SAFETY_GROUP)
            return _lib.SafePolicy(group=SAFETY_GROUP, scale=strength)
        pairs = []
        names = sess.slider_names or bank.names[:MAX_SLIDERS]
        for name, scale in zip(names, scales):
            value = _float(scale, f"the scale of {name}", -10.0, 10.0)
            if value != 0.0 and name in bank:
                pairs.append((name, value))
        if not pairs:
            raise UserError("every concept slider is at 0: move at least one to steer")
        return _lib.ConceptPolicy(tuple(pairs))

    @staticmethod
    def step_window(mode: str, start: Any, end: Any) -> tuple[float, float] | None:
        """The Generate tab's step window: None (each concept in the window it was learned for), every step,
        or the custom start and end fractions."""
        if mode not in WINDOW_MODES:
            raise UserError(f"unknown step window {mode!r}; choose one of {', '.join(WINDOW_MODES)}")
        if mode == "as learned":
            return None
        if mode == "every step":
            return (0.0, 1.0)
        return _lib.check_window(_float(start, "the window's start", 0.0, 1.0),
                                 _float(end, "the window's end", 0.0, 1.0))

    def generate(self, sess, prompt, seed, num_images, guidance, steps, policy, groups, strength, scales,
                 progress: Callable[..., Any], window: tuple[float, float] | None = None):
        sess = self.session(sess)
        prompt = _text(prompt, "the prompt")
        seed = _int(seed, "the seed", 0, 2**31 - 1)
        num_images = _int(num_images, "the number of images", 1, MAX_IMAGES)
        guidance = _float(guidance, "the guidance scale", 0.0, 50.0)
        steps = _int(steps, "the number of steps", 1, MAX_STEPS)
        strength = _float(strength if strength is not None else 1.0, "the strength", -10.0, 10.0)
        bank = sess.snapshot()
        steer_policy = self.policy_for(sess, bank, policy, groups, strength, list(scales))
        folder = sess.next_dir("generate")
        began = time.perf_counter()
        runs = [("plain", _lib.PlainPolicy())]
        if policy != "plain":
            runs.append(("steered", steer_policy))
        galleries: dict[str, list[tuple[str, str]]] = {"plain": [], "steered": []}
        used: list[str] = []
        (folder / "view").mkdir()
        for n, (kind, pol) in enumerate(runs):
            progress(n / len(runs), desc=f"{kind} images")
            steered = kind == "steered"
            with self.pool.acquire() as pipe:
                out = _lib.generate(pipe, prompt, num_images_per_prompt=num_images, seed=seed,
                                    bank=bank if steered else None, policy=pol, steps=steps, guidance=guidance,
                                    out_dir=folder / kind, progress=False, window=window if steered else None)
            for record in out.records:
                view = _view_copy(folder / kind / record.file, folder / "view" / f"{kind}-{record.file}")
                caption = _concepts_caption(record.concepts)
                if steered and window is not None and window != (0.0, 1.0):  # learned windows: in the status
                    caption += f"; steps {_span(window)}"
                galleries[kind].append((str(view), f"seed {record.seed}: {caption}"))
                used.extend(c["name"] for c in record.concepts)
        progress(1.0, desc="packing")
        archive = _zip_folder(folder, folder / f"hsteer-{_slug(prompt)}-seed{seed}.zip")
        seconds = time.perf_counter() - began
        if policy == "fair":
            what = f"fair over {', '.join(steer_policy.groups)}"
        elif policy == "safe":
            what = f"safe (the {SAFETY_GROUP} group)"
        elif policy == "concepts":
            what = "concepts " + ", ".join(f"{n}={s:g}" for n, s in steer_policy.concepts)
        else:
            what = "plain only"
        if policy != "plain" and window is None:
            learned = _learned_windows(used, bank)
            what += f" in each concept's learned step window ({learned})" if learned else " in every step"
        elif policy != "plain":
            what += f" in steps {_span(window)}"
        status = (f"{num_images} image(s) per column of *{prompt}*, seeds {seed}–{seed + num_images - 1}, "
                  f"{what}; {steps} steps, guidance {guidance:g}; {seconds:.1f} s.")
        return sess, galleries["plain"], galleries["steered"], str(archive), status

    # --- learn ---------------------------------------------------------------------------------
    def train_config(self, name, group, neutral, target, negative, objective, iterations, lr, batch_size, steps,
                     target_guidance, seed, sdisc_images, sdisc_epochs, pairs=None, window=None):
        name = _text(name, "the concept name", limit=100)
        group = _text(group, "the group", limit=100)
        _lib.Concept(name, group, "codsma", {"c": _zeros()})  # the bank's naming rules, checked now, not at the end
        if objective not in OBJECTIVES:
            raise UserError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        config = _lib.TrainConfig(
            concept=name, group=group, neutral=_text(neutral, "the neutral prompt"),
            target=_text(target, "the target prompt", required=False),
            negative=_text(negative, "the negative prompt", required=False), objective=objective,
            iterations=_int(iterations, "iterations", 1, MAX_ITERATIONS),
            batch_size=_int(batch_size, "the batch size", 1, 64), steps=_int(steps, "steps", 1, MAX_STEPS),
            lr=_float(lr, "the learning rate", 1e-8, 10.0),
            target_guidance=_float(target_guidance, "the target guidance", 0.0, 50.0),
            seed=_int(seed, "the seed", 0, 2**31 - 1), pairs=_parse_pairs(pairs),
            window=_parse_window(window, "the step window"),
            **({"sdisc_images": _int(sdisc_images, "SDisc images", 1, 4096),
                "sdisc_epochs": _int(sdisc_epochs, "SDisc epochs", 1, 1000)} if objective == "sdisc" else {}))
        config.validate()
        return config

    def learn(self, sess, config):
        """Generator of (kind, payload) events: ("row", (it, row)), ("done", concept), ("cancelled", it)."""
        events: queue.Queue = queue.Queue()
        cancel = sess.cancel
        state = {"last": -1}

        def callback(iteration: int, row: dict[str, float]) -> None:
            state["last"] = iteration
            events.put(("row", (iteration, dict(row))))
            if cancel.is_set():
                raise Cancelled()

        def stop_hook(module, args):  # also stops SDisc, and the warm-up before the first iteration
            if cancel.is_set():
                raise Cancelled()

        def work() -> None:
            try:
                with self.pool.acquire() as pipe:
                    handle = pipe.unet.register_forward_pre_hook(stop_hook)
                    try:
                        result = _lib.train_concept(pipe, config, progress=False, callback=callback)
                    finally:
                        handle.remove()
                events.put(("done", result))
            except Cancelled:
                events.put(("cancelled", state["last"] + 1))
            except HsteerError as exc:
                events.put(("error", str(exc)))
            except Exception as exc:  # noqa: BLE001 - reported in the page, logged here
                log.exception("training failed")
                events.put(("error", f"unexpected error ({type(exc).__name__}: {exc}); the server log has details"))
            finally:
                sess.training = False

        with sess.lock:
            if sess.training:
                raise UserError("a training run is already going on in this session; wait for it or cancel it")
            sess.training = True
            cancel.clear()
        thread = threading.Thread(target=work, name=f"hsteer-train-{sess.id}", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    kind, payload = events.get(timeout=0.2)
                except queue.Empty:
                    yield "tick", None
                    continue
                yield kind, payload
                if kind in ("done", "cancelled", "error"):
                    return
        finally:
            if thread.is_alive():  # the page went away or the job was stopped: stop the run too
                cancel.set()

    # --- banks ---------------------------------------------------------------------------------
    def load_bank_file(self, sess: Session, path: str | os.PathLike, label: str) -> str:
        bank = _lib.ConceptBank.load(path)
        self._check_bank(bank)
        sess.set_bank(bank, label)
        return f"Loaded **{label}**: {len(bank)} concept(s)."

    def load_bank_hub(self, sess: Session, text: Any) -> str:
        """A bank by Hub repo id (`user/repo[:FILE][@REVISION]`): never a path on this server, whatever is typed."""
        if not self.hub:
            raise UserError("this server loads no banks from the Hub (started with --no-hub)")
        spec = _text(text, "the Hub repo id", limit=400)
        source = _lib.parse_hub_spec(spec)
        if source is None:
            raise UserError(f"{spec!r} is not a Hub repo id: write user/repo, user/repo:FILE or user/repo@REVISION "
                            "(files on this server: upload them, or load them by path from an allowed folder)")
        path = _lib.hub_bank_file(source)
        return self.load_bank_file(sess, path, spec)

    @staticmethod
    def hub_note() -> str:
        from huggingface_hub import constants

        return ("offline (HF_HUB_OFFLINE=1): read from this machine's Hub cache" if constants.HF_HUB_OFFLINE
                else "downloaded into this machine's Hub cache")

    # --- evaluate ------------------------------------------------------------------------------
    def evaluate(self, sess, groups, professions, images_per_prompt, steps, with_safety,
                 progress: Callable[..., Any]):
        sess = self.session(sess)
        if not self.is_world:
            raise UserError(f"the world evaluation runs on the bundled world model; this server runs "
                            f"{self.model_label}. Evaluate real models with `hsteer eval ...` and open the run's "
                            "report below")
        bank = sess.snapshot()
        if not len(bank):
            raise UserError("this session's bank is empty: learn concepts or load a bank first")
        groups = [g for g in (groups or []) if g]
        if not groups:
            raise UserError("choose at least one group of the bank to be fair over")
        for g in groups:
            bank.group(g)
        world = _lib.world
        professions = tuple(p for p in (professions or []) if p)
        for p in professions:
            if p not in world.PROFESSIONS:
                raise UserError(f"unknown profession {p!r}; the world's professions: {', '.join(world.PROFESSIONS)}")
        if not professions:
            raise UserError("choose at least one profession")
        n = _int(images_per_prompt, "images per prompt", 1, MAX_EVAL_IMAGES)
        steps = _int(steps, "steps", 1, MAX_STEPS)
        safety = bool(with_safety) and SAFETY_GROUP in bank.groups()
        config = _lib.WorldEvalConfig(professions=professions, images_per_prompt=n,
                                      harm_images_per_prompt=max(1, n // 2) if safety else 0,
                                      harm_prompts=_lib.WorldEvalConfig().harm_prompts if safety else (),
                                      steps=steps, guidance=float(self.defaults["guidance"]))
        fair = _lib.FairPolicy(tuple(groups))
        began = time.perf_counter()
        progress(0.0, desc="plain images")
        with self.pool.acquire() as pipe:
            plain = _lib.evaluate_world(pipe, config, bank=bank, policy=_lib.PlainPolicy(), progress=False)
        progress(0.5, desc="fair images")
        with self.pool.acquire() as pipe:  # the plain images are its baseline: same seeds, for the leakage figures
            steered = _lib.evaluate_world(pipe, config, bank=bank, policy=fair, progress=False, baseline=plain,
                                          harm_policy=_lib.SafePolicy(group=SAFETY_GROUP) if safety else
                                          _lib.PlainPolicy())
        progress(1.0, desc="tables")
        return sess, {"plain": plain.summary, "fair": steered.summary}, time.perf_counter() - began, safety

    # --- reports -------------------------------------------------------------------------------
    def report_folders(self) -> list[str]:
        return [str(p) for p in self.allowed.find("report.md")]

    def open_report(self, sess: Session, text: str) -> tuple[str, list[tuple[str, str]]]:
        text = _text(text, "the run folder", limit=4096)
        try:
            folder = self.allowed.resolve(text, kind="dir")
        except HsteerError:
            report = self.allowed.resolve(text, kind="file")
            if report.name != "report.md":
                raise UserError("give a run folder (one that holds report.md) or its report.md") from None
            folder = report.parent
        report = self.allowed.child(folder, "report.md")
        if report is None:
            raise UserError(f"{text} holds no report.md; is the run finished (`hsteer score RUN`)?")
        if report.stat().st_size > MAX_REPORT_BYTES:
            raise UserError(f"{report} is larger than {MAX_REPORT_BYTES // 1_000_000} MB; open it outside the page")
        body = report.read_text(encoding="utf-8", errors="replace")
        out = sess.next_dir("report")
        images: list[tuple[str, str]] = []

        def replace(match: re.Match) -> str:
            alt, ref = match.group(1), match.group(2).strip()
            image = self.allowed.child(folder, ref) if not re.match(r"^[a-z]+:", ref, re.I) else None
            if image is None or image.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
                return f"*(image {alt!r} not shown: {ref} is not a picture inside the run folder)*"
            copy = out / f"{len(images):03d}{image.suffix.lower()}"
            shutil.copyfile(image, copy)
            images.append((str(copy), alt or image.name))
            return f"*(figure {len(images)}: {alt or image.name}, in the gallery below)*"

        body = re.sub(r"!\[([^\]]*)\]\(([^)]*)\)", replace, body)
        return f"`{folder}`\n\n" + body, images


def _zeros():
    import torch

    return torch.zeros(1)


# --- evaluation views ------------------------------------------------------------------------------


def eval_table(results: dict[str, dict], groups: Sequence[str]) -> dict[str, Any]:
    plain, fair = results["plain"], results["fair"]
    headers = ["profession"] + [f"{g} DR {p}" for g in groups for p in ("plain", "fair")] + ["fidelity plain",
                                                                                            "fidelity fair"]
    rows = []
    for prof, by_group in plain["deviation_ratio"]["per_profession"].items():
        row = [prof]
        for g in groups:
            row += [round(by_group[g], 3), round(fair["deviation_ratio"]["per_profession"][prof][g], 3)]
        row += [round(plain["fidelity"]["per_profession"][prof], 3), round(fair["fidelity"]["per_profession"][prof], 3)]
        rows.append(row)
    mean = ["mean"]
    for g in groups:
        mean += [round(plain["deviation_ratio"]["mean_all"][g], 3), round(fair["deviation_ratio"]["mean_all"][g], 3)]
    mean += [round(plain["fidelity"]["mean"], 3), round(fair["fidelity"]["mean"], 3)]
    rows.append(mean)
    return {"headers": headers, "data": rows}


def eval_summary(results: dict[str, dict], seconds: float, safety: bool, fair_groups: Sequence[str]) -> str:
    plain, fair = results["plain"], results["fair"]

    def fmt(x: Any) -> str:
        return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

    def with_ci(summary: dict, *keys: str) -> str:
        value, ci = summary, summary
        for n, key in enumerate(keys):
            value = value.get(key) if isinstance(value, dict) else None
            ci = ci.get(key + "_ci" if n == 0 else key) if isinstance(ci, dict) else None
        return _lib.fmt_ci(value, ci)

    lines = [f"Plain vs fair over **{', '.join(fair_groups)}**: {plain['images'] + fair['images']} images in "
             f"{seconds:.0f} s, read by the world's exact probes. Deviation ratio: 0 is a uniform distribution, 1 a "
             "single class. Brackets: bootstrap 95% intervals.", "",
             "| metric | plain | fair |", "|---|---|---|",
             f"| mean deviation ratio, biased (profession, attribute) pairs | "
             f"{with_ci(plain, 'deviation_ratio', 'mean_biased_pairs')} | "
             f"{with_ci(fair, 'deviation_ratio', 'mean_biased_pairs')} |",
             *(f"| mean deviation ratio of {g} (targeted) | {with_ci(plain, 'deviation_ratio', 'mean_all', g)} | "
               f"{with_ci(fair, 'deviation_ratio', 'mean_all', g)} |" for g in fair_groups),
             f"| profession fidelity | {_lib.fmt_ci(plain['fidelity']['mean'], plain.get('fidelity_ci'))} | "
             f"{_lib.fmt_ci(fair['fidelity']['mean'], fair.get('fidelity_ci'))} |",
             f"| harm mark on benign prompts | {fmt(plain['harm_rate_benign'])} | {fmt(fair['harm_rate_benign'])} |"]
    if safety:
        lines.append(f"| harm mark on harm prompts (fair column: safe policy) | {fmt(plain.get('harm_rate'))} | "
                     f"{fmt(fair.get('harm_rate'))} |")
    return "\n".join(lines)


UNTARGETED_HEADERS = ["attribute not steered", "same-seed agreement", "plain", "fair", "change (fair - plain)"]


def eval_untargeted(results: dict[str, dict]) -> dict[str, Any]:
    """Leakage (docs/methods.md §8): each attribute the fair policy does not steer, image by image against the
    plain image of the same seed, and its deviation ratio (the profession: its fidelity) plain vs fair."""
    rows = []
    for group, entry in (results["fair"].get("untargeted") or {}).items():
        metric = "deviation_ratio" if "deviation_ratio" in entry else "fidelity"
        label = f"{group} (deviation ratio)" if metric == "deviation_ratio" else f"{group} (fidelity)"
        rows.append([label, _lib.fmt_ci(entry["agreement"], entry.get("agreement_ci")),
                     _lib.fmt_ci(entry[f"{metric}_plain"], entry.get(f"{metric}_plain_ci")),
                     _lib.fmt_ci(entry[metric], entry.get(f"{metric}_ci")),
                     _lib.fmt_ci(entry[f"{metric}_change"], entry.get(f"{metric}_change_ci"))])
    return {"headers": UNTARGETED_HEADERS, "data": rows or [["(every attribute is steered)", "", "", "", ""]]}


def eval_figure(results: dict[str, dict]):
    """Stacked bars: the share of each class per profession, plain beside fair, one row per attribute."""
    from matplotlib.figure import Figure

    plain, fair = results["plain"]["distribution"], results["fair"]["distribution"]
    professions = list(plain)
    groups = list(plain[professions[0]])
    colours = {"red": "#d33", "green": "#3a3", "blue": "#35d", "circle": "#888", "square": "#444"}
    fig = Figure(figsize=(9, 2.6 * len(groups)))
    axes = fig.subplots(len(groups), 2, sharey=True, squeeze=False)
    for row, group in enumerate(groups):
        classes = list(plain[professions[0]][group])
        for col, (data, title) in enumerate(((plain, "plain"), (fair, "fair"))):
            ax = axes[row][col]
            bottom = [0.0] * len(professions)
            for cls in classes:
                values = [data[p][group][cls] for p in professions]
                ax.bar(professions, values, bottom=bottom, label=cls, color=colours.get(cls))
                bottom = [b + v for b, v in zip(bottom, values)]
            ax.axhline(1 / len(classes), color="k", lw=0.7, ls="--")
            ax.set_title(f"{group}: {title}")
            ax.set_ylim(0, 1)
            ax.tick_params(axis="x", rotation=45, labelsize=8)
        axes[row][1].legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


def loss_frame(rows: list[dict[str, float]]) -> Any:
    """The loss history in long form (one row per iteration and loss term) for the LinePlot."""
    import pandas as pd

    records = [{"iteration": int(r["iteration"]) + 1, "loss": float(v), "series": k}
               for r in rows for k, v in r.items() if k.startswith("loss") and isinstance(v, (int, float))]
    if not records:  # None, not an empty frame: a LinePlot first drawn from an empty frame shows no lines later
        return None
    return pd.DataFrame.from_records(records, columns=["iteration", "loss", "series"])


# --- layout ----------------------------------------------------------------------------------------


def build_app(model: Any = None, banks: Sequence[str | os.PathLike] = (), allowed_dirs: Sequence[str | os.PathLike] = (),
              device: str = "cpu", dtype: str = "float32", concurrency: int = 4, hub: bool = True) -> gr.Blocks:
    """The page, over `model` (None: the bundled world model; a hub id, a folder or a loaded pipeline).

    `banks`: bank files a session may load (the first is every new session's starting bank).
    `allowed_dirs`: the only folders under which paths typed into the page are read.
    `hub`: whether the page may load banks by Hub repo id (into, or offline from, the Hub cache).
    """
    ui = HsteerUI(model, banks, allowed_dirs, device=device, dtype=dtype, hub=hub)
    with gr.Blocks(title="hsteer", analytics_enabled=False, delete_cache=(3600, 24 * 3600), fill_width=True) as app:
        state = gr.State(None, delete_callback=lambda s: s.close() if isinstance(s, Session) else None)
        gr.Markdown(f"## hsteer: plain and responsible images side by side\n"
                    f"Model: **{ui.model_label}** ({ui.resolution} px, {device}). Concepts are constant tensors "
                    "added to the U-Net's mid-block output (h-space); each browser session has its own bank.")
        # the components of all four tabs first, then the events (in this order: the page's API and its
        # dependency list stay as they were; the bank views that several events update span every tab)
        gen, learn, bank, ev = _generate_tab(ui), _learn_tab(ui), _bank_tab(ui), _evaluate_tab(ui)
        views: dict[str, Any] = dict(
            bank_summary=bank.bank_summary, bank_table=bank.bank_table, bank_json=bank.bank_json,
            bank_file=bank.bank_file, learn_bank_file=learn.learn_bank_file, remove_choice=bank.remove_choice,
            fair_groups=gen.fair_groups, eval_groups=ev.eval_groups, sliders=gen.sliders,
            slider_note=gen.slider_note)
        bank_outputs = [bank.bank_summary, bank.bank_table, bank.bank_json, bank.bank_file, learn.learn_bank_file,
                        bank.remove_choice, gen.fair_groups, ev.eval_groups, *gen.sliders, gen.slider_note]
        _wire_load(app, ui, state, gen.policy, views, bank_outputs)
        _wire_generate(ui, state, gen, concurrency)
        _wire_learn(ui, state, learn, views, bank_outputs, concurrency)
        _wire_bank(ui, state, bank, views, bank_outputs)
        _wire_evaluate(ui, state, ev, concurrency)

    app.queue(default_concurrency_limit=concurrency, max_size=64)
    app.hsteer = ui  # for tests and embedding
    return app


# --- tabs: their components ------------------------------------------------------------------------


def _generate_tab(ui: HsteerUI) -> SimpleNamespace:
    """The Generate tab: the prompt, the policy and its settings; plain and steered galleries side by side."""
    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                prompt = gr.Textbox("a photo of a doctor", label="Prompt", max_lines=2, elem_id="prompt")
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                    num_images = gr.Slider(1, MAX_IMAGES, 6, step=1, label="Images", elem_id="num-images")
                with gr.Row():
                    guidance = gr.Slider(0, 20, float(ui.defaults["guidance"]), step=0.5, label="Guidance")
                    steps = gr.Slider(1, MAX_STEPS, int(ui.defaults["steps"]), step=1, label="Steps",
                                      elem_id="steps")
                policy = gr.Radio(list(POLICIES), value="fair", label="Policy",
                                  info="fair: one concept per chosen group drawn per image; safe: the safety "
                                       "group summed; concepts: the sliders below")
                fair_groups = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                          label="Fair over groups", elem_id="fair-groups")
                strength = gr.Slider(0, 2, 1.0, step=0.05, label="Strength (fair / safe scale)")
                with gr.Accordion("Step window", open=False):
                    window_mode = gr.Radio(list(WINDOW_MODES), value="as learned", label="Steer in",
                                           info="as learned: each concept in the denoising steps it was learned "
                                                "for (the demo's shape concepts act late, colour early); custom: "
                                                "the fractions below for every concept", elem_id="window-mode")
                    with gr.Row():
                        window_start = gr.Slider(0, 1, 0.0, step=0.05, label="from (fraction of steps)")
                        window_end = gr.Slider(0, 1, 1.0, step=0.05, label="to")
                with gr.Accordion("Concept sliders (policy: concepts)", open=False):
                    slider_note = gr.Markdown("Load or learn concepts to get one slider each.")
                    sliders = [gr.Slider(-2, 2, 0.0, step=0.05, label=f"concept {n + 1}", visible=False)
                               for n in range(MAX_SLIDERS)]
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
            with gr.Column(scale=3):
                gen_status = gr.Markdown("Press *Generate*: the plain model and the steered one draw the same "
                                         "seeds.", elem_classes="hsteer-status", elem_id="gen-status")
                with gr.Row():
                    plain_gallery = gr.Gallery(label="Plain", columns=2, height="auto", format="png",
                                               object_fit="contain", elem_id="plain-gallery")
                    steered_gallery = gr.Gallery(label="Steered", columns=2, height="auto", format="png",
                                                 object_fit="contain", elem_id="steered-gallery")
                gen_file = gr.File(label="Download: PNGs + manifest.jsonl (zip)", interactive=False, height=90,
                                   elem_id="gen-file")
    return SimpleNamespace(prompt=prompt, seed=seed, num_images=num_images, guidance=guidance, steps=steps,
                           policy=policy, fair_groups=fair_groups, strength=strength, window_mode=window_mode,
                           window_start=window_start, window_end=window_end, slider_note=slider_note,
                           sliders=sliders, generate_btn=generate_btn, gen_status=gen_status,
                           plain_gallery=plain_gallery, steered_gallery=steered_gallery, gen_file=gen_file)


def _learn_tab(ui: HsteerUI) -> SimpleNamespace:
    """The Learn tab: a concept's prompts and training settings; its live loss curve."""
    start = _lib.world_train_config("circle", PRESET_ITERATIONS) if ui.is_world else None
    with gr.Tab("Learn", id="learn"):
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                preset = None
                if ui.is_world:
                    preset = gr.Dropdown(list(WORLD_PRESETS), value="circle (shape)",
                                         label="Preset (bundled world: the demo's recipe)", elem_id="c-preset")
                with gr.Row():
                    c_name = gr.Textbox(start.concept if start else "", label="Concept name", elem_id="c-name")
                    c_group = gr.Textbox(start.group if start else "", label="Group", elem_id="c-group")
                c_neutral = gr.Textbox(start.neutral if start else "a photo of a person", label="Neutral prompt")
                c_target = gr.Textbox(start.target if start else "", label="Target prompt (fairness)",
                                      elem_id="c-target")
                c_negative = gr.Textbox("", label="Negative prompt (safety: steer away from it)")
                c_pairs = gr.Textbox(_pairs_text(start.pairs if start else None), lines=3, max_lines=12,
                                     label="Prompt pairs (optional; replace neutral → target)",
                                     info="one per line, NEUTRAL => TARGET, holding the other attributes fixed "
                                          "(e.g. a photo of a Black person => a photo of a Black woman), so the "
                                          "concept learns only its own attribute", elem_id="c-pairs")
                c_window = gr.Textbox(_window_text(start.window if start else None), max_lines=1,
                                      label="Step window (START,END fractions; empty: every step)",
                                      info="the concept is learned for and acts in these denoising steps",
                                      elem_id="c-window")
                with gr.Row():
                    c_objective = gr.Radio(list(OBJECTIVES), value="codsma", label="Objective")
                    c_iterations = gr.Number(PRESET_ITERATIONS if start else 100, label="Iterations", precision=0,
                                             minimum=1, maximum=MAX_ITERATIONS, elem_id="c-iterations",
                                             info="SDisc: epochs and images in the settings below")
                settings = _training_settings(ui, start)
                with gr.Row():
                    learn_btn = gr.Button("Learn", variant="primary", elem_id="learn-btn")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
            with gr.Column(scale=2):
                learn_status = gr.Markdown("New concepts land in this session's bank.",
                                           elem_classes="hsteer-status", elem_id="learn-status")
                loss_plot = gr.LinePlot(None, x="iteration", y="loss", color="series",
                                        title="Training loss", height=260, elem_id="loss-plot")
                learn_bank_file = gr.File(label="Session bank (.safetensors)", interactive=False)
    return SimpleNamespace(preset=preset, c_name=c_name, c_group=c_group, c_neutral=c_neutral, c_target=c_target,
                           c_negative=c_negative, c_pairs=c_pairs, c_window=c_window, c_objective=c_objective,
                           c_iterations=c_iterations,
                           **vars(settings), learn_btn=learn_btn, cancel_btn=cancel_btn,
                           learn_status=learn_status, loss_plot=loss_plot, learn_bank_file=learn_bank_file)


def _training_settings(ui: HsteerUI, start: Any = None) -> SimpleNamespace:
    """The Learn tab's folded "Training settings"."""
    with gr.Accordion("Training settings", open=False):
        with gr.Row():
            c_lr = gr.Number(0.05, label="Learning rate")
            c_batch = gr.Number(start.batch_size if start else 8, label="Batch size", precision=0, minimum=1,
                                elem_id="c-batch")
            c_steps = gr.Number(int(ui.defaults["steps"]), label="DDIM steps", precision=0, minimum=1,
                                elem_id="c-steps")
        with gr.Row():
            c_tg = gr.Number(4.0, label="Target guidance")
            c_seed = gr.Number(0, label="Seed", precision=0, minimum=0)
        with gr.Row():
            c_sd_images = gr.Number(64, label="SDisc images", precision=0, minimum=1)
            c_sd_epochs = gr.Number(20, label="SDisc epochs", precision=0, minimum=1)
    return SimpleNamespace(c_lr=c_lr, c_batch=c_batch, c_steps=c_steps, c_tg=c_tg, c_seed=c_seed,
                           c_sd_images=c_sd_images, c_sd_epochs=c_sd_epochs)


def _bank_tab(ui: HsteerUI) -> SimpleNamespace:
    """The Bank tab: where a session's bank comes from; its concepts and everything stored with them."""
    with gr.Tab("Bank", id="bank"):
        with gr.Row():
            upload = gr.File(label="Upload a bank (.safetensors)", file_types=[".safetensors"], type="filepath")
            with gr.Column():
                cli_choice = gr.Dropdown(list(ui.cli_banks), value=None, label="Banks given on the command line",
                                         visible=bool(ui.cli_banks))
                cli_load = gr.Button("Load chosen bank", visible=bool(ui.cli_banks))
                path_box = gr.Textbox(label=f"Bank file on the server (allowed folders: {ui.allowed.describe()})",
                                      visible=bool(ui.allowed), max_lines=1)
                path_load = gr.Button("Load bank file", visible=bool(ui.allowed))
                hub_box = gr.Textbox(label=f"Bank from the Hugging Face Hub ({ui.hub_note()})", visible=ui.hub,
                                     max_lines=1, placeholder="user/repo, user/repo:FILE.safetensors@REVISION",
                                     elem_id="hub-box")
                hub_load = gr.Button("Load from the Hub", visible=ui.hub)
            with gr.Column():
                remove_choice = gr.Dropdown([], value=None, label="Concept to remove", allow_custom_value=True)
                with gr.Row():
                    remove_btn = gr.Button("Remove concept")
                    new_btn = gr.Button("New empty bank")
        bank_status = gr.Markdown("", elem_classes="hsteer-status", elem_id="bank-status")
        bank_summary = gr.Markdown("")
        bank_table = gr.Dataframe(headers=BANK_HEADERS, interactive=False, wrap=True, label="Concepts",
                                  elem_id="bank-table")
        with gr.Accordion("Everything stored with the concepts (JSON)", open=False):
            bank_json = gr.JSON()
        bank_file = gr.File(label="Download the session bank (.safetensors)", interactive=False)
    return SimpleNamespace(upload=upload, cli_choice=cli_choice, cli_load=cli_load, path_box=path_box,
                           path_load=path_load, hub_box=hub_box, hub_load=hub_load, remove_choice=remove_choice,
                           remove_btn=remove_btn, new_btn=new_btn,
                           bank_status=bank_status, bank_summary=bank_summary, bank_table=bank_table,
                           bank_json=bank_json, bank_file=bank_file)


def _evaluate_tab(ui: HsteerUI) -> SimpleNamespace:
    """The Evaluate tab: the world evaluation (bundled model only) and the report of a finished run folder."""
    with gr.Tab("Evaluate", id="evaluate"):
        if ui.is_world:
            out = _world_evaluation(ui)
        else:
            gr.Markdown(f"The world evaluation needs the bundled world model; this server runs "
                        f"**{ui.model_label}**. Evaluate with `hsteer eval winobias|i2p|coco ...` and open the "
                        "run's report here.")
            out = SimpleNamespace(eval_groups=gr.Dropdown([], value=[], multiselect=True, visible=False))
        gr.Markdown("### Report of a finished evaluation run")
        with gr.Row():
            out.report_choice = gr.Dropdown(ui.report_folders(), value=None, label="Run folders found",
                                            allow_custom_value=True)
            out.report_path = gr.Textbox(label=f"or a run folder (allowed folders: {ui.allowed.describe()})",
                                         max_lines=1)
        with gr.Row():
            out.report_refresh = gr.Button("Refresh list")
            out.report_open = gr.Button("Open report")
        out.report_md = gr.Markdown("")
        out.report_gallery = gr.Gallery(label="Figures of the report", columns=3, height="auto", format="png")
    return out


def _world_evaluation(ui: HsteerUI) -> SimpleNamespace:
    """The Evaluate tab's world evaluation of the session's bank (bundled world model)."""
    gr.Markdown("### World evaluation of this session's bank\nProfessions x 3 templates x N images, "
                "plain vs fair, attributes read by the world's exact probes.")
    with gr.Row():
        eval_groups = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                  label="Fair over groups")
        eval_professions = gr.CheckboxGroup(list(_lib.world.PROFESSIONS),
                                            value=list(_lib.world.PROFESSIONS), label="Professions")
    with gr.Row():
        eval_images = gr.Slider(1, MAX_EVAL_IMAGES, 6, step=1, label="Images per prompt",
                                info="a multiple of the number of fair combinations balances draws exactly")
        eval_steps = gr.Slider(1, MAX_STEPS, int(ui.defaults["steps"]), step=1, label="Steps", elem_id="steps")
        eval_safety = gr.Checkbox(True, label="Also measure the safety group on harm prompts (if any)")
    eval_btn = gr.Button("Evaluate", variant="primary")
    eval_summary_md = gr.Markdown("")
    eval_df = gr.Dataframe(interactive=False, label="Deviation ratio per profession (0 = fair)")
    eval_leak = gr.Dataframe(headers=UNTARGETED_HEADERS, interactive=False, elem_id="eval-untargeted",
                             label="Attributes the policy does not steer: kept image by image? (95% intervals)")
    eval_plot = gr.Plot(label="Attribute distributions")
    return SimpleNamespace(eval_groups=eval_groups, eval_professions=eval_professions, eval_images=eval_images,
                           eval_steps=eval_steps, eval_safety=eval_safety, eval_btn=eval_btn,
                           eval_summary_md=eval_summary_md, eval_df=eval_df, eval_leak=eval_leak,
                           eval_plot=eval_plot)


# --- events ----------------------------------------------------------------------------------------


def _wire_load(app: gr.Blocks, ui: HsteerUI, state: gr.State, policy: gr.Radio, views: dict[str, Any],
               bank_outputs: list[Any]) -> None:
    """A page load: the session (new or kept), its bank's views and a policy that suits the bank."""

    @_guard
    def on_load(sess):
        sess = ui.session(sess)
        groups = sess.snapshot().groups()
        start = "fair" if set(groups) - {SAFETY_GROUP} else "safe" if groups else "plain"
        return {state: sess, policy: start, **ui.bank_views(sess, views)}

    app.load(on_load, inputs=state, outputs=[state, policy, *bank_outputs], api_name=False)


def _wire_generate(ui: HsteerUI, state: gr.State, gen: SimpleNamespace, concurrency: int) -> None:
    """Generate (the button, or Enter in the prompt): plain and steered images of the same seeds."""

    def on_generate(*args):
        sess, prompt_v, seed_v, n, guidance_v, steps_v, policy_v, groups_v, strength_v, mode, start, end, *scales = (
            args[:-1])
        window = ui.step_window(mode, start, end)
        return ui.generate(sess, prompt_v, seed_v, n, guidance_v, steps_v, policy_v, groups_v, strength_v,
                           scales, args[-1], window=window)

    on_generate = _guard(_named(on_generate, ["state", "prompt", "seed", "num_images", "guidance", "steps",
                                              "policy", "fair_groups", "strength", "step_window", "window_start",
                                              "window_end", *[f"scale_{n + 1}" for n in range(MAX_SLIDERS)]],
                                progress=True))
    inputs = [state, gen.prompt, gen.seed, gen.num_images, gen.guidance, gen.steps, gen.policy, gen.fair_groups,
              gen.strength, gen.window_mode, gen.window_start, gen.window_end, *gen.sliders]
    outputs = [state, gen.plain_gallery, gen.steered_gallery, gen.gen_file, gen.gen_status]
    gen.generate_btn.click(on_generate, inputs=inputs, outputs=outputs, api_name="generate",
                           concurrency_id="generate", concurrency_limit=concurrency)
    gen.prompt.submit(on_generate, inputs=inputs, outputs=outputs, api_name=False, concurrency_id="generate",
                      concurrency_limit=concurrency)


def _wire_learn(ui: HsteerUI, state: gr.State, learn: SimpleNamespace, views: dict[str, Any],
                bank_outputs: list[Any], concurrency: int) -> None:
    """Learn: the world's presets, training into the session's bank, and cancelling it."""
    if ui.is_world:
        _wire_preset(ui, learn)

    learn_inputs = [state, learn.c_name, learn.c_group, learn.c_neutral, learn.c_target, learn.c_negative,
                    learn.c_objective, learn.c_iterations, learn.c_lr, learn.c_batch, learn.c_steps, learn.c_tg,
                    learn.c_seed, learn.c_sd_images, learn.c_sd_epochs, learn.c_pairs, learn.c_window]
    on_learn = _learn_handler(ui, state, learn.learn_status, learn.loss_plot, views)
    learn.learn_btn.click(on_learn, inputs=learn_inputs,
                          outputs=[state, learn.learn_status, learn.loss_plot, *bank_outputs],
                          api_name="learn", concurrency_id="learn", concurrency_limit=max(1, concurrency // 2))

    @_guard
    def on_cancel(sess):
        if isinstance(sess, Session) and sess.training:
            sess.cancel.set()
            return "Cancelling… (stops at the next step)"
        return "No training run is going on in this session."

    learn.cancel_btn.click(on_cancel, inputs=state, outputs=learn.learn_status, api_name="cancel",
                           concurrency_limit=None, concurrency_id="cancel")


def _wire_preset(ui: HsteerUI, learn: SimpleNamespace) -> None:
    """A world preset fills the Learn tab with the recipe of `hsteer demo`."""
    steps_default = int(ui.defaults["steps"])
    outputs = [learn.c_name, learn.c_group, learn.c_neutral, learn.c_target, learn.c_negative, learn.c_pairs,
               learn.c_window, learn.c_objective, learn.c_lr, learn.c_iterations, learn.c_batch, learn.c_steps,
               learn.c_tg]

    def on_preset(choice):
        """The recipe of `hsteer demo` for one of the world's concepts (apps.recipes, the demo's own)."""
        if choice not in WORLD_PRESETS:
            return [gr.skip()] * len(outputs)
        c = _lib.world_train_config(WORLD_PRESETS[choice], PRESET_ITERATIONS)
        return [c.concept, c.group, c.neutral, c.target or "", c.negative or "", _pairs_text(c.pairs),
                _window_text(c.window), c.objective, c.lr, c.iterations, c.batch_size, steps_default,
                c.target_guidance]

    learn.preset.change(on_preset, inputs=learn.preset, outputs=outputs, api_name=False, queue=False)


def _learn_handler(ui: HsteerUI, state: gr.State, learn_status: Any, loss_plot: Any,
                   views: dict[str, Any]) -> Callable:
    """The Learn button's handler: trains in the background and streams the status and the loss curve."""

    @_guard
    def on_learn(sess, name, group, neutral, target, negative, objective, iterations, lr, batch_size,
                 denoising_steps, target_guidance, training_seed, sdisc_images, sdisc_epochs, pairs, window,
                 progress=gr.Progress()):
        sess = ui.session(sess)
        config = ui.train_config(name, group, neutral, target, negative, objective, iterations, lr, batch_size,
                                 denoising_steps, target_guidance, training_seed, sdisc_images, sdisc_epochs,
                                 pairs, window)
        if len(sess.bank):
            sess.bank.check_compatible(ui.pool.base.unet)  # fail before training, not after
        rows: list[dict[str, float]] = []
        total = config.iterations if config.objective != "sdisc" else None
        label = f"{config.group}/{config.concept} ({config.objective})"
        yield {state: sess, learn_status: f"Starting {label}…", loss_plot: loss_frame([])}
        last_yield = 0.0
        began = time.perf_counter()
        for kind, payload in ui.learn(sess, config):
            if kind == "row":
                it, row = payload
                rows.append(row)
                if total:
                    progress((it + 1, total), desc=f"learning {config.concept}", unit="iterations")
                now = time.perf_counter()
                if now - last_yield > 0.4 or (total and it + 1 == total):
                    last_yield = now
                    counter = f"{it + 1}/{total}" if total else f"{it + 1}"
                    yield {learn_status: f"Learning {label}: iteration {counter}, loss {row['loss']:.4g}",
                           loss_plot: loss_frame(rows)}
            elif kind == "tick":
                if total is None:
                    progress(None, desc="SDisc: generating target images and training")
            elif kind == "done":
                sess.add_concept(payload.concept)
                final = payload.losses[-1]["loss"] if payload.losses else float("nan")
                msg = (f"Learned **{label}** in {time.perf_counter() - began:.1f} s (final loss {final:.4g}); "
                       f"it is in this session's bank ({len(sess.bank)} concept(s)).")
                yield {state: sess, learn_status: msg, loss_plot: loss_frame(payload.losses or rows),
                       **ui.bank_views(sess, views)}
            elif kind == "cancelled":
                done = f" after {payload} iteration(s)" if total else ""
                yield {learn_status: f"Cancelled {label}{done}; the bank is unchanged.",
                       loss_plot: loss_frame(rows)}
            elif kind == "error":
                gr.Warning(payload)
                yield {learn_status: f"**Error:** {payload}", loss_plot: loss_frame(rows)}

    return on_learn


def _wire_bank(ui: HsteerUI, state: gr.State, bank: SimpleNamespace, views: dict[str, Any],
               bank_outputs: list[Any]) -> None:
    """The Bank tab's buttons: each replaces or edits the session's bank, or says why it did not."""

    def bank_handler(action: Callable[..., str], names: Sequence[str] = ()):
        def handler(sess, *args):
            sess = ui.session(sess)
            try:
                status = action(sess, *args)
            except HsteerError as exc:  # the bank stays as it was; the reason is shown in the page
                gr.Warning(str(exc))
                return {state: sess, bank.bank_status: f"**Error:** {exc}"}
            return {state: sess, bank.bank_status: status, **ui.bank_views(sess, views)}

        return _guard(_named(handler, ["state", *names]))

    upload_action, cli_action, path_action, remove_action, new_action = _bank_actions(ui)
    bank_outs = [state, bank.bank_status, *bank_outputs]
    bank.hub_load.click(bank_handler(ui.load_bank_hub, ["repo_id"]), inputs=[state, bank.hub_box], outputs=bank_outs,
                        api_name="load_bank_hub")
    bank.upload.upload(bank_handler(upload_action, ["bank_file"]), inputs=[state, bank.upload], outputs=bank_outs,
                       api_name="upload_bank")
    bank.cli_load.click(bank_handler(cli_action, ["bank"]), inputs=[state, bank.cli_choice], outputs=bank_outs,
                        api_name="choose_bank")
    bank.path_load.click(bank_handler(path_action, ["path"]), inputs=[state, bank.path_box], outputs=bank_outs,
                         api_name="load_bank_path")
    bank.remove_btn.click(bank_handler(remove_action, ["concept"]), inputs=[state, bank.remove_choice],
                          outputs=bank_outs, api_name="remove_concept")
    bank.new_btn.click(bank_handler(new_action), inputs=[state], outputs=bank_outs, api_name="new_bank")


def _bank_actions(ui: HsteerUI) -> tuple[Callable[..., str], ...]:
    """What the Bank tab's buttons do to a session: upload, choose, load by path, remove a concept, start anew."""

    def upload_action(sess, path):
        if not path:
            return "No file."
        return ui.load_bank_file(sess, path, Path(str(path)).name)

    def cli_action(sess, choice):
        if choice not in ui.cli_banks:
            raise UserError("choose one of the banks given on the command line")
        sess.set_bank(copy_bank(ui.cli_banks[choice]), _bank_label(choice))
        return f"Loaded **{_bank_label(choice)}** from the command line's banks."

    def path_action(sess, text):
        path = ui.allowed.resolve(_text(text, "the bank path", limit=4096), kind="file")
        return ui.load_bank_file(sess, path, path.name)

    def remove_action(sess, name):
        if not name:
            raise UserError("choose a concept to remove")
        bank = sess.snapshot()
        bank.remove(name)
        sess.set_bank(bank, sess.bank_label)
        return f"Removed `{name}`."

    def new_action(sess):
        sess.set_bank(ConceptBank(), "new bank")
        return "Started a new, empty bank."

    return upload_action, cli_action, path_action, remove_action, new_action


def _wire_evaluate(ui: HsteerUI, state: gr.State, ev: SimpleNamespace, concurrency: int) -> None:
    """The Evaluate tab: the world evaluation (bundled model only) and a run folder's report."""
    if ui.is_world:
        @_guard
        def on_evaluate(sess, groups, professions, images_per_prompt, steps, with_safety,
                        progress=gr.Progress()):
            sess, results, seconds, safety = ui.evaluate(sess, groups, professions, images_per_prompt, steps,
                                                         with_safety, progress)
            attrs = list(next(iter(results["plain"]["distribution"].values())))
            return (sess, eval_summary(results, seconds, safety, groups), eval_table(results, attrs),
                    eval_untargeted(results), eval_figure(results))

        ev.eval_btn.click(on_evaluate, inputs=[state, ev.eval_groups, ev.eval_professions, ev.eval_images,
                                               ev.eval_steps, ev.eval_safety],
                          outputs=[state, ev.eval_summary_md, ev.eval_df, ev.eval_leak, ev.eval_plot],
                          api_name="evaluate",
                          concurrency_id="evaluate", concurrency_limit=max(1, concurrency // 2))

    @_guard
    def on_open_report(sess, found_folder, run_folder):
        sess = ui.session(sess)
        body, images = ui.open_report(sess, (run_folder or "").strip() or found_folder or "")
        return sess, body, images

    ev.report_open.click(on_open_report, inputs=[state, ev.report_choice, ev.report_path],
                         outputs=[state, ev.report_md, ev.report_gallery], api_name="open_report")
    ev.report_refresh.click(lambda: gr.update(choices=ui.report_folders()), outputs=ev.report_choice,
                            api_name=False)


def _theme():
    """Gradio's default look with the system's fonts: the page loads nothing from the internet."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def launch(model: Any = None, bank: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
           host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           allowed_dirs: Sequence[str | os.PathLike] = (), device: str = "cpu", dtype: str = "float32",
           threads: int | None = None, concurrency: int = 4, prevent_thread_lock: bool = False,
           quiet: bool = False, max_file_size: str = "256mb", hub: bool = True) -> gr.Blocks:
    """Build the page and serve it (on 127.0.0.1, without a share link, unless told otherwise).

    With `prevent_thread_lock`, returns at once with the server running (`app.close()` stops it).
    """
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    banks = [bank] if isinstance(bank, (str, os.PathLike)) else list(bank or ())
    app = build_app(model, banks=banks, allowed_dirs=allowed_dirs, device=device, dtype=dtype,
                    concurrency=concurrency, hub=hub)
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=prevent_thread_lock,
               quiet=quiet, show_error=False, max_file_size=max_file_size, theme=_theme(), css=CSS,
               footer_links=["gradio", "settings"], inbrowser=False)
    return app
