"""Steering sites as data: where in a denoiser a concept is added, for each denoiser family.

A site is named by a short spec, stored with every concept of a bank:

- `mid_block`: the U-Net mid-block output, the "h-space" of SD 1.x, 2.x and SDXL (their only block site);
- `transformer_blocks.N`: the output of transformer block N, image tokens only (SD3's joint blocks and
  FLUX's double-stream blocks return `(text tokens, image tokens)`; SANA's blocks hold image tokens only);
- `single_transformer_blocks.N` (FLUX): a single-stream block, whose stream holds text and image tokens;
  only the image tokens are steered;
- `text`: the text representation, an offset added to the prompt embeddings the denoiser consumes
  (`encoder_hidden_states`; RespoDiff's route on FLUX), for every family;
- a **set of sites**, their specs joined by commas (`transformer_blocks.0,text`): a concept that carries one
  tensor per site, added at all of them together (`SiteSet`; FluxSpace, SHIFT and SafeDIG steer several
  blocks of a DiT, as no single block is its bottleneck).

Which sites a model has, and how its guidance is laid out, is its family's to say (`hsteer.model.families`:
`Family.mid_block_site`, `block_stacks`, `token_index`, `site_kinds`, `batches_guidance`): SD, SDXL, SD3
and SANA batch `[uncond, cond]`; FLUX has no such batch (its guidance is distilled into an input, or true
CFG runs two passes), so every row of a FLUX call is an image.

Why here, in the model layer: a site is a fact about the model's structure (a submodule path and what its
output holds), and the hook, the bank and training all read it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar

import torch

from hsteer.errors import HsteerError, ShapeMismatchError
from hsteer.model.families import FAMILY_OF_KEY, family_for

KINDS = ("output", "tokens", "text")
_BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)$")


def base_module(module: torch.nn.Module) -> torch.nn.Module:
    """The module under a `torch.compile` wrapper (`OptimizedModule._orig_mod`), or the module itself."""
    return getattr(module, "_orig_mod", module)


def denoiser_of(pipe_or_model):
    """The pipeline's denoiser (`unet` or `transformer`), or the model itself when given one."""
    for attr in ("unet", "transformer"):
        found = getattr(pipe_or_model, attr, None)
        if isinstance(found, torch.nn.Module):
            return found
    return pipe_or_model


def family_of(pipe_or_model) -> str:
    """`unet`, `sd3`, `flux` or `sana`: the key of the family of a pipeline's (or a bare) denoiser, as a bank
    stores it (`hsteer.model.families.family_for` gives the family itself)."""
    return family_for(pipe_or_model).key


def batches_guidance(pipe_or_model) -> bool:
    """Whether the family runs classifier-free guidance as one `[uncond, cond]` batch (all but FLUX)."""
    return family_for(pipe_or_model).batches_guidance


