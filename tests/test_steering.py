"""Steering on stock SD 1.x, SD 2.x-style and SDXL pipelines: exactness, per-image concepts, CFG halves."""

import numpy as np
import pytest
import torch
from bank_helpers import random_bank

from hsteer import ConceptPolicy, FairPolicy, SteeringConfig, generate, steer
from hsteer.steering import apply_steering
from hsteer.errors import ShapeMismatchError
from hsteer.model import load_pipeline, pipeline_hspace_shape
from hsteer.steering.hook import HOOK_NAME, has_hook
from hsteer.steering.scoped import active_hooks


def _images(pipe, prompts=("a photo of a person", "a man"), seeds=(0, 1), steps=3, guidance=3.0):
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    out = pipe(list(prompts), num_inference_steps=steps, guidance_scale=guidance, generator=gens, output_type="np")
    return out.images


@pytest.fixture(params=["sd_dir", "sd2_dir", "sdxl_dir"])
def any_pipe(request):
    return load_pipeline(request.getfixturevalue(request.param))


def test_zero_concept_is_bit_identical_and_detach_restores(any_pipe):
    pipe = any_pipe
    shape = pipeline_hspace_shape(pipe)
    plain = _images(pipe)
    with steer(pipe, SteeringConfig(torch.zeros(shape))):
        assert pipe.unet.mid_block._diffusers_hook.get_hook(HOOK_NAME) is not None  # diffusers' own registry
        zero = _images(pipe)
    assert not has_hook(pipe.unet)
    assert np.array_equal(plain, zero)
    with steer(pipe, SteeringConfig(torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 5)):
        steered = _images(pipe)
    assert np.abs(steered - plain).max() > 1e-3
    assert not active_hooks(pipe)
    assert np.array_equal(_images(pipe), plain)


def test_hook_is_replaced_by_name_and_removed_on_error(sd_pipe):
    shape = pipeline_hspace_shape(sd_pipe)
    apply_steering(sd_pipe, SteeringConfig(torch.ones(shape)))
    apply_steering(sd_pipe, SteeringConfig(torch.ones(shape)))
    assert list(active_hooks(sd_pipe)) == ["hsteer"] and has_hook(sd_pipe.unet)
    with pytest.raises(RuntimeError):
        with steer(sd_pipe, SteeringConfig(torch.ones(shape)), name="other"):
            raise RuntimeError("boom")
    assert list(active_hooks(sd_pipe)) == ["hsteer"]
    active_hooks(sd_pipe)["hsteer"].remove()
    assert not has_hook(sd_pipe.unet) and not active_hooks(sd_pipe)


def test_only_conditional_half_is_steered_by_default(sd_pipe):
    shape = pipeline_hspace_shape(sd_pipe)
    seen = {}

    def record(module, inputs, output):
        seen["h"] = output.detach().clone()

    delta = torch.full(shape, 0.5)
    plain_h = []
    handle = sd_pipe.unet.mid_block.register_forward_hook(lambda m, i, o: plain_h.append(o.detach().clone()))
    _images(sd_pipe, prompts=("a man",), seeds=(0,), steps=1)
    handle.remove()
    with steer(sd_pipe, SteeringConfig(delta)):
        # a later hook sees the steered output
        handle = sd_pipe.unet.mid_block.register_forward_hook(record)
        _images(sd_pipe, prompts=("a man",), seeds=(0,), steps=1)
        handle.remove()
    diff = seen["h"] - plain_h[0]
    assert diff.shape[0] == 2  # [uncond, cond]
    assert torch.equal(diff[0], torch.zeros(shape))
    assert torch.allclose(diff[1], delta, atol=1e-5)
    with steer(sd_pipe, SteeringConfig(delta, steer_unconditional=True)):
        handle = sd_pipe.unet.mid_block.register_forward_hook(record)
        _images(sd_pipe, prompts=("a man",), seeds=(0,), steps=1)
        handle.remove()
    assert torch.allclose((seen["h"] - plain_h[0])[0], delta, atol=1e-5)


