"""Concept banks on the Hugging Face Hub: where a bank comes from, its model card, and uploading it.

A bank is named by a local file, a local folder, or a Hub repository:

    bank.safetensors                 a file
    path/to/folder                   a folder holding hsteer_bank.safetensors (or its only .safetensors)
    user/repo                        hsteer_bank.safetensors of the repo's main branch
    user/repo:sub/banks/x.safetensors@v1.0   a file (path inside the repo) and a revision (branch, tag, commit)

Downloads go through `huggingface_hub.hf_hub_download` (its cache, `HF_HUB_OFFLINE`, tokens), following
diffusers' `load_lora_weights` conventions: `weight_name`, `subfolder`, `revision`, `cache_dir`,
`local_files_only`, `token`.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsteer._version import __version__
from hsteer.errors import BankError, field_errors

#: The file name of a bank in a Hub repository or a `save_pretrained` folder.
DEFAULT_WEIGHT_NAME = "hsteer_bank.safetensors"

#: How a model card written by hsteer begins (its YAML front matter).
CARD_HEAD = b"---\nlibrary_name: hsteer\n"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class BankSource:
    """A parsed bank name: a local path, or a Hub repo with an optional file and revision."""

    path: Path | None = None
    repo_id: str | None = None
    weight_name: str | None = None
    revision: str | None = None


def parse_bank_spec(spec: str | Path, weight_name: str | None = None, revision: str | None = None) -> BankSource:
    """A local path when it exists (or looks like a file); else `REPO_ID[:FILE][@REVISION]`."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists() or isinstance(spec, Path):
        return BankSource(path=path)
    return parse_hub_spec(text, weight_name, revision) or BankSource(path=path)


