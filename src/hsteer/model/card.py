"""What a model folder says about itself to hsteer: its `hsteer.json` (sampling defaults, and for a
transformer model the steering site its scan chose and the T5 length it was trained with).

Read from the folder a pipeline was loaded from (`pipe.name_or_path`), so a pipeline built in memory, or
loaded from a folder without the file, gets the library's defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsteer.errors import ModelLoadError

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


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


def max_sequence_length(pipe: Pipeline) -> dict[str, int]:
    """`{"max_sequence_length": n}` where the model card fixes the T5 part of SD3's prompt (the bundled DiT
    world model has no T5 encoder; its pipeline pads the prompt with n zero tokens), else {}."""
    value = model_card(pipe).get("max_sequence_length")
    return {"max_sequence_length": value} if isinstance(value, int) and 0 < value <= 512 else {}
