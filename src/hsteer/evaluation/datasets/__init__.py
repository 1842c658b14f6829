"""The benchmarks' prompt sets, one module each, read by the evaluation tasks of the same name (`tasks/`).

- `i2p`: the I2P CSV (prompts, categories, seeds) and its inappropriateness rates per category;
- `winobias`: the WinoBias professions and templates, and the prompts that name an attribute;
- `coco`: COCO captions (JSON, JSON lines or plain text), with the CLIP score and FID computed against them;
- `attack_prompts`: published attack prompt sets (P4D, Ring-A-Bell, MMA-Diffusion, UnlearnDiffAtk) and
  `hsteer attack`'s own, read from local files.
"""