def parse_hub_spec(text: str, weight_name: str | None = None, revision: str | None = None) -> BankSource | None:
    """`REPO_ID[:FILE][@REVISION]` as a Hub source, or None when `text` is not one (never a local path).

    A FILE that climbs out of the repo (`..`, an absolute path) is refused here, whatever the installed
    huggingface_hub checks: in the Hub cache it would name a file outside the repo's snapshot.
    """
    repo, at, rev = str(text).partition("@")
    repo, colon, file = repo.partition(":")
    if not (_REPO_ID.match(repo) and not repo.endswith(".safetensors") and (not colon or file) and (not at or rev)):
        return None
    name = weight_name or file or None
    if name and (name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/")):
        raise BankError(f"bank file {name!r} of {repo} leaves the repository; name a file inside it, "
                        "e.g. user/repo:banks/x.safetensors")
    return BankSource(repo_id=repo, weight_name=name, revision=revision or rev or None)


def _hub_error(exc: Exception) -> bool:
    """An error of reaching or reading the Hub (huggingface_hub's, or its HTTP client's), not a bug of ours."""
    from huggingface_hub.errors import EntryNotFoundError

    if isinstance(exc, (OSError, ValueError, EntryNotFoundError)):
        return True
    http_clients = ("httpx", "httpcore", "requests", "urllib3", "huggingface_hub")
    return any(cls.__module__.split(".")[0].rstrip("0123456789") in http_clients for cls in type(exc).__mro__)


def _one_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _local_file(path: Path, weight_name: str | None, subfolder: str | None) -> Path:
    if subfolder:
        path = path / subfolder
    if path.is_dir():
        if weight_name:
            return path / weight_name
        default = path / DEFAULT_WEIGHT_NAME
        candidates = sorted(path.glob("*.safetensors"))
        if not default.is_file() and len(candidates) == 1:
            return candidates[0]
        if not default.is_file():
            raise BankError(f"{path} is a directory holding no bank ({DEFAULT_WEIGHT_NAME} or a single "
                            ".safetensors file); pass the bank file itself (CLI: --bank FILE), or a folder written by "
                            "`bank.save_pretrained`")
        return default
    return path


def resolve_bank_file(spec: str | Path, weight_name: str | None = None, revision: str | None = None,
                      subfolder: str | None = None, cache_dir: str | Path | None = None,
                      local_files_only: bool | None = None, token: str | bool | None = None) -> Path:
    """The local file of a bank: the path itself, a file of a folder, or a download from the Hub (cached)."""
    source = parse_bank_spec(spec, weight_name, revision)
    if source.path is not None:
        return _local_file(source.path, weight_name, subfolder)
    return hub_bank_file(source, subfolder, cache_dir, local_files_only, token)


def hub_bank_file(source: BankSource, subfolder: str | None = None, cache_dir: str | Path | None = None,
                  local_files_only: bool | None = None, token: str | bool | None = None) -> Path:
    """The cached local copy of a Hub bank (downloaded unless cached or offline), or one clear error."""
    from huggingface_hub import hf_hub_download

    filename = source.weight_name or DEFAULT_WEIGHT_NAME
    where = f"{source.repo_id}:{'/'.join(filter(None, [subfolder, filename]))}@{source.revision or 'main'}"
    try:
        return Path(hf_hub_download(source.repo_id, filename, subfolder=subfolder, revision=source.revision,
                                    cache_dir=cache_dir, local_files_only=bool(local_files_only), token=token,
                                    library_name="hsteer", library_version=__version__))
    except Exception as exc:
        if not _hub_error(exc):
            raise
        raise BankError(f"could not get bank {where} from the Hugging Face Hub ({_one_line(exc)}); "
                        "check the repo id, file (REPO:FILE) and revision (@REV), your network or HF_HUB_OFFLINE, "
                        "or pass a local file") from None


# --- model card -------------------------------------------------------------------------------------


def _yaml_list(values: list[str]) -> str:
    return "".join(f"\n- {json.dumps(v)}" for v in values)


def _settings(meta: dict[str, Any]) -> str:
    keys = ("iterations", "batch_size", "steps", "lr", "lr_sam", "lam", "guidance", "target_guidance", "mode",
            "seed")
    return ", ".join(f"{k}={meta[k]}" for k in keys if k in meta and meta[k] is not None) or "-"


def _prompts(meta: dict[str, Any]) -> str:
    parts = [f"{k}: {meta[k]!r}" for k in ("neutral", "target", "negative") if meta.get(k)]
    return "; ".join(parts).replace("|", "\\|") or "-"


def model_card(bank, repo_id: str | None = None, eval_summary: dict[str, Any] | None = None,
               license: str = "other", weight_name: str = DEFAULT_WEIGHT_NAME) -> str:
    """The README.md of a bank's Hub repository: YAML front matter, concepts table, usage, evaluation."""
    # base_model: the concepts' models that are Hub ids (a local folder means nothing to a reader)
    models = sorted({str(c.meta["model"]) for c in bank if _REPO_ID.match(str(c.meta.get("model") or ""))})
    groups = bank.groups()
    tags = ["hsteer", "h-space", "concept-steering", "diffusers", "text-to-image", "fairness"]
    if any(c.group == "safety" for c in bank):
        tags.append("safety")
    front = ["---", "library_name: hsteer", f"license: {license}"]
    if models:
        front.append("base_model:" + _yaml_list(models))
    front += ["tags:" + _yaml_list(tags), "---", ""]
    name = repo_id or "REPO_ID"
    lines = [f"# hsteer concept bank{f' {repo_id}' if repo_id else ''}", "",
             f"{len(bank)} concept(s) in {len(groups)} group(s) for the h-space (U-Net mid-block output) of "
             f"{', '.join(f'`{m}`' for m in models) or 'its base model'}, learned with hsteer and stored as one "
             "safetensors file (`" + weight_name + "`; no pickles). "
             f"h-space shape {tuple(bank.hspace_shape or ())}, U-Net fingerprint `{bank.unet_fingerprint}`.", "",
             "| concept | group | objective | h-space shape | tensors | prompts | training |",
             "|---|---|---|---|---|---|---|"]
    for c in bank:
        tensors = ", ".join(c.tensors)
        lines.append(f"| {c.name} | {c.group} | {c.objective} | {tuple(c.shape)} | {tensors} | {_prompts(c.meta)} "
                     f"| {_settings(c.meta)} |")
    first_group = next(iter(groups), "gender")
    base = models[0] if models else "BASE_MODEL"
    weight_arg = "" if weight_name == DEFAULT_WEIGHT_NAME else f", weight_name={weight_name!r}"
    cli_spec = name if weight_name == DEFAULT_WEIGHT_NAME else f"{name}:{weight_name}"
    lines += ["", "## Use", "", "```python", "import torch", "from diffusers import AutoPipelineForText2Image",
              "import hsteer", "",
              f"pipe = AutoPipelineForText2Image.from_pretrained({base!r})",
              f"bank = hsteer.ConceptBank.load({name!r}{weight_arg})",
              f"hsteer.attach(pipe, bank, hsteer.FairPolicy(({first_group!r},)))  # one concept per image",
              "gens = [torch.Generator().manual_seed(s) for s in range(4)]",
              "images = pipe(\"a photo of a doctor\", num_images_per_prompt=4, generator=gens).images",
              "hsteer.detach(pipe)", "```", "", "```bash",
              f"hsteer generate --model {base} --bank {cli_spec} --fair {first_group} \\",
              "    --prompt \"a photo of a doctor\" --num-images 8 --out out/fair", "```", ""]
    if eval_summary:
        lines += ["## Evaluation", "", "```json", json.dumps(eval_summary, indent=2, sort_keys=True, default=str),
                  "```", ""]
    return "\n".join(front + lines)


def save_pretrained(bank, directory: str | Path, eval_summary: dict[str, Any] | None = None,
                    repo_id: str | None = None, weight_name: str = DEFAULT_WEIGHT_NAME,
                    license: str = "other") -> Path:
    """Write `weight_name` and README.md (the model card) into `directory`: what `push_to_hub` uploads.

    Both targets are checked before either is written: each must be new or a regular file, and a README.md
    already there must be a card hsteer wrote (its front matter says `library_name: hsteer`), so a project's
    own README is never replaced. Both are written atomically."""
    from hsteer.checks import check_output_dir, check_output_file
    from hsteer.fileio import atomic_write_text

    with field_errors("directory"):
        directory = check_output_dir(Path(directory), "directory")
    if not isinstance(weight_name, str) or not weight_name.endswith(".safetensors") or "/" in weight_name \
            or weight_name.startswith("."):
        raise BankError(f"weight_name {weight_name!r} must be a file name ending in .safetensors")
    with field_errors("directory"):
        readme = check_output_file(directory / "README.md", "directory")
        check_output_file(directory / weight_name, "directory")
    if readme.exists():
        with readme.open("rb") as handle:
            head = handle.read(64)
        if not head.startswith(CARD_HEAD):
            raise BankError(f"{readme} exists and is not a model card written by hsteer; move it away, or choose "
                            "another directory (nothing was written)", field="directory")
    card = model_card(bank, repo_id, eval_summary, license=license, weight_name=weight_name)
    directory.mkdir(parents=True, exist_ok=True)
    bank.save(directory / weight_name)
    with field_errors("directory"):
        atomic_write_text(readme, card, elsewhere="another directory")
    return directory


def push_to_hub(bank, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str | None = None, revision: str | None = None, create_pr: bool = False,
                eval_summary: dict[str, Any] | None = None, weight_name: str = DEFAULT_WEIGHT_NAME,
                license: str = "other", endpoint: str | None = None) -> str:
    """Create `repo_id` if needed and upload the bank and its card in one commit; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token, library_name="hsteer", library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="hsteer-push-") as tmp:
        save_pretrained(bank, tmp, eval_summary, repo_id=repo_id, weight_name=weight_name, license=license)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, create_pr=create_pr,
                                     commit_message=commit_message or f"Upload hsteer bank ({len(bank)} concepts)")
        except Exception as exc:
            if not _hub_error(exc):
                raise
            raise BankError(f"could not push bank to {repo_id} on {api.endpoint} ({_one_line(exc)}); "
                            "check your network, HF_HUB_OFFLINE and token (huggingface-cli login)") from None
    return str(getattr(info, "commit_url", info))
