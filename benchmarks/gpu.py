"""GPU benchmark: hsteer on random-weight models of the real sizes, in float16, in one run (<= 8 min, one GPU).

    python benchmarks/gpu.py [--device cuda] [--dtype float16] [--sizes sd15,sdxl] [--compile-sizes sd15]
    python benchmarks/gpu.py --quick --device cpu        # the same code at toy widths (CI smoke)

Models (`random_sd.make`, built on the device): the SD 1.5 U-Net at 512 px (h-space (1280, 8, 8)) and the SDXL
base U-Net at 1024 px (h-space (1280, 32, 32)), with their VAEs and text encoders. Weights are random, so
the figures are costs, not image quality. Per model, one JSON object's `models.<size>` holds:

- `generation`: steered / plain generation time and a fair batch (a different concept per image) against a
  plain one (`run.bench_generation`: interleaved repeats, ratios of the fastest and of the medians);
- `attach`: a plain `pipe(...)` call with a fair policy attached / unattached (`run.bench_attach`);
- `compiled` (sizes in --compile-sizes): attach, `torch.compile` (inductor on CUDA), steered / plain, and the
  recompilations a concept swap causes (must be 0) (`run.bench_compiled`);
- `train_throughput`: iterations/s and training signals/s of the fast mode (batch 8, with and without
  gradient checkpointing) against the reference procedure (batch 1), 50-step schedule;
  `group_throughput`: the fast mode training a group of two concepts together (`hsteer.training.group`);
- `train_memory`: the bytes autograd keeps for one training step (ours, ours checkpointed, a backward through
  the whole U-Net) and, on CUDA, the allocator's peaks (`run.bench_memory`);
- `offload`: a steered generation under `enable_model_cpu_offload()` and under group offloading, against
  the same steered generation with everything on the device (same seeds): the largest latent difference,
  and the steered-vs-plain difference that shows the concept acted (`check_offload`).

Every ratio is of two measurements taken side by side in this run. The CPU mode (`--quick`) runs the same
functions at toy widths and small sizes; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import setup_threads

#: What each model gets: (random_sd size, generation batch, steps, repeats, memory batch, training steps,
#: timed training iterations); `quick` for the CPU smoke.
PLANS = {
    "full": {"sd15": ("sd15", 4, 20, 3, 8, 50, 6), "sdxl": ("sdxl", 2, 20, 3, 4, 50, 4)},
    "quick": {"sd15": ("tiny", 2, 2, 1, 2, 2, 1), "sdxl": ("tiny_xl", 2, 2, 1, 2, 2, 1)},
}


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _latents(pipe, seeds: list[int], steps: int):
    """One guided call's final latents (no decode), seeded per image on the execution device."""
    import torch

    gens = [torch.Generator(pipe._execution_device).manual_seed(s) for s in seeds]
    out = pipe("a photo of a doctor", num_images_per_prompt=len(seeds), num_inference_steps=steps,
               guidance_scale=6.0, generator=gens, output_type="latent").images
    return out.float().cpu()


def check_offload(pipe, device: str, steps: int) -> dict:
    """Steering under the offload paths: model CPU offload and group offloading, against on-device steering.

    `pipe` is on `device`; it ends with its offload hooks removed and its components back on the device."""
    import torch

    import hsteer
    from hsteer.steering.randombank import random_bank

    bank = random_bank(pipe, {"g": ["c0"]}, scale=4.0, seed=0)
    steered, seeds = hsteer.ConceptPolicy((("c0", 1.0),)), [0, 1]
    plain = _latents(pipe, seeds, steps)
    hsteer.attach(pipe, bank, steered)
    on_device = _latents(pipe, seeds, steps)
    hsteer.detach(pipe)
    out = {"steered_vs_plain_max_abs": float((on_device - plain).abs().max())}

    def compare(name: str, enable) -> None:
        try:
            enable()
        except Exception as error:  # noqa: BLE001 - recorded: the CPU mode has no accelerator to offload to
            out[name] = {"ran": False, "why": f"{type(error).__name__}: {error}"}
            return
        try:
            hsteer.attach(pipe, bank, steered)
            got = _latents(pipe, seeds, steps)
            hsteer.detach(pipe)
            generated = hsteer.generate(pipe, ["a photo of a doctor"], bank=bank, policy=steered, seed=0, steps=steps,
                                        guidance=6.0, num_images_per_prompt=1, progress=False)
            out[name] = {"ran": True, "max_abs_vs_on_device": float((got - on_device).abs().max()),
                         "generate_images": len(generated)}
        finally:
            pipe.remove_all_hooks()
            pipe.to(device)

    compare("model_cpu_offload", lambda: pipe.enable_model_cpu_offload(device=device))
    compare("group_offload", lambda: pipe.unet.enable_group_offload(
        onload_device=torch.device(device), offload_device=torch.device("cpu"), offload_type="block_level",
        num_blocks_per_group=1))
    out["ok"] = all(v["max_abs_vs_on_device"] <= 1e-2 * max(1.0, out["steered_vs_plain_max_abs"])
                    for v in out.values() if isinstance(v, dict) and v.get("ran"))
    return out


