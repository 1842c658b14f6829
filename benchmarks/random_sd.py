"""A random-weight pipeline with Stable Diffusion 1.5's architecture, for timings where no weights can be downloaded.

    python benchmarks/random_sd.py OUT_DIR [--size sd15|tiny]

`sd15`: the SD 1.5 U-Net (860M parameters, 64x64 latents at 512 px, h-space (1280, 8, 8)), its VAE and a
CLIP ViT-L/14-sized text encoder, with a small word-level tokenizer (77 tokens). `tiny`: the same block
layout at toy widths (CI smoke). Weights are random: the timings and memory are those of the real
architecture; the images are noise. Then, e.g. on a GPU:

    python benchmarks/run.py --model OUT_DIR --device cuda --dtype float16 --skip-training --train-throughput
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SIZES = {
    "sd15": {"channels": (320, 640, 1280, 1280), "groups": 32, "cross": 768, "heads": 8, "sample": 64,
             "vae": (128, 256, 512, 512),
             "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                      "num_attention_heads": 12}},
    "tiny": {"channels": (32, 32, 64, 64), "groups": 8, "cross": 32, "heads": 4, "sample": 16,
             "vae": (16, 16, 32, 32),
             "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                      "num_attention_heads": 4}},
}


def build(out_dir: str | Path, size: str = "sd15", seed: int = 0) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from hsteer.apps.world_model import build_tokenizer_files

    spec = SIZES[size]
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=spec["sample"], in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=spec["channels"], norm_num_groups=spec["groups"], cross_attention_dim=spec["cross"],
        attention_head_dim=spec["heads"],
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                        block_out_channels=spec["vae"], norm_num_groups=spec["groups"],
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=spec["sample"] * 8)
    tok_dir = out_dir.with_name(out_dir.name + ".tokenizer")
    build_tokenizer_files(tok_dir)
    config_path = tok_dir / "tokenizer_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "model_max_length": 77}))
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=77,
                                                projection_dim=spec["cross"], **spec["text"]))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
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
