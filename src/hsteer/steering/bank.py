"""Concept banks: named concepts in groups, stored as one safetensors file.

Layout of the file: tensor `"<concept>/<tensor>"` for each tensor of each concept (CoDSMa and SDisc:
`c`; RespoDiff: `ram` and `sam`), and the JSON metadata under the header key `"hsteer"`:

    {"format": 1, "hsteer_version": ..., "hspace_shape": [C, h, w], "unet_fingerprint": ...,
     "site": "mid_block", "family": "unet",
     "concepts": {"<name>": {"group": ..., "objective": ..., "tensors": [...], "meta": {...}}}}

A bank's concepts live at one steering site of one denoiser family (`hsteer.model.sites`): `site` is the
site's spec (`mid_block`, `transformer_blocks.N`, `single_transformer_blocks.N`, `text`) and
`hspace_shape` the shape of one concept there (`[C, h, w]` at the mid-block, `[tokens, width]`
elsewhere); each concept's meta records its own site and shape too. Banks written before sites existed
have neither key and read as the U-Net mid-block.

A concept at a **set of sites** (`site` `"transformer_blocks.0,text"`) holds one tensor per site, stored
as `"<concept>/<tensor>@<site>"`, each of its site's shape; its meta and the header add `site_shapes`
(`{"<site>": [...], ...}`, in the order of `site`), and `hspace_shape` is `[size]`: in memory its tensors
are the sites' tensors flattened and concatenated (`hsteer.model.sites.SiteSet`), and
`Concept.site_deltas()` gives them per site. A single-site concept is stored exactly as before.

No pickles anywhere: loading a bank can never run code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hsteer._version import __version__
from hsteer.checks import JSON_MAX_DEPTH, check_input_file, check_name, check_output_file, json_depth
from hsteer.errors import BankError, HsteerError, ModelMismatchError, ShapeMismatchError, UnknownConceptError
from hsteer.fileio import atomic_save
import hsteer.steering.hub as hub
from hsteer.steering.detectors import (LinearDetector, check_detector, check_detector_groups, detectors_from_header,
                                     merge_detectors)
from hsteer.steering.bankcheck import (check_concept_meta, check_finite_concepts, check_header, check_shape,
                                     check_site_shapes, parse_header)
from hsteer.steering.hub import DEFAULT_WEIGHT_NAME
from hsteer.model.geometry import hspace_shape, unet_fingerprint
from hsteer.model.families import DEFAULT_FAMILY_KEY, family_for, family_label
from hsteer.model.sites import SiteSet, SteeringSite, denoiser_of, site_for

FORMAT_VERSION = 1


def _check_name(kind: str, name: str) -> None:
    try:
        check_name(kind, name)
    except HsteerError as exc:
        raise BankError(str(exc)) from None


@dataclass
class Concept:
    """One learned concept: its tensors (summed at use) and how it was made."""

    name: str
    group: str
    objective: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name("concept", self.name)
        _check_name("group", self.group)
        if not isinstance(self.objective, str) or not self.objective:
            raise BankError(f"concept {self.name!r}: objective must be a non-empty string, got {self.objective!r}")
        if not isinstance(self.tensors, dict) or not self.tensors:
            raise BankError(f"concept {self.name!r} has no tensors")
        if not all(isinstance(t, torch.Tensor) for t in self.tensors.values()):
            raise BankError(f"concept {self.name!r}: its tensors must be torch tensors")
        check_concept_meta(self.meta, f"concept {self.name!r}")
        shapes = {tuple(t.shape) for t in self.tensors.values()}
        if len(shapes) != 1:
            raise ShapeMismatchError(f"concept {self.name!r} mixes tensor shapes {sorted(shapes)}")
        if "site_shapes" in self.meta:  # a set of sites: flat tensors, as long as its sites' together
            check_site_shapes(self.meta["site_shapes"], self.meta.get("site"), next(iter(shapes)),
                              f"concept {self.name!r}", self.meta.get("family"))
        else:
            check_shape(next(iter(shapes)), f"concept {self.name!r}")  # what a bank file can hold and load

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the concept's delta (its first tensor's)."""
        return tuple(next(iter(self.tensors.values())).shape)

    @property
    def site(self) -> str | None:
        """The spec of the site the concept was learned at (None: made before sites were recorded)."""
        site = self.meta.get("site")
        return str(site) if site is not None else None

    @property
    def site_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """A concept at a set of sites: each site's shape, in order (None: one site)."""
        shapes = self.meta.get("site_shapes")
        return {str(k): tuple(int(n) for n in v) for k, v in shapes.items()} if shapes else None

    def split(self, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat tensor of this concept as one tensor per site (a single-site concept: `{site: tensor}`)."""
        shapes = self.site_shapes
        if shapes is None:
            return {self.site or "mid_block": tensor}
        out, offset = {}, 0
        for spec, shape in shapes.items():
            n = math.prod(shape)
            out[spec] = tensor[offset:offset + n].reshape(shape)
            offset += n
        return out

    def site_deltas(self) -> dict[str, torch.Tensor]:
        """What the concept adds at each of its sites (one entry for a single-site concept)."""
        return self.split(self.delta())

    @property
    def window(self) -> tuple[float, float] | None:
        """The denoising-step window the concept was learned for and acts in (None: every step)."""
        window = self.meta.get("window")
        return (float(window[0]), float(window[1])) if window else None

    def delta(self) -> torch.Tensor:
        """What the concept adds to h: the sum of its tensors (h + ram + sam for RespoDiff)."""
        tensors = list(self.tensors.values())
        total = tensors[0].detach().float().clone()
        for t in tensors[1:]:
            total += t.detach().float()
        return total

    def describe(self) -> dict[str, Any]:
        """The concept's metadata with its name, group, objective and the shapes of the tensors it holds
        (what it holds, not what its metadata says)."""
        return {**self.meta, "name": self.name, "group": self.group, "objective": self.objective,
                "tensors": {k: list(v.shape) for k, v in self.tensors.items()}}  # what it holds, not what meta says


class ConceptBank:
    """Named concepts for one model's steering site (by default the U-Net's h-space).

    `hspace_shape`, `unet_fingerprint`, `site` and `family` are fixed by the first concept added (or given);
    a bank with neither site nor family given is a U-Net mid-block bank.
    """

    def __init__(self, hspace_shape: Iterable[int] | None = None, unet_fingerprint: str | None = None,
                 concepts: Iterable[Concept] = (), site: str | None = None, family: str | None = None) -> None:
        concepts = list(concepts)
        flat = any(c.site_shapes is not None for c in concepts if isinstance(c, Concept))  # a set's flat length
        self.hspace_shape = check_shape(hspace_shape, "hspace_shape", flat) if hspace_shape is not None else None
        self.unet_fingerprint = unet_fingerprint
        self.site, self.family = site, family
        self._concepts: dict[str, Concept] = {}
        #: group -> the harm detector that decides per image whether that group acts (`hsteer.guard`)
        self.detectors: dict[str, LinearDetector] = {}
        for concept in concepts:
            self.add(concept)

    # --- contents -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._concepts)

    def __contains__(self, name: object) -> bool:
        return name in self._concepts

    def __iter__(self):
        return iter(self._concepts.values())

    def __getitem__(self, name: str) -> Concept:
        try:
            return self._concepts[name]
        except KeyError:
            known = ", ".join(sorted(self._concepts)) or "none"
            raise UnknownConceptError(f"unknown concept {name!r}; this bank holds: {known}") from None

    @property
    def names(self) -> list[str]:
        """The concepts' names, in the bank's order."""
        return list(self._concepts)

    def groups(self) -> dict[str, list[str]]:
        """Each group's concept names, in the bank's order."""
        out: dict[str, list[str]] = {}
        for concept in self._concepts.values():
            out.setdefault(concept.group, []).append(concept.name)
        return out

    def group(self, group: str) -> list[Concept]:
        """The concepts of `group`; an unknown group is refused with the bank's groups."""
        members = [c for c in self._concepts.values() if c.group == group]
        if not members:
            known = ", ".join(sorted(self.groups())) or "none"
            raise UnknownConceptError(f"unknown group {group!r}; this bank's groups: {known}")
        return members

    @property
    def site_spec(self) -> str:
        """The site every concept of the bank acts at (`mid_block` for banks made before sites)."""
        return self.site or "mid_block"

    @property
    def family_name(self) -> str:
        """The model family the bank was learned on (`DEFAULT_FAMILY_KEY`, `unet`, for banks that predate
        families)."""
        return self.family or DEFAULT_FAMILY_KEY

    @property
    def site_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """A bank at a set of sites: each site's shape (its concepts'), in order; None at one site."""
        first = next(iter(self._concepts.values()), None)
        return first.site_shapes if first is not None else None

    def _adopt_site(self, concept: Concept) -> None:
        """The bank's site and family are its concepts': a concept of another site or family is refused."""
        site, family = concept.meta.get("site"), concept.meta.get("family")
        if not self._concepts:
            self.site, self.family = self.site or site, self.family or family
        if self._concepts and concept.site_shapes != self.site_shapes:
            raise ShapeMismatchError(f"concept {concept.name!r} has the site shapes {concept.site_shapes}, this "
                                     f"bank's concepts {self.site_shapes}; keep each size's concepts in their own bank")
        if (site or "mid_block") != self.site_spec or (family or DEFAULT_FAMILY_KEY) != self.family_name:
            raise ModelMismatchError(f"concept {concept.name!r} lives at site {site or 'mid_block'} of a "
                                     f"{family_label(family or DEFAULT_FAMILY_KEY)} model, this bank at "
                                     f"{self.site_spec} of a {family_label(self.family_name)}"
                                     " model; keep each site's concepts in their own bank")

    def add(self, concept: Concept, replace: bool = True) -> None:
        """Add `concept` to the bank; a concept of another shape, site or U-Net is refused, and an
        existing name is replaced only with `replace=True`."""
        self._adopt_site(concept)
        if self.hspace_shape is None:
            self.hspace_shape = concept.shape
        if concept.shape != self.hspace_shape:
            raise ShapeMismatchError(f"concept {concept.name!r} has shape {concept.shape} but this bank's "
                                     f"h-space is {self.hspace_shape}")
        fingerprint = concept.meta.get("unet_fingerprint")
        if fingerprint and self.unet_fingerprint and fingerprint != self.unet_fingerprint:
            raise ModelMismatchError(f"concept {concept.name!r} was learned on U-Net {fingerprint}, this bank "
                                     f"is for U-Net {self.unet_fingerprint}")
        if self.unet_fingerprint is None and fingerprint:
            self.unet_fingerprint = fingerprint
        if concept.name in self._concepts and not replace:
            raise BankError(f"concept {concept.name!r} already exists; replace it with replace=True "
                            "(CLI: hsteer bank merge --replace)")
        self._concepts[concept.name] = concept

    def remove(self, name: str) -> None:
        """Remove the concept `name` (an unknown name is refused); the harm detector of a group left empty
        goes with it."""
        group = self[name].group  # raises a clear error if unknown
        del self._concepts[name]
        if group not in self.groups():
            self.detectors.pop(group, None)  # it decided for the group's concepts, and none is left

    def merge(self, other: ConceptBank, replace: bool = False) -> ConceptBank:
        """A new bank with the concepts of both; on a name clash `other` wins only if `replace`."""
        if not isinstance(other, ConceptBank):
            raise BankError(f"merge takes a ConceptBank, got {type(other).__name__}; load it first: "
                            "ConceptBank.load(...)")
        merged = ConceptBank(self.hspace_shape, self.unet_fingerprint, self, self.site, self.family)
        if other.unet_fingerprint and merged.unet_fingerprint and other.unet_fingerprint != merged.unet_fingerprint:
            raise ModelMismatchError(f"cannot merge banks of different U-Nets ({merged.unet_fingerprint} vs "
                                     f"{other.unet_fingerprint})")
        for concept in other:
            merged.add(concept, replace=replace)
        merged.detectors = merge_detectors(self.detectors, other.detectors, replace)
        return merged

    # --- validation -----------------------------------------------------------------------------
    def check_compatible(self, unet, expected_shape: tuple[int, ...] | None = None,
                         allow_other_model: bool = False) -> None:
        """Refuse to steer a denoiser (or a pipeline's) of another family, or whose shape at the bank's site
        (both never overridable) or config differs. `expected_shape`: the site's shape at the size to be
        made (a U-Net's native h-space when not given)."""
        unet = denoiser_of(unet)
        self.check_family(unet)
        shape = tuple(expected_shape) if expected_shape is not None else hspace_shape(unet)
        if self.hspace_shape is not None and tuple(self.hspace_shape) != shape:
            where = "h-space" if self.site_spec == "mid_block" else f"site {self.site_spec}"
            raise ShapeMismatchError(f"the bank's concepts have shape {self.hspace_shape} but the model's {where} "
                                     f"is {shape} at this resolution; use a bank learned for this model and size")
        fingerprint = unet_fingerprint(unet)
        if self.unet_fingerprint and fingerprint != self.unet_fingerprint and not allow_other_model:
            raise ModelMismatchError(f"this bank was learned on another U-Net (fingerprint {self.unet_fingerprint}, "
                                     f"this model: {fingerprint}); retrain it for this model, or pass "
                                     "allow_other_model=True if you know they match", field="allow_other_model")

    def check_family(self, pipe_or_denoiser) -> None:
        """Refuse a model of another family than the bank's (never overridable: the sites differ)."""
        family = family_for(pipe_or_denoiser)
        if self.family is None and not self._concepts:  # a new, empty bank takes its first concept's family
            return
        if family.key != self.family_name:
            raise ModelMismatchError(f"this bank's concepts were learned at site {self.site_spec} of a "
                                     f"{family_label(self.family_name)} model; this model is "
                                     f"{family.label}: train a bank for it "
                                     "(hsteer.training.train_into_bank; CLI: hsteer train --model ...)")

    def site_of(self, pipe_or_denoiser) -> SteeringSite | SiteSet:
        """The bank's site on this model (refused on a model of another family, or without that site); a
        set of sites bound to its concepts' shapes."""
        self.check_family(pipe_or_denoiser)
        site = site_for(pipe_or_denoiser, self.site_spec)
        shapes = self.site_shapes
        if isinstance(site, SiteSet) and shapes is not None:
            site = site.with_shapes(shapes[part.spec] for part in site.sites)
        return site

    # --- files ----------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The bank as a JSON-ready dict: format, shape, fingerprint, site, family, groups, each concept's
        description, and each group's harm detector with its error rates."""
        concepts = [{**c.describe(), "site": c.site or self.site_spec} for c in self]
        info = {"format": FORMAT_VERSION, "hspace_shape": list(self.hspace_shape or []),
                "unet_fingerprint": self.unet_fingerprint, "site": self.site_spec, "family": self.family_name,
                "groups": self.groups(), "concepts": concepts}
        if self.site_shapes:
            info["site_shapes"] = {spec: list(shape) for spec, shape in self.site_shapes.items()}
        if self.detectors:  # group -> its harm detector's kind, feature, decision step, threshold, error rates
            info["detectors"] = {group: {"kind": d.name, **d.describe()} for group, d in self.detectors.items()}
        return info

    def save(self, path: str | Path) -> Path:
        """Write atomically: a failed save leaves any earlier file at `path` intact.

        Refused before anything is written: an output that is a folder, device, FIFO or socket (a rename
        would replace `/dev/null` by a regular file), non-finite values, and metadata that `load` would
        refuse (a bad stored window, nesting too deep), so a saved bank always loads.
        """
        path = check_output_file(path, "bank file")
        check_finite_concepts(self)
        for concept in self:
            check_concept_meta(concept.meta, f"concept {concept.name!r}")  # meta is mutable after construction
        tensors = {key: v.to("cpu", torch.float32).contiguous() for c in self for key, v in _stored(c).items()}
        check_detector_groups(self.detectors, self.groups())  # a detector is saved only beside its group
        for group, detector in self.detectors.items():
            check_detector(detector, f"the harm detector of group {group!r}")
            tensors.update(detector.tensors(group))
        header = {"format": FORMAT_VERSION, "hsteer_version": __version__,
                  "hspace_shape": list(self.hspace_shape or []), "unet_fingerprint": self.unet_fingerprint,
                  "site": self.site_spec, "family": self.family_name,
                  "concepts": {c.name: {"group": c.group, "objective": c.objective, "tensors": list(c.tensors),
                                        "meta": c.meta} for c in self}}
        if self.site_shapes:
            header["site_shapes"] = {spec: list(shape) for spec, shape in self.site_shapes.items()}
        if self.detectors:
            header["detectors"] = {group: d.entry() for group, d in self.detectors.items()}
        try:
            text = json.dumps(header)
        except (TypeError, ValueError, RecursionError) as exc:
            raise BankError(f"cannot save bank {path}: a concept's meta holds a value JSON cannot store "
                            f"({type(exc).__name__}); keep meta to numbers, strings, lists and objects") from None
        if json_depth(text) > JSON_MAX_DEPTH:
            raise BankError(f"cannot save bank {path}: a concept's meta nests deeper than {JSON_MAX_DEPTH} levels")
        atomic_save(path, lambda tmp: save_file(tensors, tmp, metadata={"hsteer": text}))
        return path

    def save_pretrained(self, directory: str | Path, eval_summary: dict[str, Any] | None = None, *,
                        repo_id: str | None = None, weight_name: str = DEFAULT_WEIGHT_NAME,
                        license: str = "other") -> Path:
        """Write the bank (`hsteer_bank.safetensors`) and its model card (`README.md`) into `directory`."""
        return hub.save_pretrained(self, directory, eval_summary, repo_id=repo_id, weight_name=weight_name,
                                   license=license)

    def model_card(self, repo_id: str | None = None, eval_summary: dict[str, Any] | None = None,
                   license: str = "other") -> str:
        """The model card `save_pretrained` and `push_to_hub` write (CLI: `hsteer bank card BANK`)."""
        return hub.model_card(self, repo_id, eval_summary, license=license)

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None, **kwargs: Any) -> str:
        """Upload the `save_pretrained` folder to the Hub repo `repo_id` (created if missing); the commit URL.

        Keyword arguments: commit_message, revision, create_pr, eval_summary, weight_name, license, endpoint.
        """
        return hub.push_to_hub(self, repo_id, private=private, token=token, **kwargs)

    @classmethod
    def load(cls, path_or_repo_id: str | Path, weight_name: str | None = None, revision: str | None = None,
             subfolder: str | None = None, cache_dir: str | Path | None = None,
             local_files_only: bool | None = None, token: str | bool | None = None) -> ConceptBank:
        """Load a bank from a file, a folder, or a Hub repo (`user/repo`, or `user/repo:FILE@REVISION`).

        As diffusers' `load_lora_weights`: `weight_name` (default `hsteer_bank.safetensors`), `subfolder`,
        `revision`, `cache_dir`, `local_files_only` and `token` apply to Hub repos (and folders); downloads
        are cached by `huggingface_hub` and honour `HF_HUB_OFFLINE`.
        """
        path = hub.resolve_bank_file(path_or_repo_id, weight_name, revision, subfolder, cache_dir,
                                     local_files_only, token)
        if not path.exists():
            raise BankError(f"bank file {path} does not exist; create it with hsteer.training.train_into_bank "
                            f"(CLI: `hsteer train --bank {path} ...`)")
        check_input_file(path, "bank file")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BankError(f"bank file {path} is corrupt or not a safetensors file ({exc})") from None
        if "hsteer" not in metadata:
            raise BankError(f"{path} is a safetensors file but not an hsteer bank (no 'hsteer' metadata)")
        header = parse_header(path, metadata["hsteer"])
        version = header.get("format") if isinstance(header, dict) else FORMAT_VERSION
        if isinstance(version, bool) or version != FORMAT_VERSION:
            raise BankError(f"bank {path} has format {header.get('format')!r}, this hsteer reads format "
                            f"{FORMAT_VERSION}; upgrade hsteer")
        check_header(path, header, tensors)
        return cls._from_header(path, header, tensors)

    @classmethod
    def _from_header(cls, path: Path, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> ConceptBank:
        """The bank of a checked header; any remaining inconsistency names the bank file."""
        try:
            shape = header["hspace_shape"] if len(header["hspace_shape"]) != 1 else None  # a set's: its concepts'
            bank = cls(shape or None, header.get("unet_fingerprint"), site=header.get("site"),
                       family=header.get("family"))
            for name, entry in header["concepts"].items():
                sites = (entry.get("meta") or {}).get("site_shapes") if len(header["hspace_shape"]) == 1 else None
                parts = {k: torch.cat([tensors[f"{name}/{k}@{spec}"].flatten() for spec in sites]) if sites
                         else tensors[f"{name}/{k}"] for k in entry["tensors"]}
                bank.add(Concept(name, entry["group"], entry["objective"], parts, entry.get("meta", {})))
            bank.detectors = detectors_from_header(header.get("detectors"), tensors, bank.groups())
        except HsteerError as exc:
            raise type(exc)(f"bank file {path}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise BankError(f"bank file {path} has inconsistent metadata ({exc!r}); it is corrupt") from None
        return bank


def _stored(concept: Concept) -> dict[str, torch.Tensor]:
    """The file's tensors of a concept: `name/tensor`, or at a set of sites `name/tensor@site`, one per site."""
    if concept.site_shapes is None:
        return {f"{concept.name}/{k}": v.detach() for k, v in concept.tensors.items()}
    return {f"{concept.name}/{k}@{spec}": part for k, v in concept.tensors.items()
            for spec, part in concept.split(v.detach()).items()}
