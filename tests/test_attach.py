"""Attach once, then plain `pipe(...)` calls: per-image fair draws, swaps, windows, img2img/inpaint, detach."""

import numpy as np
import pytest
import torch
from bank_helpers import random_bank

from hsteer import ConceptPolicy, FairPolicy, PlainPolicy, attach, detach, generate
from hsteer.errors import HsteerError, ShapeMismatchError, UnknownConceptError
from hsteer.generation import attachment_of
from hsteer.steering.hook import has_hook, steering_hook
from hsteer.model import load_pipeline

STEPS, GUIDANCE = 4, 3.0


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _call(pipe, prompt="a doctor", seeds=(10, 11, 12, 13), **kwargs):
    kwargs.setdefault("num_images_per_prompt", len(seeds) if isinstance(prompt, str) else 1)
    return pipe(prompt, num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=_gens(seeds), **kwargs).images


def _max_diff(a, b):
    return max(int(np.abs(np.asarray(x, dtype=np.int16) - np.asarray(y, dtype=np.int16)).max()) for x, y in zip(a, b))


@pytest.mark.parametrize("fixture", ["sd_dir", "sd2_dir", "sdxl_dir"])
def test_plain_calls_after_attach_match_generate_and_detach_is_bit_identical(fixture, request):
    pipe = load_pipeline(request.getfixturevalue(fixture))
    bank, policy = random_bank(pipe), FairPolicy(("gender",))
    cls = type(pipe)
    plain = _call(pipe)
    attach(pipe, bank, policy)
    assert type(pipe).__name__ == cls.__name__ and isinstance(pipe, cls)
    steered = _call(pipe)
    ref = generate(pipe, "a doctor", num_images_per_prompt=4, seed=10, bank=bank, policy=policy, steps=STEPS,
                   guidance=GUIDANCE, progress=False)  # generate() on an attached pipeline suspends the attachment
    draws = [[c["name"] for c in concepts] for concepts in attachment_of(pipe).last]
    assert draws == [[c["name"] for c in r.concepts] for r in ref.records]
    assert {d[0] for d in draws} == {"woman", "man"}  # one batch mixes concepts, image by image
    assert attachment_of(pipe).last_seeds == [10, 11, 12, 13]
    assert _max_diff(steered, ref.images) <= 1
    assert _max_diff(steered, plain) > 10
    detach(pipe)
    assert type(pipe) is cls and not has_hook(pipe.unet) and attachment_of(pipe) is None
    again = _call(pipe)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(again, plain))


def test_generate_on_a_detached_pipeline_equals_attached_calls_with_two_prompts(sd_pipe):
    bank, policy = random_bank(sd_pipe), FairPolicy(("gender",))
    ref = generate(sd_pipe, ["a doctor", "a nurse"], num_images_per_prompt=2, seed=4, bank=bank, policy=policy,
                   steps=STEPS, guidance=GUIDANCE, progress=False)
    attach(sd_pipe, bank, policy)
    # diffusers' layout is prompt-major: [doctor 0, doctor 1, nurse 0, nurse 1]; one generator per image
    out = sd_pipe(["a doctor", "a nurse"], num_images_per_prompt=2, num_inference_steps=STEPS,
                  guidance_scale=GUIDANCE, generator=_gens([4, 5, 4, 5])).images
    assert _max_diff(out, ref.images) <= 1
    assert attachment_of(sd_pipe).last == [r.concepts for r in ref.records]


def test_attach_again_swaps_in_place_and_scales(sd_pipe):
    bank = random_bank(sd_pipe)
    attach(sd_pipe, bank, ConceptPolicy((("woman", 1.0),)))
    hook = steering_hook(sd_pipe.unet, create=False)
    woman = _call(sd_pipe, seeds=(0,))
    attach(sd_pipe, bank, ConceptPolicy((("man", 1.0),)), scale=0.5)
    assert steering_hook(sd_pipe.unet, create=False) is hook is not None
    assert list(sd_pipe.unet.mid_block._diffusers_hook.hooks) == ["hsteer"]  # one hook, in diffusers' registry
    man_half = _call(sd_pipe, seeds=(0,))
    ref = generate(sd_pipe, "a doctor", seed=0, bank=bank,
                   policy=ConceptPolicy((("man", 0.5),)), steps=STEPS, guidance=GUIDANCE, progress=False)
    assert _max_diff(man_half, ref.images) <= 1 and _max_diff(man_half, woman) > 5
    attach(sd_pipe, bank, PlainPolicy())
    plain_attached = _call(sd_pipe, seeds=(0,))
    detach(sd_pipe)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain_attached, _call(sd_pipe, seeds=(0,))))


def test_seeds_with_one_generator_or_none(sd_pipe):
    bank = random_bank(sd_pipe)
    attach(sd_pipe, bank, FairPolicy(("gender",)))
    sd_pipe(["a doctor", "a nurse"], num_images_per_prompt=3, num_inference_steps=1, guidance_scale=GUIDANCE,
            generator=torch.Generator().manual_seed(7), output_type="latent")
    assert attachment_of(sd_pipe).last_seeds == [7, 8, 9, 7, 8, 9]  # image i of each prompt: seed + i
    for expected in ([0, 1, 2], [3, 4, 5]):  # no generator: images numbered across calls, blocks stay balanced
        sd_pipe("a doctor", num_images_per_prompt=3, num_inference_steps=1, output_type="latent")
        assert attachment_of(sd_pipe).last_seeds == expected
    with pytest.raises(HsteerError, match="generators for"):
        sd_pipe("a doctor", num_images_per_prompt=3, num_inference_steps=1, generator=_gens([1, 2]))


