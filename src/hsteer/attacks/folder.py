"""An attack run folder: refuse what is not ours, check before writing, and `overwrite` only hsteer's files.

What an attack run writes is known from its `config.json` alone: the attack (`attacks.registry.ATTACKS`),
its harm prompts and images per prompt name every file (`state/<attack>-PPP.<ext>`,
`images/{before,after}-PPP-NNN.png`, `manifest.jsonl`, `prompts.csv`, `summary.json`). So

- a folder is checked (`check_run_folder`) before a model loads: a run there without `resume` or
  `overwrite`, both flags at once, a damaged `config.json`, or a file of the run that is a folder or
  a link are refused, and nothing is changed;
- `overwrite` (`prepare_run_folder`) removes exactly those files, after the new settings have been
  checked, never another file of the folder (the user's own files, hidden folders, PNGs of other names);
  the results (`summary.json`, `manifest.jsonl`, `prompts.csv`) go first and `config.json` is replaced
  last, so a kill at any moment leaves an unfinished run of the old settings (which `overwrite`
  removes again) and never a summary or manifest beside files that are gone.

The folder speaks the evaluation run folder's protocol (`hsteer.evaluation.runs`) rather than a third
one of its own: the same file names (`CONFIG`, `MANIFEST`, `IMAGES`, `SUMMARY`), the same refusal of a
link or a folder in place of a run's file (`check_own_file`), the same removal (`remove_file`), and
`attacks.run` writes its manifest and summary with the same writers. What stays here is what an attack
run does differently on purpose: an existing run is refused unless `resume` or `overwrite`, `overwrite`
removes exactly the files the stored config names, and the config (its own checks, bounds and wording)
is written last before the work, under a `FolderLock`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hsteer.attacks.registry import ATTACKS
from hsteer.checks import check_output_dir, load_json
from hsteer.errors import HsteerError, field_errors
from hsteer.evaluation.runs import CONFIG, IMAGES, MANIFEST, SUMMARY, check_own_file
from hsteer.evaluation.runs import remove_file as _remove  # module-level name: a kill test patches it
from hsteer.fileio import FolderLock, atomic_write_text

PROMPTS = "prompts.csv"  # the adversarial prompts, the format `hsteer eval attack --prompts` reads
STATE = "state"  # each harm prompt's resumable attack state
RESULTS = (SUMMARY, MANIFEST, PROMPTS)
FIX = "move it away, or choose another out_dir; nothing was changed"
#: Bounds of a stored config that names files (so a damaged one cannot name millions of them).
MAX_PROMPTS, MAX_IMAGES = 10_000, 100_000


def state_file(out: Path, method: str, index: int) -> Path:
    """Where the attack state of harm prompt `index` lives."""
    return out / STATE / f"{method}-{index:03d}.{ATTACKS[method].state_suffix}"


def image_name(phase: str, index: int, image: int) -> str:
    """The run-relative name of image `image` of harm prompt `index` in `phase` (before / after)."""
    return f"{IMAGES}/{phase}-{index:03d}-{image:03d}.png"


def read_config(out: Path) -> dict[str, Any] | None:
    """The folder's stored `config.json` (checked to name an attack run), or None when there is none.

    Not `evaluation.runs.read_config` on purpose: no config means no run here (there, no evaluation folder),
    the config is bounded because it names the files `overwrite` removes, and its refusals say out_dir."""
    path = out / CONFIG
    if not _present(path, "the run's settings"):
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise HsteerError(f"{path} is not UTF-8 text; it is damaged: move the folder away, or choose another "
                          "out_dir", field="out_dir") from None
    data = load_json(text, str(path), max_chars=64 * 2**20)
    prompts = data.get("prompts_in") if isinstance(data, dict) else None
    images = data.get("num_images") if isinstance(data, dict) else None
    if (not isinstance(data, dict) or data.get("attack") not in ATTACKS or not isinstance(prompts, list)
            or not 0 < len(prompts) <= MAX_PROMPTS or not all(isinstance(p, str) for p in prompts)
            or isinstance(images, bool) or not isinstance(images, int) or not 0 < images <= MAX_IMAGES):
        raise HsteerError(f"{path} is not the config of an hsteer attack run (attack, prompts_in, num_images); "
                          "move it or the folder away, or choose another out_dir; nothing was changed", field="out_dir")
    return data


def owned_files(out: Path, config: dict[str, Any]) -> list[Path]:
    """Every file the attack run of `config` writes in `out`, results first and `config.json` last."""
    method, prompts, images = config["attack"], len(config["prompts_in"]), config["num_images"]
    files = [out / name for name in RESULTS]
    files += [out / image_name(phase, n, i) for n in range(prompts) for phase in ("before", "after")
              for i in range(images)]
    files += [state_file(out, method, n) for n in range(prompts)]
    return files + [out / CONFIG]


def _present(path: Path, what: str) -> bool:
    """Whether a file of the run is there (`check_own_file`; a path below a file counts as absent, as
    `_check_subfolders` refuses such a subfolder itself); a folder, a link or a special file in its place is
    refused."""
    with field_errors("out_dir"):
        return check_own_file(path, f"{what} written by hsteer", FIX, parent_file_absent=True)


def _check_subfolders(out: Path) -> None:
    for sub in (STATE, IMAGES):
        path = out / sub
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise HsteerError(f"{path} is {'a symbolic link' if path.is_symlink() else 'a file'}, not the run's "
                              f"{sub} folder; {FIX}", field="out_dir")


def check_run_folder(out: str | Path, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Refuse the folder before anything loads or is written (see the module docstring); returns the stored
    config, if any. Changes nothing."""
    with field_errors("out_dir"):
        out = check_output_dir(Path(out), "out_dir")
    if resume and overwrite:
        raise HsteerError("resume=True continues the run in out_dir and overwrite=True replaces it; pass one of them",
                          field=("out_dir", "resume", "overwrite"))
    if not out.exists():
        return None
    _check_subfolders(out)
    stored = read_config(out)
    if stored is None:
        return None
    if not (resume or overwrite):
        raise HsteerError(f"{out} already holds an attack run; pass resume=True to continue it or overwrite=True to "
                          "replace it", field=("resume", "overwrite"))
    for path in owned_files(out, stored)[:-1]:
        _present(path, "a file of the attack run")
    return stored


def prepare_run_folder(out: str | Path, config: dict[str, Any], resume: bool, overwrite: bool) -> FolderLock:
    """Lock the folder, check it again under the lock, and make it ready for the run of `config` (already
    checked): on resume the stored settings must be the same; `overwrite` removes the old run's files."""
    out = Path(out)
    check_run_folder(out, resume, overwrite)
    with field_errors("out_dir"):
        lock = FolderLock(out, f"{out} is in use by another hsteer run; wait for it or use another out_dir")
    try:
        stored = check_run_folder(out, resume, overwrite)
        if stored is not None and resume and stored != config:
            changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
            raise HsteerError(f"{out} holds an attack run with other settings ({', '.join(changed)}); resume it "
                              "with the same command, pass overwrite=True to replace it, or use another out_dir",
                              field=("overwrite", "out_dir"))
        if stored is not None and overwrite:
            for path in owned_files(out, stored)[:-1]:
                _remove(path)
        with field_errors("out_dir"):
            atomic_write_text(out / CONFIG, _dump(config), elsewhere="another out_dir")
    except BaseException:
        lock.release()
        raise
    return lock


def _dump(config: dict[str, Any]) -> str:
    import json

    try:
        return json.dumps(config, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise HsteerError(f"the attack's settings cannot be stored as JSON ({exc})") from None
