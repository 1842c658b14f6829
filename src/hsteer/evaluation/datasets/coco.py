"""COCO: captions to generate from, CLIP score against them, and FID where its optional parts exist.

Captions: a COCO captions JSON ({"annotations": [{"image_id", "caption"}, ...]}) or JSON lines, one
object per line with a "caption" (or "prompt"/"text") field, or a plain text file, one caption a line.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hsteer.checks import check_input_file, check_optional_count
from hsteer.errors import HsteerError, as_field

FID_HINT = ("FID needs the optional extra `pip install 'hsteer[fid]'` (torch-fidelity, which brings torchvision) "
            "and the Inception weights file pt_inception-2015-12-05-6726825d.pth in {hub}/checkpoints "
            "(or the scoring setting fid_weights; CLI: --fid-weights PATH); no weights are downloaded at run time")


def read_captions(path: str | Path, limit: int | None = None) -> list[tuple[str, str]]:
    """(caption id, caption) pairs in file order; at most `limit`."""
    path = Path(path)
    as_field("limit", check_optional_count, limit)
    if not path.exists():
        raise HsteerError(f"captions file {path} not found")
    check_input_file(path, "captions file")
    try:
        text = path.read_text(encoding="utf-8")
        return _parse_captions(text, path, limit)
    except UnicodeDecodeError as exc:
        raise HsteerError(f"captions file {path} is not UTF-8 text (byte {exc.start})") from None
    except (KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise HsteerError(f"captions file {path} does not have the COCO captions layout ({type(exc).__name__}: "
                          f"{str(exc)[:100]})") from None


def _parse_captions(text: str, path: Path, limit: int | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    stripped = text.lstrip()
    data = None
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError:
            data = None  # JSON lines
    if isinstance(data, dict) and "annotations" in data:
        if not isinstance(data["annotations"], list):
            raise HsteerError(f"{path}: 'annotations' is not a list")
        for n, ann in enumerate(data["annotations"]):
            out.append(_item(ann, n, path))
    elif isinstance(data, list):
        for n, item in enumerate(data):
            out.append(_item(item, n, path))
    elif stripped.startswith("{"):
        for n, line in enumerate(line for line in text.splitlines() if line.strip()):
            try:
                out.append(_item(json.loads(line), n, path))
            except ValueError:
                raise HsteerError(f"{path}: line {n + 1} is not JSON") from None
    else:
        out = [(str(n), line.strip()) for n, line in enumerate(text.splitlines()) if line.strip()]
    out = [(i, c) for i, c in out if c]
    if not out:
        raise HsteerError(f"no captions in {path}")
    return out[:limit] if limit else out


def _item(item, n: int, path: Path) -> tuple[str, str]:
    if isinstance(item, str):
        return str(n), item.strip()
    if not isinstance(item, dict):
        raise HsteerError(f"{path}: entry {n + 1} is neither a caption nor an object with one")
    for key in ("caption", "prompt", "text"):
        if key in item:
            return str(item.get("id", item.get("image_id", n))), str(item[key]).strip()
    raise HsteerError(f"{path}: entry {n + 1} has no caption/prompt/text field")


def clip_scores(alignments: list[float]) -> list[float]:
    """CLIP score per image: 100 x max(cos, 0) (torchmetrics' convention)."""
    return [max(a, 0.0) for a in alignments]


def fid_weights_path(explicit: str | Path | None = None) -> Path:
    """Where the FID Inception weights are: `explicit` where given, else torch hub's checkpoint folder."""
    if explicit:
        return Path(explicit)
    return Path(torch.hub.get_dir()) / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"


def compute_fid(generated: str | Path, reference: str | Path | None, weights: str | Path | None = None) -> dict:
    """{"fid": value} or {"fid": None, "fid_skipped": reason}; never downloads anything."""
    hint = FID_HINT.format(hub=torch.hub.get_dir())
    if reference is None:
        return {"fid": None, "fid_skipped": "no reference folder of real COCO images given (the scoring setting "
                                               "reference; CLI: --reference DIR)"}
    if not Path(reference).is_dir():
        return {"fid": None, "fid_skipped": f"reference folder {reference} not found"}
    try:
        import torch_fidelity
    except ImportError:
        return {"fid": None, "fid_skipped": hint}
    path = fid_weights_path(weights)
    if not path.is_file():
        return {"fid": None, "fid_skipped": f"Inception weights {path} missing; {hint}"}
    try:
        metrics = torch_fidelity.calculate_metrics(
            input1=str(generated), input2=str(reference), fid=True, verbose=False,
            feature_extractor_weights_path=str(path), cuda=torch.cuda.is_available())
    except Exception as exc:  # noqa: BLE001  (an optional metric must not lose the rest of the report)
        return {"fid": None, "fid_skipped": f"torch-fidelity failed: {exc}"}
    return {"fid": float(metrics["frechet_inception_distance"])}
