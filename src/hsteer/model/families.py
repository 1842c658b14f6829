"""Denoiser families as objects: what each kind of denoiser predicts, how it is called and encoded.

One `Family` object per denoiser class (diffusers looks behaviour up by the module's class, and so does
hsteer): `family_for(pipe)` finds it once, and every caller asks it instead of comparing family names.

- U-Net (SD 1.x/2.x, SDXL; `UNet2DConditionModel`): epsilon or v prediction on a DDIM schedule, the
  mid-block as its one block site, guidance as one `[uncond, cond]` batch; SDXL adds pooled text embeds
  and time ids to every call.
- SD3 (`SD3Transformer2DModel`), FLUX (`FluxTransformer2DModel`), SANA (`SanaTransformer2DModel`):
  rectified flow, stepped by Euler on the pipeline's own sigmas (`schedules.FlowSchedule`; FLUX's
  are linear, with its resolution-dependent shift). FLUX packs its latents 2 x 2 into tokens `(N, 4C)`,
  takes its distilled guidance as an input and has no `[uncond, cond]` batch (one pass per step).
  SD3 and FLUX blocks return `(text tokens, image tokens)`; SANA's blocks hold image tokens only.

The `key` is what a bank stores as its `family` (`unet`, `sd3`, `flux`, `sana`); the bundled world
models are a U-Net and an SD3 transformer, so they are those families, not their own.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from hsteer.errors import HsteerError
from hsteer.model.conditions import TextCondition
from hsteer.model.geometry import is_sdxl, resolve_resolution
from hsteer.model.schedules import DDIMSchedule, FlowSchedule

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


class Family:
    """What one denoiser class decides (the base holds the transformer defaults; each family overrides).

    `label`: the family as messages name it; `denoiser_attr`: the pipeline attribute holding the denoiser;
    `packed_latents`: latents packed 2 x 2 into tokens (FLUX); `linear_sigmas`: the pipeline spaces its flow
    sigmas linearly (FLUX); `batches_guidance`: classifier-free guidance runs as one `[uncond, cond]` batch;
    `mid_block_site`: the one block site is the U-Net's mid-block (its output a `(C, h, w)` map, not
    tokens); `block_stacks`: else, the block lists its block sites index; `token_index`: which element of a
    block's tuple output holds the image tokens (None: the output is the tokens); `text_position`: where a
    positional call of the denoiser passes `encoder_hidden_states`, which the text site steers (the
    U-Net's `(sample, timestep, encoder_hidden_states)`; None: the pipelines call it by keyword only);
    `guard_step`: the guard's default decision step; `wraps_prompt`: the pipeline wraps each prompt in an
    instruction of its own before its text encoder reads it (SANA's chat template, of which only the last
    tokens are kept), so a prompt's tokens do not sit where the prompt's own tokenization puts them;
    `recipe_family`: the family whose bundled model's measured training recipe this one uses
    (`hsteer.apps.recipes`; FLUX and SANA have no bundled model, so they take the measured transformer's).
    """

    key: ClassVar[str]
    label: ClassVar[str]
    denoiser_class: ClassVar[str]
    denoiser_attr: ClassVar[str] = "transformer"
    packed_latents: ClassVar[bool] = False
    linear_sigmas: ClassVar[bool] = False
    batches_guidance: ClassVar[bool] = True
    mid_block_site: ClassVar[bool] = False
    block_stacks: ClassVar[tuple[str, ...]] = ("transformer_blocks",)
    token_index: ClassVar[int | None] = 1
    text_position: ClassVar[int | None] = None
    #: The image-aware guard's default decision step (of 20): where x0-hat shows the harm before it has
    #: settled. A transformer settles earlier (the bundled DiT's harm mark by step 4), so it decides at 2.
    guard_step: ClassVar[int] = 2
    wraps_prompt: ClassVar[bool] = False
    recipe_family: ClassVar[str] = "sd3"

    def __repr__(self) -> str:
        return f"<family {self.key}: {self.label}>"

    @property
    def site_kinds(self) -> tuple[str, ...]:
        """The kinds of site the family has, as a site's spec names them: its block sites (`mid_block`, or
        each block stack), then `text`; a bank's stored sites are checked against them before a model loads."""
        return (*(("mid_block",) if self.mid_block_site else self.block_stacks), "text")

    def latent_grid(self, height: int, width: int, vae_scale_factor: int) -> tuple[int, int]:
        """(h, w) of the latents of a `height` x `width` image (before any packing)."""
        return height // vae_scale_factor, width // vae_scale_factor

    def latent_shape(self, in_channels: int, grid: tuple[int, int]) -> tuple[int, ...]:
        """One sample's latent as training holds it, from the latent grid `(h, w)`."""
        return in_channels, grid[0], grid[1]

    def token_patch(self, config) -> int:
        """The side of the latent patch one image token covers."""
        return int(getattr(config, "patch_size", 1) or 1)

    def schedule(self, denoiser, steps: int):
        """The reverse process training runs on this family (`denoiser`: a `denoisers.Denoiser`)."""
        return FlowSchedule(denoiser.scheduler, steps, denoiser.image_tokens(), denoiser.device,
                            linear_sigmas=self.linear_sigmas)

    def sampling_cfg(self, guidance: float) -> float:
        """The classifier-free guidance of the reverse process: `guidance`, or 1 without a guidance batch."""
        return float(guidance) if self.batches_guidance else 1.0

    def predict(self, denoiser, x: torch.Tensor, t: torch.Tensor, cond: TextCondition) -> torch.Tensor:
        """The raw prediction of `denoiser.module` for latents `x` at per-sample timesteps `t`."""
        raise NotImplementedError

    def encode_text(self, pipe: Pipeline, prompts: list[str], device, height: int | None,
                    width: int | None) -> TextCondition:
        """Prompts encoded exactly as the pipeline encodes its conditional branch."""
        raise NotImplementedError

    def encode_unconditional(self, pipe: Pipeline, device, height: int | None,
                             width: int | None) -> TextCondition:
        """The pipeline's own unconditional branch (by default: the empty prompt, encoded as a prompt)."""
        return self.encode_text(pipe, [""], device, height, width)

    def call_defaults(self, pipe: Pipeline) -> dict[str, object]:
        """Pipeline-call arguments hsteer always passes to this family's pipelines."""
        return {}


class UNetFamily(Family):
    key, label, denoiser_class = "unet", "U-Net (SD 1.x/2.x, SDXL)", "UNet2DConditionModel"
    denoiser_attr = "unet"
    mid_block_site = True
    block_stacks = ()
    token_index = None
    text_position = 2
    guard_step = 4
    recipe_family = "unet"

    def schedule(self, denoiser, steps: int):
        """The DDIM schedule of `steps` steps on the denoiser's scheduler."""
        return DDIMSchedule(denoiser.scheduler, steps, denoiser.device)

    def predict(self, denoiser, x, t, cond):
        """The U-Net's noise prediction for latents `x` at timesteps `t` under `cond`."""
        return denoiser.module(x, t, encoder_hidden_states=cond.embeds, added_cond_kwargs=cond.added,
                               return_dict=False)[0]

    def encode_text(self, pipe: Pipeline, prompts, device, height, width):
        """The prompts' text condition through the pipeline's own encoder (SDXL: with its pooled embeds
        and time ids for `height` x `width`)."""
        if is_sdxl(pipe):
            embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, device=device, num_images_per_prompt=1,
                                                      do_classifier_free_guidance=False)
            return TextCondition(embeds, {"text_embeds": pooled,
                                          "time_ids": _time_ids(pipe, len(prompts), height, width)})
        embeds, _ = pipe.encode_prompt(prompts, device, 1, False)
        return TextCondition(embeds)

    def encode_unconditional(self, pipe: Pipeline, device, height, width):
        """The empty prompt; zeros where SDXL's config says so."""
        if is_sdxl(pipe):
            _, neg, _, neg_pooled = pipe.encode_prompt(prompt=[""], device=device, num_images_per_prompt=1,
                                                       do_classifier_free_guidance=True)
            return TextCondition(neg, {"text_embeds": neg_pooled, "time_ids": _time_ids(pipe, 1, height, width)})
        _, neg = pipe.encode_prompt([""], device, 1, True)
        return TextCondition(neg)


