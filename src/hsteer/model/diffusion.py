"""The pieces of the reverse process that training needs: text conditions, denoiser calls, DDIM steps.

Written against the denoiser directly (not the pipeline's `__call__`) so that each sample of a batch
can stop at its own step, and so the denoiser is evaluated at the timestep its input actually has.
The functions that take `unet` take a bare U-Net or an `hsteer.model.denoisers.Denoiser` (any family);
the flow models' schedule is `denoisers.FlowSchedule`, with the same `timesteps`, `prediction` and `step`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hsteer.model.geometry import is_sdxl, resolve_resolution
from hsteer.model.sites import denoiser_of, family_of


@dataclass
class TextCondition:
    """Encoded prompts, one row per sample; `added` holds SDXL's pooled text embeds and time ids, SD3's and
    FLUX's pooled embeds (`pooled`), SANA's attention mask (`mask`)."""

    embeds: torch.Tensor
    added: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def expand(self, n: int) -> TextCondition:
        """Repeat a single-row condition to `n` rows (no copy)."""
        if len(self) != 1:
            raise ValueError("only a one-row condition can be expanded")
        added = {k: v.expand(n, *v.shape[1:]) for k, v in self.added.items()} if self.added else None
        return TextCondition(self.embeds.expand(n, *self.embeds.shape[1:]), added)

    def select(self, index: torch.Tensor) -> TextCondition:
        added = {k: v[index] for k, v in self.added.items()} if self.added else None
        return TextCondition(self.embeds[index], added)

    @staticmethod
    def cat(conds: list[TextCondition]) -> TextCondition:
        added = None
        if conds[0].added:
            added = {k: torch.cat([c.added[k] for c in conds]) for k in conds[0].added}
        return TextCondition(torch.cat([c.embeds for c in conds]), added)


@torch.no_grad()
def encode_text(pipe, prompts: list[str], height: int | None = None, width: int | None = None) -> TextCondition:
    """Encode prompts exactly as the pipeline does for its conditional branch."""
    device = denoiser_of(pipe).device
    if family_of(pipe) != "unet":
        return _encode_transformer_text(pipe, prompts, device)
    if is_sdxl(pipe):
        embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, device=device, num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
        return TextCondition(embeds, {"text_embeds": pooled, "time_ids": _time_ids(pipe, len(prompts), height, width)})
    embeds, _ = pipe.encode_prompt(prompts, device, 1, False)
    return TextCondition(embeds)


@torch.no_grad()
def encode_unconditional(pipe, height: int | None = None, width: int | None = None) -> TextCondition:
    """The pipeline's own unconditional branch (the empty prompt; zeros where SDXL's config says so)."""
    device = denoiser_of(pipe).device
    family = family_of(pipe)
    if family == "sana":  # SANA's negative branch: no chat instruction, the plain length
        _, _, neg, neg_mask = pipe.encode_prompt([""], do_classifier_free_guidance=True, negative_prompt="",
                                                 device=device, complex_human_instruction=None)
        return TextCondition(neg, {"mask": neg_mask})
    if family != "unet":  # SD3 and FLUX encode the empty negative prompt as they encode a prompt
        return _encode_transformer_text(pipe, [""], device)
    if is_sdxl(pipe):
        _, neg, _, neg_pooled = pipe.encode_prompt(prompt=[""], device=device, num_images_per_prompt=1,
                                                   do_classifier_free_guidance=True)
        return TextCondition(neg, {"text_embeds": neg_pooled, "time_ids": _time_ids(pipe, 1, height, width)})
    _, neg = pipe.encode_prompt([""], device, 1, True)
    return TextCondition(neg)


def _encode_transformer_text(pipe, prompts: list[str], device) -> TextCondition:
    """SD3, FLUX and SANA prompts as their pipelines' conditional branch encodes them (SANA: with the chat
    instruction its `__call__` adds by default)."""
    family = family_of(pipe)
    if family == "sd3":
        from hsteer.model.card import max_sequence_length

        embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None, device=device,
                                                  num_images_per_prompt=1, do_classifier_free_guidance=False,
                                                  **max_sequence_length(pipe))
        return TextCondition(embeds, {"pooled": pooled})
    if family == "flux":
        embeds, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, device=device, num_images_per_prompt=1)
        return TextCondition(embeds, {"pooled": pooled})
    import inspect

    instruction = inspect.signature(type(pipe).__call__).parameters["complex_human_instruction"].default
    embeds, mask, _, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device=device,
                                            complex_human_instruction=instruction)
    return TextCondition(embeds, {"mask": mask})


def _time_ids(pipe, n: int, height: int | None, width: int | None) -> torch.Tensor:
    h, w = resolve_resolution(pipe, height, width)
    ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=pipe.unet.dtype, device=pipe.unet.device)
    return ids.expand(n, 6)


def unet_output(unet, x: torch.Tensor, t: torch.Tensor, cond: TextCondition) -> torch.Tensor:
    """The raw prediction of a U-Net (or of a `Denoiser`, any family) for latents `x` at timesteps `t`."""
    predict = getattr(unet, "predict", None)
    if predict is not None and not isinstance(unet, torch.nn.Module):
        return predict(x, t, cond)
    return unet(x, t, encoder_hidden_states=cond.embeds, added_cond_kwargs=cond.added, return_dict=False)[0]


class DDIMSchedule:
    """A deterministic DDIM (eta = 0) schedule of `steps` steps over the model's training noise table.

    `timesteps[k]` is the timestep of the latent reached after k reverse steps from pure noise.
    """

    def __init__(self, scheduler, steps: int, device: torch.device | str = "cpu") -> None:
        from diffusers import DDIMScheduler

        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        ddim = DDIMScheduler.from_config(scheduler.config)
        ddim.set_timesteps(steps)
        self.steps = steps
        self.prediction_type = ddim.config.prediction_type
        self.timesteps = ddim.timesteps.to(device)
        self.alphas_cumprod = ddim.alphas_cumprod.to(device, torch.float32)
        self.final_alpha = float(ddim.final_alpha_cumprod)
        self.init_noise_sigma = float(ddim.init_noise_sigma)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod[t.long()].view(-1, 1, 1, 1)

    def alpha_after(self, k: torch.Tensor) -> torch.Tensor:
        """Cumulative alpha of the latent after step index k (the final alpha after the last step)."""
        nxt = k + 1
        inside = nxt < self.steps
        t_next = self.timesteps[nxt.clamp(max=self.steps - 1)]
        alpha = torch.where(inside, self.alphas_cumprod[t_next.long()], torch.full_like(t_next, self.final_alpha,
                                                                                           dtype=torch.float32))
        return alpha.view(-1, 1, 1, 1)

    def to_epsilon(self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Convert a prediction of any type (epsilon, v, sample) to the noise it implies."""
        if self.prediction_type == "epsilon":
            return output
        a = self.alpha(t).to(output.dtype)
        if self.prediction_type == "v_prediction":
            return a.sqrt() * output + (1 - a).sqrt() * x
        if self.prediction_type == "sample":
            return (x - a.sqrt() * output) / (1 - a).sqrt()
        raise ValueError(f"unsupported prediction type {self.prediction_type!r}")

    def prediction(self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the objectives compare on a U-Net: the noise (`to_epsilon`)."""
        return self.to_epsilon(output, x, t)

    def step(self, eps: torch.Tensor, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """One DDIM step from the latent at step index k (per sample) to step index k + 1."""
        a_t = self.alpha(self.timesteps[k]).to(x.dtype)
        a_next = self.alpha_after(k).to(x.dtype)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


def guided_epsilon(unet, schedule: DDIMSchedule, x: torch.Tensor, t: torch.Tensor, cond: TextCondition,
                   uncond: TextCondition, guidance: float) -> torch.Tensor:
    """Classifier-free guided noise, computed as the pipelines do: one batch [uncond, cond]."""
    if guidance == 1.0:
        return schedule.prediction(unet_output(unet, x, t, cond), x, t)
    n = x.shape[0]
    out = unet_output(unet, torch.cat([x, x]), torch.cat([t, t]), TextCondition.cat([uncond, cond]))
    eps = schedule.prediction(out, torch.cat([x, x]), torch.cat([t, t]))
    return guidance_combination(eps[:n], eps[n:], guidance)


def guidance_combination(eps_base: torch.Tensor, eps_pos: torch.Tensor, s: float) -> torch.Tensor:
    """eps_base + s * (eps_pos - eps_base): classifier-free guidance (base: the empty prompt), and
    negative prompting (base: the negative prompt). The one place this combination is written."""
    return eps_base + s * (eps_pos - eps_base)


@torch.no_grad()
def reverse_to_steps(unet, schedule: DDIMSchedule, x: torch.Tensor, k: torch.Tensor, cond: TextCondition,
                     uncond: TextCondition, guidance: float, start: int = 0) -> torch.Tensor:
    """Run DDIM from the latents `x` at step `start` (noise when 0) until sample i has taken `k[i]` steps.

    Samples that have arrived stop; the others go on in one batch. `cond`/`uncond` have one row per sample.
    """
    x = x.clone()
    for j in range(start, int(k.max().item()) if len(k) else 0):
        active = (k > j).nonzero(as_tuple=True)[0]
        xa = x[active]
        steps = torch.full((len(active),), j, device=x.device, dtype=torch.long)
        t = schedule.timesteps[steps]
        eps = guided_epsilon(unet, schedule, xa, t, cond.select(active), uncond.select(active), guidance)
        x[active] = schedule.step(eps, xa, steps)
    return x
