"""The toy-world model's architecture and its files: the diffusers configs of its parts, the pipeline folder
it is saved as, and the training state a run resumes from.

Kept apart from the training loop because these decide what the bundled model *is* (its model card quotes
the configs) and what lands on disk; the loop only decides how long and how it learns.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from hsteer.fileio import atomic_save
from hsteer.world.data import MAX_LENGTH
from hsteer.world.defaults import DEFAULT_GUIDANCE, DEFAULT_STEPS

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 32,
}
TEXT_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": MAX_LENGTH,
    "projection_dim": 128,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}
UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    # no attention at 16x16 (it triples the CPU cost); cross-attention at 8x8, 4x4 and in the mid block
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 128,
    "attention_head_dim": 4,
    "norm_num_groups": 16,
}
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def dir_size(p: Path) -> int:
    """Bytes of every file under `p` (the model folder's size, logged with each snapshot)."""
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def publish_folder(out_dir: Path, write) -> None:
    """Replace `out_dir` by the folder `write(tmp)` fills beside it, then renames into place: a reader (or a
    crash) sees the old folder or the new one, never half of one."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def save_pipeline(out_dir: Path, vae, text_encoder, unet, tok_dir: Path, extra: dict | None = None) -> None:
    """Save the full pipeline folder atomically (`publish_folder`)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(str(tok_dir)),
        unet=unet,
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )

    def write(tmp: Path) -> None:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        # the sampling defaults every hsteer command reads from the model folder (hsteer.model.sampling_defaults)
        (tmp / "hsteer.json").write_text(json.dumps({"steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE}) + "\n")
        if extra is not None:
            (tmp / "training_info.json").write_text(json.dumps(extra, indent=2))

    publish_folder(out_dir, write)


def save_training_state(path: Path, modules: dict, opt, step: int, elapsed: float) -> None:
    """Weights, EMA weights and AdamW state in one safetensors file (no pickles), written atomically."""
    from safetensors.torch import save_file

    tensors = {f"{name}/{k}": v.detach().contiguous() for name, m in modules.items()
               for k, v in m.state_dict().items()}
    opt_state = opt.state_dict()
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"opt/{index}/{key}"] = value.detach().contiguous()
    meta = {"step": step, "elapsed": elapsed, "param_groups": opt_state["param_groups"]}
    atomic_save(path, lambda tmp: save_file(tensors, tmp, metadata={"hsteer_world_state": json.dumps(meta)}))


def load_training_state(path: Path, modules: dict, opt) -> tuple[int, float]:
    """Restore what `save_training_state` wrote into `modules` and `opt`; returns (step, elapsed seconds)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["hsteer_world_state"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    for name, module in modules.items():
        prefix = f"{name}/"
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt/"):
            _, index, field = key.split("/", 2)
            state.setdefault(int(index), {})[field] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"]), float(meta["elapsed"])
