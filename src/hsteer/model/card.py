"""What a model folder says about itself to hsteer: its `hsteer.json` (sampling defaults, and for a
transformer model the steering site its scan chose and the T5 length it was trained with).

Read from the folder a pipeline was loaded from (`pipe.name_or_path`), so a pipeline built in memory, or
loaded from a folder without the file, gets the library's defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hsteer.errors import ModelLoadError


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a UTF-8 file, or one ModelLoadError line saying what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelLoadError(f"{what} {path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{what} {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{what} {path} is not a JSON object")
    return data


def model_card(pipe_or_model) -> dict[str, Any]:
    """The `hsteer.json` of the folder `pipe_or_model` was loaded from, or {} (no folder, no file, or a file
    that is not a JSON object: `sampling_defaults` reports a broken card; here it only means no overrides).

    Asked at every prompt encoding of an SD3 model, so the parsed card is kept on the object, keyed by the
    file's modification time: a card rewritten after loading (`hsteer sites --set-default`) is read again."""
    folder = getattr(pipe_or_model, "name_or_path", None)
    if not isinstance(folder, str) or not folder:
        return {}
    card = Path(folder) / "hsteer.json"
    try:
        stamp = (str(card), card.stat().st_mtime_ns)
    except OSError:
        return {}
    kept = getattr(pipe_or_model, "_hsteer_card", None)
    if kept is not None and kept[0] == stamp:
        return dict(kept[1])
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    data = data if isinstance(data, dict) else {}
    try:
        pipe_or_model._hsteer_card = (stamp, data)
    except AttributeError:  # an object that takes no attributes: read each time
        pass
    return dict(data)


def max_sequence_length(pipe) -> dict[str, int]:
    """`{"max_sequence_length": n}` where the model card fixes the T5 part of SD3's prompt (the bundled DiT
    world model has no T5 encoder; its pipeline pads the prompt with n zero tokens), else {}."""
    value = model_card(pipe).get("max_sequence_length")
    return {"max_sequence_length": value} if isinstance(value, int) and 0 < value <= 512 else {}


def write_default_site(folder: str | Path, spec: str) -> Path:
    """Record `spec` as the model's default steering site in `folder/hsteer.json` (kept keys preserved),
    atomically: what `hsteer sites --set-default` does with the scan's pick."""
    from hsteer.fileio import atomic_write_text

    from hsteer.model.loading import check_card_folder

    card = check_card_folder(folder) / "hsteer.json"  # a local transformer folder, never the installed package
    data = read_json_object(card, "model card") if card.is_file() else {}
    atomic_write_text(card, json.dumps({**data, "site": spec}) + "\n")
    return card


#: Where a run's steps or guidance came from, as the manifest records it (`defaults`).
FROM_ARGUMENT, FROM_CARD, FROM_PIPELINE, FROM_LIBRARY = "argument", "model card", "pipeline", "library default"


def sampling_for(pipe, steps: int | None = None,
                 guidance: float | None = None) -> tuple[int, float, dict[str, str]]:
    """The steps and CFG scale of a run on `pipe`, and where each came from: a value given is kept
    ("argument"); else the model card's (`hsteer.json` beside the loaded model: "model card"); else an SD3 /
    FLUX / SANA pipeline's own default ("pipeline"); else SD's 50 steps and guidance 7.5 ("library default").

    One set of defaults per model: `generate`, `attach` and the command line all resolve them here, so the
    bundled model samples with its card's 20 steps and guidance 4.0 wherever none are given."""
    from hsteer.model.loading import SD_SAMPLING, transformer_sampling

    card = model_card(pipe)
    name = type(pipe).__name__
    pipeline = transformer_sampling(name) if name.startswith(("StableDiffusion3", "Flux", "Sana")) else {}
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    for key, given in (("steps", steps), ("guidance", guidance)):
        stored = card.get(key)
        if given is not None:
            values[key], sources[key] = given, FROM_ARGUMENT
        elif isinstance(stored, (int, float)) and not isinstance(stored, bool):
            values[key], sources[key] = stored, FROM_CARD
        elif key in pipeline:
            values[key], sources[key] = pipeline[key], FROM_PIPELINE
        else:
            values[key], sources[key] = SD_SAMPLING[key], FROM_LIBRARY
    steps_out = values["steps"] if steps is not None else int(values["steps"])
    guidance_out = values["guidance"] if guidance is not None else float(values["guidance"])
    return steps_out, guidance_out, sources
