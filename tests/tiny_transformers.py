"""Tiny random-weight SD3, FLUX and SANA pipelines of the real diffusers classes, built and saved locally.

The shapes follow diffusers' own pipeline tests (tiny CLIP and T5 encoders, one or two transformer blocks),
but nothing is downloaded: the tokenizers are the word-level CLIP tokenizer of `conftest.write_tokenizer`
(it serves the T5 and Gemma slots too: the pipelines only tokenize with it), the encoders are random.
Images are 32 x 32 px: 16 x 16 latents and 64 image tokens (SD3: patch 2; FLUX: 2 x 2 packing; SANA: a
4x autoencoder with patch 1 gives 8 x 8 latents, 64 tokens).
"""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import write_tokenizer

SIZE = 32  # image height and width of the tests, in pixels


def _tokenizer(folder: Path, max_length: int):
    from transformers import CLIPTokenizer

    write_tokenizer(folder / "_tok", max_length=max_length)
    return CLIPTokenizer.from_pretrained(folder / "_tok")


def _clip(vocab_size: int, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=16, projection_dim=32,
                            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _t5(vocab_size: int, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0))


def _vae_kl(**extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                         layers_per_block=1, norm_num_groups=8, sample_size=SIZE, **extra)


def build_sd3(folder: Path, seed: int = 0) -> Path:
    """SD3 (MMDiT): two joint blocks, CLIP-L/G-like and T5-like tiny encoders."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    tok = _tokenizer(folder, 16)
    transformer = SD3Transformer2DModel(sample_size=SIZE // 2, patch_size=2, in_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=64, pooled_projection_dim=64, out_channels=4)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae_kl(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.06, scaling_factor=1.5),
        text_encoder=_clip(len(tok), True), tokenizer=tok, text_encoder_2=_clip(len(tok), True), tokenizer_2=tok,
        text_encoder_3=_t5(len(tok), d_model=64), tokenizer_3=tok)
    pipe.save_pretrained(folder)
    return folder


def build_flux(folder: Path, seed: int = 0, guidance: bool = True) -> Path:
    """FLUX: one double-stream and two single-stream blocks; with distilled guidance (dev) unless told."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    tok = _tokenizer(folder, 16)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=2,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=guidance)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=16,
                                                max_image_seq_len=256, base_shift=0.5, max_shift=1.15)
    pipe = FluxPipeline(transformer=transformer, scheduler=scheduler, vae=_vae_kl(shift_factor=0.1, scaling_factor=0.4),
                        text_encoder=_clip(len(tok), False), tokenizer=tok, text_encoder_2=_t5(len(tok)),
                        tokenizer_2=tok)
    pipe.save_pretrained(folder)
    return folder


def build_sana(folder: Path, seed: int = 0) -> Path:
    """SANA (linear-attention DiT): two blocks, a tiny Gemma-2 encoder, a 4x deep-compression autoencoder."""
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    tok = _tokenizer(folder, 16)
    transformer = SanaTransformer2DModel(patch_size=1, in_channels=4, out_channels=4, num_layers=2,
                                         num_attention_heads=2, attention_head_dim=8, num_cross_attention_heads=2,
                                         cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16,
                                         sample_size=SIZE // 4)
    vae = AutoencoderDC(in_channels=3, latent_channels=4, attention_head_dim=2,
                        encoder_block_types=("ResBlock", "EfficientViTBlock", "EfficientViTBlock"),
                        decoder_block_types=("ResBlock", "EfficientViTBlock", "EfficientViTBlock"),
                        encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                        encoder_qkv_multiscales=((), (5,), (5,)), decoder_qkv_multiscales=((), (5,), (5,)),
                        encoder_layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
                        downsample_block_type="conv", upsample_block_type="interpolate",
                        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41)
    encoder = Gemma2Model(Gemma2Config(head_dim=8, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                       num_hidden_layers=1, num_key_value_heads=2, vocab_size=len(tok),
                                       max_position_embeddings=2048, attn_implementation="eager"))
    pipe = SanaPipeline(tokenizer=tok, text_encoder=encoder, vae=vae, transformer=transformer,
                        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.save_pretrained(folder)
    return folder