@dataclass(frozen=True)
class SteeringSite:
    """A place in the denoiser whose tensor a concept is added to.

    `path`: the submodule's attribute path (`""`: the denoiser itself, for the text site);
    `denoiser_attr`: the pipeline attribute holding the denoiser; `kind`: `output` (the module's tensor
    output, `(B, C, h, w)`), `tokens` (image tokens `(B, N, D)`, element `output_index` of a tuple output)
    or `text` (the `encoder_hidden_states` input, `(B, L, D)`).
    """

    path: str = "mid_block"
    denoiser_attr: str = "unet"
    kind: str = "output"
    output_index: int | None = None

    @property
    def spec(self) -> str:
        """The short name stored in banks and taken as `site`."""
        return "text" if self.kind == "text" else self.path

    @property
    def label(self) -> str:
        """The site as `denoiser_attr.spec` (e.g. `unet.mid_block`), for messages and captions."""
        return f"{self.denoiser_attr}.{self.spec}"

    @property
    def ndim(self) -> int:
        """Dimensions of one image's delta: 3 for the mid-block `(C, h, w)`, 2 for tokens `(N, D)` or `(L, D)`."""
        return 3 if self.kind == "output" else 2

    def denoiser(self, pipe_or_model):
        """The denoiser of a pipeline, or the model itself when given one (compile wrappers kept)."""
        model = getattr(pipe_or_model, self.denoiser_attr, pipe_or_model)
        if self.module(model, missing_ok=True) is None:
            raise HsteerError(f"{type(pipe_or_model).__name__} has no {self.label} to steer; pass the site of its "
                              "bank (site=bank.site_of(pipe)) or one of its own "
                              "(`hsteer sites` lists them)")
        return model

    def module(self, denoiser, missing_ok: bool = False) -> torch.nn.Module | None:
        """The site's submodule inside `denoiser` (a compile wrapper is looked through)."""
        found = base_module(denoiser)
        for part in self.path.split(".") if self.path else ():
            found = _child(found, part)
            if found is None:
                if missing_ok:
                    return None
                raise HsteerError(f"{type(denoiser).__name__} has no {self.path} to steer")
        if not isinstance(found, torch.nn.Module):
            if missing_ok:
                return None
            raise HsteerError(f"{type(denoiser).__name__}.{self.path} is not a module")
        return found

    def is_pipeline(self, pipe_or_model) -> bool:
        """Whether `pipe_or_model` is a pipeline that holds this site's denoiser (else it is the denoiser
        itself)."""
        return getattr(pipe_or_model, self.denoiser_attr, None) is not None

    @property
    def parts(self) -> tuple[SteeringSite, ...]:
        """The single sites this site is made of: itself (a `SiteSet`: its members)."""
        return (self,)

    def split(self, delta: torch.Tensor) -> list[tuple[SteeringSite, torch.Tensor]]:
        """The delta of each part (a single site: the delta itself)."""
        return [(self, delta)]