@pytest.mark.parametrize("fixture", ["sd_dir", "sdxl_dir"])
def test_per_image_concepts_in_one_batch_equal_one_at_a_time(fixture, request):
    pipe = load_pipeline(request.getfixturevalue(fixture))
    bank = random_bank(pipe)
    prompts = ["a photo of a person", "a doctor"]
    kwargs = dict(num_images_per_prompt=3, seed=10, bank=bank, policy=FairPolicy(("gender",)), steps=3,
                  guidance=3.0, progress=False)
    batched = generate(pipe, prompts, batch_size=6, **kwargs)
    drawn = {r.concepts[0]["name"] for r in batched.records}
    assert drawn == {"woman", "man"}, "fixture seeds should draw both concepts"
    for record, image in zip(batched.records, batched.images):
        single = generate(pipe, record.prompt, num_images_per_prompt=1, seed=record.seed, bank=bank,
                          policy=ConceptPolicy(tuple((c["name"], c["scale"]) for c in record.concepts)), steps=3,
                          guidance=3.0, progress=False)
        a = np.asarray(image, dtype=np.int16)
        b = np.asarray(single.images[0], dtype=np.int16)
        assert np.abs(a - b).max() <= 1, record  # uint8 rounding of float noise in batched matmuls


def test_num_images_per_prompt_layout_matches_per_image_deltas(sd_pipe):
    """Pipeline-level batching (prompt x num_images_per_prompt) lines up with per-image delta rows."""
    shape = pipeline_hspace_shape(sd_pipe)
    deltas = torch.stack([torch.zeros(shape), torch.full(shape, 2.0)])
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)]
    with steer(sd_pipe, SteeringConfig(deltas)):
        out = sd_pipe("a man", num_images_per_prompt=2, num_inference_steps=3, guidance_scale=3.0,
                      generator=gens, output_type="np").images
    plain = _images(sd_pipe, prompts=("a man",), seeds=(0,))
    assert np.abs(out[0] - plain[0]).max() < 1e-5
    assert np.abs(out[1] - plain[0]).max() > 1e-3


def test_wrong_shape_is_a_clear_error(sd_pipe):
    with pytest.raises(ShapeMismatchError, match="does not match this model's h-space"):
        with steer(sd_pipe, SteeringConfig(torch.zeros(7, 4, 4))):
            _images(sd_pipe, steps=1)
    assert not active_hooks(sd_pipe)


@pytest.mark.parametrize("how", ["wrapped", "in_place"])
def test_a_compiled_unet_is_refused_not_silently_unsteered(sd_pipe, how):
    """Compiled code ignores hooks attached after compilation (measured on the bundled model: the
    steered images came out plain), so steering a compiled U-Net is an error, and nothing is attached."""
    from hsteer.errors import HsteerError

    if how == "wrapped":
        sd_pipe.unet = torch.compile(sd_pipe.unet)  # compiles lazily: nothing runs here
    else:
        sd_pipe.unet.compile()
    c = torch.ones(pipeline_hspace_shape(sd_pipe))
    with pytest.raises(HsteerError, match="torch.compile"):
        apply_steering(sd_pipe, SteeringConfig(c))
    assert not active_hooks(sd_pipe)


def test_fair_draws_are_balanced_reproducible_and_composed(sd_pipe):
    from collections import Counter

    bank = random_bank(sd_pipe)
    race = random_bank(sd_pipe, names=("white", "black", "asian"), group="race")
    both = bank.merge(race)
    policy = FairPolicy(("gender", "race"), {"gender": 1.1, "race": 0.9})
    draws = [tuple(policy.assign(both, s)) for s in range(60)]
    assert draws == [tuple(policy.assign(both, s)) for s in range(60)]  # from the seed alone
    joint = Counter((a[0], b[0]) for a, b in draws)
    assert len(joint) == 6 and set(joint.values()) == {10}  # every 6 consecutive seeds: each pair once
    assert all(a[1] == 1.1 and b[1] == 0.9 for a, b in draws)
    single = Counter(policy.assign(bank, s)[0][0] for s in range(7, 7 + 40)
                     for policy in [FairPolicy(("gender",))])
    assert abs(single["woman"] - single["man"]) <= 2
    assert len({tuple(d) for d in draws[:6]}) == 6