def bench_group_throughput(pipe, steps: int, iterations: int) -> dict:
    """Two concepts trained together (batch 8 each, one U-Net pass per iteration): iterations/s and signals/s."""
    from hsteer.training import CodsmaConfig
    from hsteer.training.group import GroupRun

    configs = [CodsmaConfig(concept=name, group="g", neutral="a photo of a person", target=f"a photo of a {name}",
                            iterations=iterations + 2, batch_size=8, steps=steps, seed=0) for name in ("man", "woman")]
    run = GroupRun(pipe, configs)
    stamps: list[float] = []

    def stamp(it: int, row: dict) -> None:
        _sync(pipe.unet.device)
        stamps.append(time.perf_counter())

    run.run(iterations + 2, callback=stamp)
    per_iteration = (stamps[-1] - stamps[1]) / (len(stamps) - 2)
    return {"iterations_per_second": 1 / per_iteration, "signals_per_second": 16 / per_iteration,
            "concepts": 2, "batch_per_concept": 8, "steps": steps}


def bench_model(name: str, plan: tuple, device: str, dtype: str, compile_it: bool, offload: bool) -> dict:
    """Every measurement of one model size (module docstring), each section timed."""
    import torch

    from random_sd import make
    from run import bench_attach, bench_compiled, bench_generation, bench_memory, bench_train_throughput

    size, batch, steps, repeats, memory_batch, train_steps, iterations = plan
    began = time.perf_counter()
    pipe = make(size, device=device, dtype=dtype)
    from hsteer.model import pipeline_hspace_shape

    out: dict = {"random_sd_size": size, "hspace_shape": list(pipeline_hspace_shape(pipe)),
                 "unet_parameters": sum(p.numel() for p in pipe.unet.parameters()), "seconds": {}}
    out["seconds"]["build"] = time.perf_counter() - began
    sections = [("generation", lambda: bench_generation(pipe, batch=batch, steps=steps, repeats=repeats)),
                ("attach", lambda: bench_attach(pipe, batch=batch, steps=steps, repeats=repeats)),
                ("train_memory", lambda: bench_memory(pipe, batch=memory_batch)),
                ("train_throughput", lambda: bench_train_throughput(pipe, steps=train_steps, iterations=iterations)),
                ("group_throughput", lambda: bench_group_throughput(pipe, steps=train_steps, iterations=iterations))]
    if offload:
        sections.append(("offload", lambda: check_offload(pipe, device, steps)))
    if compile_it:  # last: it leaves the U-Net compiled and hooked
        backend = "inductor" if torch.device(device).type == "cuda" else "eager"
        sections.append(("compiled", lambda: bench_compiled(pipe, batch=batch, steps=steps, repeats=repeats,
                                                            backend=backend)))
    for section, run in sections:
        began = time.perf_counter()
        out[section] = run()
        _sync(device)
        out["seconds"][section] = time.perf_counter() - began
        print(json.dumps({"model": name, "section": section, "seconds": out["seconds"][section]}),
              file=sys.stderr, flush=True)
    if torch.device(device).type == "cuda":
        out["peak_bytes_allocated"] = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    pipe = sections = None  # free the model before the next one is built
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="Default: cuda when available, else cpu.")
    parser.add_argument("--dtype", default=None, help="Default: float16 on CUDA, float32 on the CPU.")
    parser.add_argument("--sizes", default="sd15,sdxl", help="Comma-separated, of: sd15, sdxl.")
    parser.add_argument("--compile-sizes", default="sd15",
                        help="Sizes that also get the torch.compile benchmark (SDXL's compile takes minutes).")
    parser.add_argument("--skip-compile", action="store_true", help="No torch.compile benchmark.")
    parser.add_argument("--skip-offload", action="store_true", help="No offload check.")
    parser.add_argument("--quick", action="store_true", help="Toy widths and sizes (CI smoke; figures mean nothing).")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("float16" if device.startswith("cuda") else "float32")
    sizes = [s for s in args.sizes.split(",") if s]
    plans = PLANS["quick" if args.quick else "full"]
    unknown = [s for s in sizes if s not in plans]
    if unknown:
        parser.error(f"unknown size(s) {', '.join(unknown)}; choose from {', '.join(plans)}")
    compiled = set() if args.skip_compile else set(args.compile_sizes.split(","))
    machine = f"torch {torch.__version__}, {device}, {dtype}"
    if device.startswith("cuda"):
        machine += f", {torch.cuda.get_device_name(device)}"
    results: dict = {"machine": machine, "quick": args.quick, "models": {}}
    began = time.perf_counter()
    for i, size in enumerate(sizes):
        results["models"][size] = bench_model(size, plans[size], device, dtype, compile_it=size in compiled,
                                              offload=not args.skip_offload and i == 0)
    results["seconds"] = time.perf_counter() - began
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