class SD3Family(Family):
    key, label, denoiser_class = "sd3", "SD3 (MMDiT)", "SD3Transformer2DModel"

    def predict(self, denoiser, x, t, cond):
        """The SD3 transformer's velocity prediction for `x` at `t` under `cond` (with its pooled
        projection)."""
        return denoiser.module(hidden_states=x, timestep=t.to(x.dtype), encoder_hidden_states=cond.embeds,
                               pooled_projections=(cond.added or {})["pooled"], return_dict=False)[0]

    def encode_text(self, pipe: Pipeline, prompts, device, height, width):
        """The prompts' text condition through SD3's `encode_prompt`, with the model card's
        `max_sequence_length`."""
        from hsteer.model.card import max_sequence_length

        embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None, device=device,
                                                  num_images_per_prompt=1, do_classifier_free_guidance=False,
                                                  **max_sequence_length(pipe))
        return TextCondition(embeds, {"pooled": pooled})

    def call_defaults(self, pipe: Pipeline):
        """The T5 length the model card fixes (the bundled DiT world model's)."""
        from hsteer.model.card import max_sequence_length

        return max_sequence_length(pipe)


class FluxFamily(Family):
    key, label, denoiser_class = "flux", "FLUX", "FluxTransformer2DModel"
    packed_latents = linear_sigmas = True
    batches_guidance = False
    block_stacks = ("transformer_blocks", "single_transformer_blocks")

    def latent_grid(self, height, width, vae_scale_factor):
        """A multiple of 2, as FluxPipeline makes them."""
        return 2 * (height // (vae_scale_factor * 2)), 2 * (width // (vae_scale_factor * 2))

    def latent_shape(self, in_channels, grid):
        """Packed tokens `(N, 4C)` (`in_channels` is already the packed width)."""
        return (grid[0] // 2) * (grid[1] // 2), in_channels

    def token_patch(self, config):
        """Flux packs 2 x 2 latent patches into one token."""
        return 2

    def predict(self, denoiser, x, t, cond):
        """The Flux transformer's prediction for `x` at `t` under `cond`; the token position ids are built
        once per latent size and kept, and the guidance is embedded where the model has guidance embeds."""
        ids = denoiser.inputs.get("flux_ids")
        if ids is None:
            from diffusers import FluxPipeline

            h, w = denoiser.latent_grid()
            img = FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, x.device, x.dtype)
            txt = torch.zeros(cond.embeds.shape[1], 3, device=x.device, dtype=x.dtype)
            ids = denoiser.inputs["flux_ids"] = (txt, img)
        txt, img = ids
        guidance = None
        if getattr(denoiser.config, "guidance_embeds", False):
            guidance = torch.full((x.shape[0],), denoiser.guidance, device=x.device, dtype=torch.float32)
        return denoiser.module(hidden_states=x, timestep=t.to(x.dtype) / 1000, guidance=guidance,
                               pooled_projections=cond.added["pooled"], encoder_hidden_states=cond.embeds,
                               txt_ids=txt, img_ids=img, return_dict=False)[0]

    def encode_text(self, pipe: Pipeline, prompts, device, height, width):
        """The prompts' text condition through Flux's `encode_prompt` (with its pooled embeds)."""
        embeds, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, device=device, num_images_per_prompt=1)
        return TextCondition(embeds, {"pooled": pooled})


