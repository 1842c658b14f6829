"""Tiny random-weight pipelines of the real architectures, saved and loaded back from local folders."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from cpu import THREADS  # noqa: E402  (this worker's share of the cores: tests/cpu.py)

# hsteer commands the tests start read these; a worker's share, so that workers never oversubscribe the cores
os.environ["OMP_NUM_THREADS"] = os.environ["HSTEER_THREADS"] = str(THREADS)

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

# A fixed search order (derandomize): the same examples on every run, so a landing is not decided by which
# random inputs a run drew; HYPOTHESIS_PROFILE=explore searches afresh each run.
settings.register_profile("hsteer", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "hsteer"))

torch.set_num_threads(THREADS)

VOCAB_WORDS = ["a", "photo", "of", "person", "woman", "man", "scene", "violence", "doctor", "nurse", "square",
               "circle", "red", "blue", "the", "an", "picture"]


def write_tokenizer(folder: Path, max_length: int = 16) -> None:
    """A word-level CLIP BPE tokenizer: every vocabulary word is one token."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted({ch for w in VOCAB_WORDS for ch in w})
    vocab: dict[str, int] = {}
    for token in ["!", '"'] + chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    merges = []
    for word in VOCAB_WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.setdefault(parts[0], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    unique = list(dict.fromkeys(merges))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(unique) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(folder)


def _text_encoder(vocab_size: int, hidden: int = 32, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=16, projection_dim=projection or hidden,
                            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(config)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                         layers_per_block=1, norm_num_groups=8, sample_size=32)


def build_sd(folder: Path, *, v2: bool = False, seed: int = 0) -> Path:
    """SD 1.x (or SD 2.x style: linear projection, v-prediction) at 32 px, 16x16 latents, 4x4 h-space."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    write_tokenizer(folder / "_tok")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "_tok")
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=(2, 4, 4) if v2 else 4, use_linear_projection=v2, norm_num_groups=8)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction" if v2 else "epsilon")
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=_text_encoder(len(tokenizer)), tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def build_sdxl(folder: Path, seed: int = 0) -> Path:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    write_tokenizer(folder / "_tok")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "_tok")
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionXLPipeline(vae=_vae(), text_encoder=_text_encoder(len(tokenizer)),
                                     text_encoder_2=_text_encoder(len(tokenizer), projection=32),
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory) -> Path:
    return build_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def sd2_dir(tmp_path_factory) -> Path:
    return build_sd(tmp_path_factory.mktemp("tiny-sd2"), v2=True, seed=1)


@pytest.fixture(scope="session")
def sdxl_dir(tmp_path_factory) -> Path:
    return build_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture()
def sd_pipe(sd_dir):
    from hsteer.model import load_pipeline

    return load_pipeline(sd_dir)


@pytest.fixture()
def sdxl_pipe(sdxl_dir):
    from hsteer.model import load_pipeline

    return load_pipeline(sdxl_dir)