@dataclass(frozen=True)
class SiteSet:
    """Several sites of one denoiser that a concept acts at together, one tensor per site.

    What flows through policies, generation and training is one flat vector per image, the sites' tensors
    flattened and concatenated in `sites` order (so that drawing, summing and scaling concepts, per-image
    rows and optimiser states stay one tensor each); the hook of each site module takes its own slice,
    reshaped to the site's shape (`split`). `shapes`: one shape per site at the size steered (None: not
    yet bound to a size; `hsteer.steering.siteshape.bind_site` binds it). Banks store one tensor per site.
    """

    sites: tuple[SteeringSite, ...]
    shapes: tuple[tuple[int, ...], ...] | None = None
    kind: ClassVar[str] = "set"
    output_index: ClassVar[None] = None

    def __post_init__(self) -> None:
        if len(self.sites) < 2 or len({s.spec for s in self.sites}) != len(self.sites):
            raise HsteerError("a set of sites needs two or more different sites")
        if len({s.denoiser_attr for s in self.sites}) != 1:
            raise HsteerError("a set of sites must lie in one denoiser")
        if self.shapes is not None and len(self.shapes) != len(self.sites):
            raise HsteerError(f"a set of {len(self.sites)} sites needs one shape per site, got {len(self.shapes)}")

    @property
    def spec(self) -> str:
        """The set's short name: its sites' specs joined by commas, as banks store it."""
        return ",".join(s.spec for s in self.sites)

    @property
    def label(self) -> str:
        """The sites' labels joined by `+`, for messages and captions."""
        return "+".join(s.label for s in self.sites)

    @property
    def denoiser_attr(self) -> str:
        """The pipeline attribute of the one denoiser all the sites lie in."""
        return self.sites[0].denoiser_attr

    @property
    def path(self) -> str:
        """The first site's module path (where the set is looked up first)."""
        return self.sites[0].path

    @property
    def ndim(self) -> int:
        """One image's delta is one flat vector (the sites' tensors concatenated)."""
        return 1

    @property
    def parts(self) -> tuple[SteeringSite, ...]:
        """The single sites the set is made of, in order."""
        return self.sites

    @property
    def size(self) -> int:
        """The length of one image's flat delta (the sum of the sites' sizes)."""
        return sum(math.prod(shape) for shape in self.bound_shapes())

    def bound_shapes(self) -> tuple[tuple[int, ...], ...]:
        """One shape per site at the bound image size; an unbound set is refused with how to bind it."""
        if self.shapes is None:
            raise HsteerError(f"the set of sites {self.spec} is not bound to an image size; bind it "
                              "(hsteer.steering.siteshape.bind_site) or take it from its bank (bank.site_of(pipe))")
        return self.shapes

    def with_shapes(self, shapes) -> SiteSet:
        """The same sites bound to `shapes` (one per site, as ints)."""
        return SiteSet(self.sites, tuple(tuple(int(n) for n in shape) for shape in shapes))

    def split(self, delta: torch.Tensor) -> list[tuple[SteeringSite, torch.Tensor]]:
        """Each site's slice of a flat delta `(..., size)`, shaped `(..., *site shape)` (views: a gradient
        reaches the flat tensor)."""
        shapes = self.bound_shapes()
        if delta.shape[-1] != self.size:
            raise ShapeMismatchError(f"a delta of length {delta.shape[-1]} does not fit the sites {self.spec}, "
                                     f"whose tensors hold {self.size} values")
        out, offset = [], 0
        for site, shape in zip(self.sites, shapes):
            n = math.prod(shape)
            out.append((site, delta.narrow(-1, offset, n).reshape(*delta.shape[:-1], *shape)))
            offset += n
        return out

    def join(self, tensors) -> torch.Tensor:
        """One flat delta from one tensor per site (in `sites` order): the inverse of `split`."""
        return torch.cat([t.reshape(*t.shape[:t.dim() - len(shape)], -1)
                          for t, shape in zip(tensors, self.bound_shapes())], dim=-1)

    def denoiser(self, pipe_or_model):
        """The denoiser holding every site of the set; a missing site is refused here, not at the first
        hook."""
        for site in self.sites[1:]:
            site.denoiser(pipe_or_model)  # every part exists
        return self.sites[0].denoiser(pipe_or_model)

    def module(self, denoiser, missing_ok: bool = False) -> torch.nn.Module | None:
        """The first site's module (each site has its own hook; `hsteer.steering.hook` arms them together)."""
        return self.sites[0].module(denoiser, missing_ok)

    def is_pipeline(self, pipe_or_model) -> bool:
        """Whether `pipe_or_model` is a pipeline that holds the sites' denoiser."""
        return self.sites[0].is_pipeline(pipe_or_model)


_ORDER = {"mid_block": 0, "transformer_blocks": 1, "single_transformer_blocks": 2, "text": 3}


def spec_order(spec: object, family: str | None = None) -> tuple[int, int]:
    """The place of a single site spec among a model's sites (the order `site_specs` lists them and a set
    keeps its sites in), refusing a spec that names no site of any family, or none of `family`'s (a stored
    family key; one hsteer does not know checks nothing here). Read from the spec alone, so a bank's stored
    sites are checked before any model loads."""
    text = spec if isinstance(spec, str) else ""
    match = _BLOCK.match(text)
    kind = match.group(1) if match else text
    if kind not in _ORDER or (match is None and kind not in ("mid_block", "text")) \
            or (match is not None and len(match.group(2)) > 6):
        raise HsteerError(f"{str(spec)[:80]!r} is not a steering site (mid_block, text, transformer_blocks.N or "
                          "single_transformer_blocks.N)")
    known = FAMILY_OF_KEY.get(family) if family is not None else None
    if known is not None and kind not in known.site_kinds:
        raise HsteerError(f"site {text!r} is not a site of a {known.label} model (its sites: "
                          f"{', '.join(known.site_kinds)})")
    return _ORDER[kind], int(match.group(2)) if match else 0