class SanaFamily(Family):
    key, label, denoiser_class = "sana", "SANA", "SanaTransformer2DModel"
    token_index = None
    wraps_prompt = True

    def predict(self, denoiser, x, t, cond):
        """The Sana transformer's prediction for `x` at `t` under `cond` (its attention mask, timestep
        scale); of a learned-sigma head, the prediction half."""
        added = cond.added or {}
        out = denoiser.module(x, encoder_hidden_states=cond.embeds, encoder_attention_mask=added.get("mask"),
                              timestep=t.to(x.dtype) * float(denoiser.config.timestep_scale), return_dict=False)[0]
        if out.shape[1] == 2 * x.shape[1]:  # a learned-sigma head: the first half is the prediction
            out = out.chunk(2, dim=1)[0]
        return out

    def encode_text(self, pipe: Pipeline, prompts, device, height, width):
        """With the chat instruction SANA's `__call__` adds by default."""
        instruction = inspect.signature(type(pipe).__call__).parameters["complex_human_instruction"].default
        embeds, mask, _, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device=device,
                                                complex_human_instruction=instruction)
        return TextCondition(embeds, {"mask": mask})

    def encode_unconditional(self, pipe: Pipeline, device, height, width):
        """SANA's negative branch: no chat instruction, the plain length."""
        _, _, neg, neg_mask = pipe.encode_prompt([""], do_classifier_free_guidance=True, negative_prompt="",
                                                 device=device, complex_human_instruction=None)
        return TextCondition(neg, {"mask": neg_mask})

    def call_defaults(self, pipe: Pipeline):
        """Images at exactly the size asked (no resolution binning), so the token count is the one its
        concepts were learned at."""
        if "use_resolution_binning" in inspect.signature(type(pipe).__call__).parameters:
            return {"use_resolution_binning": False}
        return {}


#: denoiser class name -> its family: the one place a family is looked up.
FAMILY_OF_CLASS: Mapping[str, Family] = MappingProxyType(
    {family.denoiser_class: family for family in (UNetFamily(), SD3Family(), FluxFamily(), SanaFamily())})
#: a bank's stored `family` key -> the family.
FAMILY_OF_KEY: Mapping[str, Family] = MappingProxyType({f.key: f for f in FAMILY_OF_CLASS.values()})
#: The family of a bank that stores none: banks were U-Net mid-block banks before they stored their family.
DEFAULT_FAMILY_KEY = UNetFamily.key


def family_label(key: Any) -> Any:
    """A stored family key as messages name the family (`sd3`: "SD3 (MMDiT)"); a key hsteer does not know
    as it is, so a bank's own header shows through in the message that refuses it."""
    found = FAMILY_OF_KEY.get(key)
    return found.label if found is not None else key


def family_for(pipe_or_model: Any) -> Family:
    """The family of a pipeline's denoiser (`unet` or `transformer`), or of a bare denoiser (a
    `torch.compile` wrapper is looked through)."""
    model = pipe_or_model
    for attr in ("unet", "transformer"):
        found = getattr(pipe_or_model, attr, None)
        if isinstance(found, torch.nn.Module):
            model = found
            break
    name = type(getattr(model, "_orig_mod", model)).__name__
    family = FAMILY_OF_CLASS.get(name)
    if family is None:
        raise HsteerError(f"{name} is not a denoiser hsteer can steer; use an SD 1.x/2.x, SDXL, SD3, FLUX or SANA "
                          "pipeline")
    return family


def _time_ids(pipe, n: int, height: int | None, width: int | None) -> torch.Tensor:
    h, w = resolve_resolution(pipe, height, width)
    ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=pipe.unet.dtype, device=pipe.unet.device)
    return ids.expand(n, 6)