def test_step_window_matches_generate_and_an_empty_window_is_plain(sd_pipe):
    bank = random_bank(sd_pipe)
    policy = ConceptPolicy((("woman", 6.0),))  # strong, so that every window shows
    plain = _call(sd_pipe, seeds=(0, 1))
    full = generate(sd_pipe, "a doctor", num_images_per_prompt=2, bank=bank, policy=policy, steps=STEPS,
                    guidance=GUIDANCE, progress=False).images
    early = generate(sd_pipe, "a doctor", num_images_per_prompt=2, bank=bank, policy=policy, steps=STEPS,
                     guidance=GUIDANCE, progress=False, window=(0.0, 0.5)).images
    late = generate(sd_pipe, "a doctor", num_images_per_prompt=2, bank=bank, policy=policy, steps=STEPS,
                    guidance=GUIDANCE, progress=False, window=(0.5, 1.0)).images
    assert _max_diff(early, full) > 3 and _max_diff(early, plain) > 3 and _max_diff(late, early) > 3
    seen = []
    attach(sd_pipe, bank, policy, window=(0.0, 0.5))
    attached_early = _call(sd_pipe, seeds=(0, 1), callback_on_step_end=lambda p, i, t, kw: seen.append(i) or {})
    assert seen == list(range(STEPS))  # the user's callback still runs, chained after hsteer's
    attach(sd_pipe, bank, policy, window=(0.5, 1.0))
    attached_late = _call(sd_pipe, seeds=(0, 1))
    assert _max_diff(attached_early, early) <= 1 and _max_diff(attached_late, late) <= 1
    attach(sd_pipe, bank, policy, window=(0.9, 1.0))  # steps 0..3 of 4 are at 0, .25, .5, .75: none steered
    with pytest.raises(HsteerError, match="covers none of the 4 denoising steps"):
        _call(sd_pipe, seeds=(0, 1))  # a silent no-op would say the concept was applied
    detach(sd_pipe)
    assert _max_diff(_call(sd_pipe, seeds=(0, 1)), plain) == 0
    with pytest.raises(HsteerError, match=r"window \(0.6, 0.2\) is not a step window"):
        attach(sd_pipe, bank, policy, window=(0.6, 0.2))


def _init_image(size=32):
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize("fixture, kind", [("sd_dir", "img2img"), ("sdxl_dir", "img2img"), ("sd_dir", "inpaint")])
def test_img2img_and_inpaint_pipelines_attach_like_text_to_image(fixture, kind, request):
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    base = load_pipeline(request.getfixturevalue(fixture))
    pipe = (AutoPipelineForImage2Image if kind == "img2img" else AutoPipelineForInpainting).from_pipe(base)
    pipe.set_progress_bar_config(disable=True)
    bank, policy = random_bank(pipe), FairPolicy(("gender",))
    inputs = {"image": _init_image(), "strength": 0.75}
    if kind == "inpaint":
        from PIL import Image

        inputs["mask_image"] = Image.new("L", (32, 32), 255)
    plain = _call(pipe, **inputs)
    ref = generate(pipe, "a doctor", num_images_per_prompt=4, seed=10, bank=bank, policy=policy, steps=STEPS,
                   guidance=GUIDANCE, progress=False, image=inputs["image"], strength=0.75,
                   mask_image=inputs.get("mask_image"))
    attach(pipe, bank, policy)
    # generate() passes one init image (and mask) per image; diffusers draws the VAE sample of each init
    # image from that image's generator, so pass them the same way to get the same images
    per_image = {k: [v] * 4 if k != "strength" else v for k, v in inputs.items()}
    steered = _call(pipe, **per_image)
    assert _max_diff(steered, ref.images) <= 1
    assert _max_diff(steered, plain) > 5
    assert {r.concepts[0]["name"] for r in ref.records} == {"woman", "man"}
    # the text-to-image pipeline shares the U-Net but is not attached: plain
    assert _max_diff(_call(base, seeds=(0,)), _call(load_pipeline(request.getfixturevalue(fixture)), seeds=(0,))) == 0
    detach(pipe)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(_call(pipe, **inputs), plain))


def test_fair_img2img_on_the_bundled_model():
    from diffusers import StableDiffusionImg2ImgPipeline

    from hsteer.model import sampling_defaults

    base = load_pipeline(None)
    pipe = StableDiffusionImg2ImgPipeline.from_pipe(base)
    pipe.set_progress_bar_config(disable=True)
    bank = random_bank(pipe, names=("circle", "square"), group="shape")
    guidance = sampling_defaults(None)["guidance"]
    kwargs = dict(num_images_per_prompt=4, seed=0, bank=bank, steps=8, guidance=guidance, progress=False,
                  image=_init_image(), strength=0.6)
    plain = generate(pipe, "a photo of a doctor", policy=PlainPolicy(), **kwargs)
    fair = generate(pipe, "a photo of a doctor", policy=FairPolicy(("shape",)), **kwargs)
    assert [r.concepts[0]["name"] for r in fair.records].count("circle") == 2  # balanced per block of 2 seeds
    assert all(r.extra["strength"] == 0.6 for r in fair.records) and fair.records[0].height == 32
    assert _max_diff(fair.images, plain.images) > 5


def test_attach_checks_bank_and_policy_up_front(sd_pipe, sdxl_pipe):
    with pytest.raises(ShapeMismatchError):
        attach(sdxl_pipe, random_bank(sd_pipe), FairPolicy(("gender",)))
    with pytest.raises(UnknownConceptError, match="unknown group"):
        attach(sd_pipe, random_bank(sd_pipe), FairPolicy(("race",)))
    assert attachment_of(sd_pipe) is None
