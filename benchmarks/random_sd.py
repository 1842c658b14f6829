"""Random-weight pipelines with Stable Diffusion 1.5's and SDXL's architectures, for timings where no weights
can be downloaded.

    python benchmarks/random_sd.py OUT_DIR [--size sd15|sdxl|tiny|tiny_xl]

`sd15`: the SD 1.5 U-Net (860M parameters, 64x64 latents at 512 px, h-space (1280, 8, 8)), its VAE and a
CLIP ViT-L/14-sized text encoder. `sdxl`: the SDXL base U-Net (2.6B parameters, 128x128 latents at 1024 px,
h-space (1280, 32, 32); transformer depths 1, 2, 10), its VAE and both text encoders (ViT-L and bigG sizes).
`tiny`, `tiny_xl`: the same block layouts at toy widths (CI smoke). Both use a small word-level tokenizer
(77 tokens). Weights are random: the timings and memory are those of the real architecture; the images are
noise. `make` builds a pipeline in memory, on a device and in a dtype (benchmarks/gpu.py); `build` saves one,
e.g. for:

    python benchmarks/run.py --model OUT_DIR --device cuda --dtype float16 --skip-training --train-throughput
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

_VIT_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
_TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
SIZES = {
    "sd15": {"xl": False, "channels": (320, 640, 1280, 1280), "groups": 32, "cross": 768, "heads": 8, "sample": 64,
             "vae": (128, 256, 512, 512), "text": _VIT_L},
    "tiny": {"xl": False, "channels": (32, 32, 64, 64), "groups": 8, "cross": 32, "heads": 4, "sample": 16,
             "vae": (16, 16, 32, 32), "text": _TINY_TEXT},
    "sdxl": {"xl": True, "channels": (320, 640, 1280), "groups": 32, "cross": 2048, "heads": (5, 10, 20),
             "depths": (1, 2, 10), "time_dim": 256, "sample": 128, "vae": (128, 256, 512, 512), "text": _VIT_L,
             "text_2": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                        "num_attention_heads": 20}},
    "tiny_xl": {"xl": True, "channels": (32, 64, 64), "groups": 8, "cross": 64, "heads": (2, 4, 4),
                "depths": (1, 2, 2), "time_dim": 8, "sample": 16, "vae": (16, 16, 32, 32), "text": _TINY_TEXT,
                "text_2": _TINY_TEXT},
}


def _unet(spec: dict):
    from diffusers import UNet2DConditionModel

    if not spec["xl"]:
        return UNet2DConditionModel(
            sample_size=spec["sample"], in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=spec["channels"], norm_num_groups=spec["groups"], cross_attention_dim=spec["cross"],
            attention_head_dim=spec["heads"],
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    return UNet2DConditionModel(  # SDXL base: no attention in the first level, deep transformers in the last
        sample_size=spec["sample"], in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=spec["channels"], norm_num_groups=spec["groups"], cross_attention_dim=spec["cross"],
        attention_head_dim=spec["heads"], transformer_layers_per_block=spec["depths"], use_linear_projection=True,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time", addition_time_embed_dim=spec["time_dim"],
        projection_class_embeddings_input_dim=6 * spec["time_dim"] + spec["text_2"]["hidden_size"])


def make(size: str = "sd15", device: str = "cpu", dtype: str = "float32", seed: int = 0):
    """A random-weight pipeline of `size` (SIZES), built directly on `device` (no copy through the CPU for
    the 2.6B-parameter SDXL U-Net) and cast to `dtype`."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from hsteer.world.build_unet import build_tokenizer_files

    spec = SIZES[size]
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        build_tokenizer_files(Path(tmp))
        config_path = Path(tmp) / "tokenizer_config.json"
        config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "model_max_length": 77}))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)

    def text(cls, sizes: dict):
        return cls(CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=77,
                                  projection_dim=sizes["hidden_size"], **sizes))

    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    with torch.device(device):
        unet = _unet(spec)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                            block_out_channels=spec["vae"], norm_num_groups=spec["groups"],
                            down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=spec["sample"] * 8)
        if spec["xl"]:
            pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text(CLIPTextModel, spec["text"]),
                                             text_encoder_2=text(CLIPTextModelWithProjection, spec["text_2"]),
                                             tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
                                             scheduler=scheduler)
        else:
            pipe = StableDiffusionPipeline(vae=vae, text_encoder=text(CLIPTextModel, spec["text"]),
                                           tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                           safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
    pipe.to(device, getattr(torch, dtype))
    # The VAE keeps diffusers' default force_upcast: the pipelines decode in float32, as SDXL users do.
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build(out_dir: str | Path, size: str = "sd15", seed: int = 0) -> Path:
    """`make(size)` saved to `out_dir` (safetensors), loadable by `hsteer.model.load_pipeline`."""
    out_dir = Path(out_dir)
    make(size, seed=seed).save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", choices=sorted(SIZES), default="sd15")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build(args.out_dir, args.size, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
