"""Denoiser families as objects (`hsteer.model.families`): one per denoiser class, looked up by class.

The objects must say what the rest of the model layer says about the same denoiser: the family key a bank
stores, the sites' block lists and token layout, the guidance batch. Tiny bare denoisers are enough here;
the families' calls and encodings run in tests/test_transformers.py and tests/test_training.py.
"""

import re

import pytest
import torch

from hsteer.errors import HsteerError
from hsteer.model.families import (DEFAULT_FAMILY_KEY, FAMILY_OF_CLASS, FAMILY_OF_KEY, Family, family_for,
                                   family_label)
from hsteer.model.sites import batches_guidance, block_counts, family_of, site_for, site_specs, spec_order


@pytest.fixture(scope="module")
def denoisers():
    from diffusers import FluxTransformer2DModel, SanaTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel

    torch.manual_seed(0)
    return {
        "unet": UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                     block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                     up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
                                     norm_num_groups=8, attention_head_dim=2),
        "sd3": SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
                                     num_attention_heads=2, caption_projection_dim=16, joint_attention_dim=16,
                                     pooled_projection_dim=16, out_channels=4),
        "flux": FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=2,
                                       attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                       pooled_projection_dim=32, axes_dims_rope=[4, 4, 8]),
        "sana": SanaTransformer2DModel(patch_size=1, in_channels=4, out_channels=4, num_layers=2, num_attention_heads=2,
                                       attention_head_dim=8, num_cross_attention_heads=2, cross_attention_head_dim=8,
                                       cross_attention_dim=16, caption_channels=16, sample_size=8),
    }


def test_one_family_per_denoiser_class_with_the_keys_banks_store():
    """The keys are stored in bank files, so they never change; a bank that stores none is a U-Net's."""
    assert {name: family.key for name, family in FAMILY_OF_CLASS.items()} == {
        "UNet2DConditionModel": "unet", "SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux",
        "SanaTransformer2DModel": "sana"}
    assert {key: family.label for key, family in FAMILY_OF_KEY.items()} == {
        "unet": "U-Net (SD 1.x/2.x, SDXL)", "sd3": "SD3 (MMDiT)", "flux": "FLUX", "sana": "SANA"}
    assert all(isinstance(family, Family) for family in FAMILY_OF_CLASS.values())
    assert DEFAULT_FAMILY_KEY == "unet" and family_label("sd3") == "SD3 (MMDiT)" and family_label("other") == "other"


def test_a_family_is_found_by_class_on_a_pipeline_a_bare_denoiser_and_a_compiled_one(denoisers):
    for key, model in denoisers.items():
        attr = "unet" if key == "unet" else "transformer"
        pipe = type("Pipe", (), {attr: model})()
        compiled = type("OptimizedModule", (torch.nn.Module,), {})()
        compiled._orig_mod = model
        assert family_for(model) is family_for(pipe) is family_for(compiled) is FAMILY_OF_KEY[key]
        assert family_for(pipe).denoiser_attr == attr
    with pytest.raises(HsteerError, match="Linear is not a denoiser hsteer can steer"):
        family_for(torch.nn.Linear(2, 2))


def test_the_families_agree_with_the_sites_and_the_guidance_layout(denoisers):
    for key, model in denoisers.items():
        family = FAMILY_OF_KEY[key]
        assert batches_guidance(model) == family.batches_guidance == (key != "flux")
        assert family.sampling_cfg(5.0) == (5.0 if family.batches_guidance else 1.0)
        counts = block_counts(model)
        assert tuple(counts) == (family.block_stacks or ("mid_block",))
        for stack in family.block_stacks:
            assert site_for(model, f"{stack}.0").output_index == family.token_index
        assert family_of(model) == key and family.site_kinds == (*counts, "text")
        assert {spec.split(".")[0] for spec in site_specs(model)} == set(family.site_kinds)
        assert site_for(model, "text").denoiser_attr == family.denoiser_attr


@pytest.mark.parametrize("key, spec", [("unet", "transformer_blocks.0"), ("sd3", "mid_block"),
                                       ("sana", "single_transformer_blocks.1"), ("flux", "mid_block")])
def test_a_stored_site_of_another_family_is_refused_by_the_spec_alone(key, spec):
    family = FAMILY_OF_KEY[key]
    with pytest.raises(HsteerError, match=rf"not a site of a {re.escape(family.label)} model \(its sites: "
                                          rf"{', '.join(family.site_kinds)}\)"):
        spec_order(spec, key)
    assert spec_order("text", key) == (3, 0) and spec_order(spec, "a family hsteer does not know") == spec_order(spec)


def test_the_text_site_steers_a_positional_call_where_the_family_takes_one(denoisers):
    """The U-Net is also called as `unet(sample, timestep, encoder_hidden_states)`; a transformer only by keyword."""
    from hsteer.steering.scoped import SteeringConfig, steer

    unet = denoisers["unet"]
    x, t, states = torch.randn(1, 4, 8, 8), torch.tensor(10), torch.randn(1, 3, 8)
    delta = torch.randn(3, 8)
    with torch.no_grad():
        expected = unet(x, t, encoder_hidden_states=states + delta).sample
        with steer(unet, SteeringConfig(delta), site=site_for(unet, "text")):
            positional, by_keyword = unet(x, t, states).sample, unet(x, t, encoder_hidden_states=states).sample
    torch.testing.assert_close(positional, expected)
    torch.testing.assert_close(by_keyword, expected)
    sana = denoisers["sana"]
    with steer(sana, SteeringConfig(torch.zeros(3, 16)), site=site_for(sana, "text")):
        with pytest.raises(HsteerError, match="called without encoder_hidden_states"):
            sana(torch.randn(1, 4, 8, 8), torch.randn(1, 3, 16), torch.tensor([10]))


@pytest.mark.parametrize("key, grid, shape, patch", [("unet", (4, 4), (4, 4, 4), 1), ("sd3", (4, 4), (4, 4, 4), 2),
                                                     ("flux", (4, 4), (4, 16), 2), ("sana", (8, 8), (4, 8, 8), 1)])
def test_latent_layout_per_family(denoisers, key, grid, shape, patch):
    """FLUX packs 2 x 2 latents into tokens (its 16 channels are the packed width); the others keep (C, h, w)."""
    family = FAMILY_OF_KEY[key]
    vsf = 4 if key == "sana" else 8
    assert family.latent_grid(32, 32, vsf) == grid
    assert family.latent_grid(40, 40, 8)[0] == (4 if family.packed_latents else 5)  # FLUX: a multiple of 2
    channels = 16 if key == "flux" else 4
    assert family.latent_shape(channels, grid) == shape
    assert family.token_patch(denoisers[key].config) == patch