def check_site_set(specs: list[str], family: str | None = None) -> None:
    """The sites of a set as a bank stores them: each a site of the family, none twice, in the order a set
    keeps them (`site_for` sorts a set's sites so; a concept's flat tensor is its sites' in that order, so a
    set stored in another order would give each site another site's values)."""
    keys = [spec_order(spec, family) for spec in specs]
    if len(set(keys)) != len(keys):
        raise HsteerError(f"the set of sites {','.join(specs)[:80]!r} names a site twice")
    if keys != sorted(keys):
        ordered = ",".join(spec for _, spec in sorted(zip(keys, specs)))
        raise HsteerError(f"the set of sites {','.join(specs)[:80]!r} is not in the order hsteer keeps a set's "
                          f"sites ({ordered[:80]}), so its tensors would not line up with the sites")


def _child(module, part: str):
    if part.isdigit() and isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential)):
        return module[int(part)] if int(part) < len(module) else None
    return getattr(module, part, None)


#: The U-Net mid-block output: the default site of SD 1.x, 2.x and SDXL.
MID_BLOCK = SteeringSite()


def block_counts(pipe_or_model) -> dict[str, int]:
    """How many blocks of each steerable kind the denoiser has (`mid_block`: 1 on a U-Net)."""
    model = base_module(denoiser_of(pipe_or_model))
    family = family_for(model)
    if family.mid_block_site:
        return {"mid_block": 1 if getattr(model, "mid_block", None) is not None else 0}
    return {stack: len(getattr(model, stack)) for stack in family.block_stacks}


def default_site_spec(pipe_or_model) -> str:
    """The site a concept is learned at when no `site` is given: the U-Net mid-block; on a
    transformer the site its model card names (chosen by a site scan: `hsteer sites`), else the middle
    block of its (first) stack."""
    family = family_for(pipe_or_model)
    if family.mid_block_site:
        return "mid_block"
    from hsteer.model.card import model_card

    chosen = model_card(pipe_or_model).get("site")
    if isinstance(chosen, str) and chosen:
        return chosen
    first = family.block_stacks[0]
    return f"{first}.{block_counts(pipe_or_model)[first] // 2}"


def site_specs(pipe_or_model) -> list[str]:
    """Every site of the model, by spec: its blocks, then `text`."""
    specs = [name if name == "mid_block" else f"{name}.{n}"
             for name, count in block_counts(pipe_or_model).items() for n in range(count)]
    return [*specs, "text"]


def site_for(pipe_or_model, spec: str | None = None) -> SteeringSite | SiteSet:
    """The site named `spec` on this model (None: its default), or an error listing what the model has.
    Specs joined by commas name a set of sites (`SiteSet`, unbound), in the order `site_specs` lists them."""
    spec = default_site_spec(pipe_or_model) if spec is None else str(spec).strip()
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if len(names) > 1:
        if len(set(names)) != len(names):
            raise HsteerError(f"site {spec!r} names a site twice; name each site of a set once")
        order = {name: n for n, name in enumerate(site_specs(pipe_or_model))}
        parts = [_single_site(pipe_or_model, name) for name in names]
        return SiteSet(tuple(sorted(parts, key=lambda s: order.get(s.spec, len(order)))))
    return _single_site(pipe_or_model, names[0] if names else spec)


def _single_site(pipe_or_model, spec: str) -> SteeringSite:
    family = family_for(pipe_or_model)
    attr = family.denoiser_attr
    if spec == "text":
        return SteeringSite("", attr, "text")
    if family.mid_block_site:
        if spec != "mid_block":
            raise HsteerError(f"site {spec!r}: a U-Net is steered at 'mid_block' or 'text'")
        return MID_BLOCK
    match = _BLOCK.match(spec)
    counts = block_counts(pipe_or_model)
    if match is None or match.group(1) not in counts:
        valid = ", ".join(f"{name}.0..{count - 1}" for name, count in counts.items())
        raise HsteerError(f"site {spec!r} is not a site of this {family.label} model; use {valid} or text")
    index, count = int(match.group(2)), counts[match.group(1)]
    if index >= count:
        raise HsteerError(f"site {spec!r}: this model has {count} {match.group(1)} (0..{count - 1})")
    return SteeringSite(spec, attr, "tokens", family.token_index)
