"""hsteer benchmarks: ratios measured side by side in one run (absolute times drift on a shared machine).

    python benchmarks/run.py [--quick] [--json] [--model DIR] [--threads N] [--device D] [--dtype T]
                             [--skip-training] [--train-throughput]

Keys of --json:
  steer_overhead    steered / plain generation time (same seeds, steps, batch; fastest repeats, and
                    `_median`); target <= 1.02. `steer_overhead_hook_bound`: the hook's own measured cost.
  fair_batch_ratio  throughput of a batch with a different concept per image / a plain batch; target >= 0.9
  train_speedup_equal_quality(_low, _high)  the reference procedure's (batch 1, a fresh reverse process per
                    sample, the recipe's lr 0.05) training time to a fixed quality / the fast mode's (batch 9,
                    lr 0.15 by Adam's square-root batch rule), on the bundled model: fair generation over
                    shape, mean deviation ratio <= 0.05 on the shape-biased professions and same-seed colour
                    agreement >= --agreement-target; median over 3 training seeds with a bootstrap 95%
                    interval; the headline is `_low`
  train_speedup_equal_lr(_low, _high)  the same with the reference at the fast mode's lr 0.15 too: what
                    the procedure buys beyond the learning rate (--skip-equal-lr: not run)
  train_speedup     the reference's time at the last milestone it ran / the fast mode's time to the quality
                    (a budget comparison: the reference stops at the quality too, so it is close to the above)
  train_quality     per arm, median over seeds where it met the quality: iterations, seconds, deviation ratio,
                    colour agreement and colour deviation-ratio change (untargeted), fidelity; worst interval ends
  train_memory      autograd bytes saved for backward by one training step (ours: up blocks only;
                    with gradient checkpointing) vs. the same step with a backward through the whole U-Net
  train_throughput  (--train-throughput) iterations/s and training signals/s of both modes, any model
  attach_fair_batch_ratio  plain `pipe(...)` batch / the same call on a pipeline attached with a fair policy
                    (a different concept per image, drawn from each generator's seed); target >= 0.9
  compiled_steer_overhead  attached-then-`torch.compile`d: steered / plain generation time; target <= 1.02
                    (backend: --compile-backend, default inductor on CUDA, eager on CPU)
  compiled_swap_seconds    time of `hsteer.attach` swapping the concept on the compiled pipeline;
                    `compiled_swap_recompilations` (must be 0) and `compiled_swap_first_call_ratio` (first
                    call after the swap / the fastest steered call)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import setup_threads
from trainbench import ARMS, QUICK_ARMS, QUICK_SWEEPS, SWEEPS, bench_training


def _random_bank(pipe, names_by_group: dict[str, list[str]], scale: float = 1.0):
    """The library's random bank (seed 0), imported only once `setup_threads` has pinned torch's threads."""
    from hsteer.steering.randombank import random_bank

    return random_bank(pipe, names_by_group, scale=scale, seed=0)


def bench_generation(pipe, batch: int, steps: int, repeats: int) -> dict[str, float]:
    """Plain vs steered (one concept for all) vs fair (a different concept per image), interleaved in a
    rotating order."""
    from hsteer.generation import generate
    from hsteer.policies import ConceptPolicy, FairPolicy, PlainPolicy

    bank = _random_bank(pipe, {"g": [f"c{i}" for i in range(batch)]})
    prompts = ["a photo of a doctor"]
    policies = {"plain": PlainPolicy(), "steered": ConceptPolicy((("c0", 1.0),)), "fair": FairPolicy(("g",))}
    times: dict[str, list[float]] = {k: [] for k in policies}
    kwargs = dict(num_images_per_prompt=batch, seed=0, bank=bank, steps=steps, guidance=6.0, batch_size=batch,
                  progress=False)
    generate(pipe, prompts, policy=PlainPolicy(), **kwargs)  # warm-up
    names = list(policies)
    fair_draws: set[str] = set()
    for r in range(repeats):
        for name in names[r % 3:] + names[:r % 3]:  # rotate the order: no policy always runs first
            began = time.perf_counter()
            out = generate(pipe, prompts, policy=policies[name], **kwargs)
            times[name].append(time.perf_counter() - began)
            assert len(out) == batch
            if name == "fair":
                fair_draws = {record.concepts[0]["name"] for record in out.records}
    # Ratios of the fastest repeats (timeit's convention: interference only ever adds time), and of medians.
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    hook = _hook_cost(pipe, bank, batch, steps)
    return {"steer_overhead": best["steered"] / best["plain"], "fair_batch_ratio": best["plain"] / best["fair"],
            "steer_overhead_median": med["steered"] / med["plain"],
            "fair_batch_ratio_median": med["plain"] / med["fair"],
            "steer_overhead_hook_bound": 1 + hook["seconds_per_generation"] / best["plain"],
            "plain_seconds": best["plain"], "steered_seconds": best["steered"], "fair_seconds": best["fair"],
            "hook_seconds_per_call": hook["seconds_per_call"], "hook_calls_per_generation": hook["calls"],
            "fair_distinct_concepts": len(fair_draws), "batch": batch, "steps": steps, "repeats": repeats}


def _hook_cost(pipe, bank, batch: int, steps: int) -> dict[str, float]:
    """What the steering hook itself costs: its calls per generation x its time per call on that batch's h.

    A low-noise bound on the steering overhead: on a tiny model the whole-generation ratio above is
    dominated by the machine's noise (a few percent either way). The hook is armed as a steered pipeline
    call arms it (one window of per-image rows laid out for guidance), and its `post_forward` is timed."""
    import torch

    from hsteer.steering.hook import WindowRows, has_hook, release_hook, steering_hook
    from hsteer.model import pipeline_hspace_shape

    calls = {"n": 0}
    counter = pipe.unet.mid_block.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    pipe("a photo", num_inference_steps=steps, guidance_scale=6.0, num_images_per_prompt=batch, output_type="latent")
    counter.remove()
    shape = pipeline_hspace_shape(pipe)
    rows = torch.cat([torch.zeros(batch, *shape), bank["c0"].delta().expand(batch, *shape)]).to(pipe.unet.dtype)
    hook = steering_hook(pipe.unet)
    hook.arm([WindowRows(0.0, 1.0, rows)])
    h = torch.randn(2 * batch, *shape, device=pipe.unet.device, dtype=pipe.unet.dtype)
    repeats = 2000
    began = time.perf_counter()
    for _ in range(repeats):
        hook.post_forward(pipe.unet.mid_block, h)
    per_call = (time.perf_counter() - began) / repeats
    hook.disarm()
    release_hook(pipe.unet)
    assert not has_hook(pipe.unet)
    return {"calls": calls["n"], "seconds_per_call": per_call, "seconds_per_generation": calls["n"] * per_call}


def _timed_calls(pipe, seeds, steps: int) -> float:
    import torch

    gens = [torch.Generator(pipe._execution_device).manual_seed(s) for s in seeds]
    began = time.perf_counter()
    pipe("a photo of a doctor", num_images_per_prompt=len(seeds), num_inference_steps=steps, guidance_scale=6.0,
         generator=gens, output_type="latent")
    if pipe._execution_device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - began


def bench_attach(pipe, batch: int, steps: int, repeats: int) -> dict[str, float]:
    """Plain calls of an unattached pipeline vs the same calls after `hsteer.attach(..., FairPolicy)`."""
    import hsteer
    from hsteer.generation import attachment_of

    bank = _random_bank(pipe, {"g": [f"c{i}" for i in range(batch)]})
    seeds = list(range(batch))
    _timed_calls(pipe, seeds, steps)  # warm-up
    times: dict[str, list[float]] = {"plain": [], "fair": []}
    for r in range(repeats):
        for name in (("plain", "fair") if r % 2 == 0 else ("fair", "plain")):
            if name == "fair":
                hsteer.attach(pipe, bank, hsteer.FairPolicy(("g",)))
            times[name].append(_timed_calls(pipe, seeds, steps))
            if name == "fair":
                distinct = len({d[0]["name"] for d in attachment_of(pipe).last})
                hsteer.detach(pipe)
    best = {k: min(v) for k, v in times.items()}
    return {"attach_fair_batch_ratio": best["plain"] / best["fair"],
            "attach_fair_batch_ratio_median": statistics.median(times["plain"]) / statistics.median(times["fair"]),
            "attach_fair_distinct_concepts": distinct}


def bench_compiled(pipe, batch: int, steps: int, repeats: int, backend: str) -> dict[str, float]:
    """Attach, then torch.compile the U-Net: plain vs steered calls, and a concept swap (no recompilation).

    `pipe` is consumed (its U-Net stays compiled and hooked): pass a pipeline of its own."""
    import torch

    import hsteer

    compiled = {"graphs": 0}
    inner = torch._dynamo.lookup_backend(backend)

    def counting(gm, example_inputs):
        compiled["graphs"] += 1
        return inner(gm, example_inputs)

    bank = _random_bank(pipe, {"g": ["c0", "c1"]})
    steered, other, plain = (hsteer.ConceptPolicy((("c0", 1.0),)), hsteer.ConceptPolicy((("c1", 1.0),)),
                             hsteer.PlainPolicy())
    hsteer.attach(pipe, bank, steered)
    pipe.unet = torch.compile(pipe.unet, backend=counting)
    seeds = list(range(batch))
    for policy in (plain, steered):  # warm-up: both graphs compiled
        hsteer.attach(pipe, bank, policy)
        _timed_calls(pipe, seeds, steps)
    times: dict[str, list[float]] = {"plain": [], "steered": []}
    for r in range(repeats):
        for name in (("plain", "steered") if r % 2 == 0 else ("steered", "plain")):
            hsteer.attach(pipe, bank, plain if name == "plain" else steered)
            times[name].append(_timed_calls(pipe, seeds, steps))
    graphs = compiled["graphs"]
    began = time.perf_counter()
    hsteer.attach(pipe, bank, other)
    swap = time.perf_counter() - began
    first = _timed_calls(pipe, seeds, steps)
    best = {k: min(v) for k, v in times.items()}
    return {"compiled_steer_overhead": best["steered"] / best["plain"],
            "compiled_steer_overhead_median": statistics.median(times["steered"]) / statistics.median(times["plain"]),
            "compiled_swap_seconds": swap, "compiled_swap_recompilations": compiled["graphs"] - graphs,
            "compiled_swap_first_call_ratio": first / best["steered"], "compiled_graphs": graphs,
            "compile_backend": backend, "compiled_plain_seconds": best["plain"]}


def bench_memory(pipe, batch: int = 8) -> dict[str, float]:
    """Memory autograd keeps for backward in one CoDSMa step: ours, ours with gradient checkpointing,
    and a backward through the whole U-Net.

    Counted as the distinct storages the graph holds (saved tensors, and the inputs a checkpointed
    block keeps for its recomputation), so a tensor saved by two ops counts once.
    """
    import torch
    import torch.utils.checkpoint

    from hsteer import objectives
    from hsteer.model import pipeline_hspace_shape
    from hsteer.model.diffusion import DDIMSchedule, encode_text

    unet = pipe.unet
    unet.requires_grad_(False)
    device, dtype = unet.device, unet.dtype
    schedule = DDIMSchedule(pipe.scheduler, 20, device)
    B = batch
    y = encode_text(pipe, ["a photo of a figure"]).expand(B)
    size = unet.config.sample_size
    t = schedule.timesteps[torch.arange(B, device=device) % 20]
    c = torch.nn.Parameter(torch.zeros(pipeline_hspace_shape(pipe), device=device))
    target = torch.zeros(B, unet.config.in_channels, size, size, device=device)

    def held_bytes(z_t, checkpointing: bool) -> int:
        seen: dict[int, int] = {}

        def hold(tensor):
            storage = tensor.untyped_storage()
            seen.setdefault(storage.data_ptr(), storage.nbytes())
            return tensor

        def counting_checkpoint(module, *args):
            if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
                for a in args:  # the inputs stay alive until the recomputation in backward
                    if isinstance(a, torch.Tensor):
                        hold(a)
            return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

        if checkpointing:
            unet.enable_gradient_checkpointing(counting_checkpoint)
        try:
            with torch.autograd.graph.saved_tensors_hooks(hold, lambda x: x):
                loss = objectives.codsma_loss(objectives.eps(unet, schedule, z_t, t, y, c), target)
            loss.backward()
        finally:
            if checkpointing:
                unet.disable_gradient_checkpointing()
        return sum(seen.values())

    z = torch.randn(B, unet.config.in_channels, size, size, device=device, dtype=dtype)
    cuda = device.type == "cuda"
    peaks = {}

    def measured(name: str, z_t, checkpointing: bool) -> int:
        if cuda:  # on a GPU, the allocator's peak too
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        held = held_bytes(z_t, checkpointing)
        if cuda:
            peaks[f"peak_bytes_{name}"] = torch.cuda.max_memory_allocated(device) - base
        return held

    ours = measured("ours", z, checkpointing=False)
    checkpointed = measured("checkpointed", z, checkpointing=True)
    full = measured("full_unet", z.clone().requires_grad_(True), checkpointing=False)  # spans down + mid blocks
    return {"saved_bytes_ours": ours, "saved_bytes_checkpointed": checkpointed, "saved_bytes_full_unet": full,
            "memory_ratio": ours / full, "memory_ratio_checkpointed": checkpointed / full, "batch": B, **peaks}


def bench_train_throughput(pipe, steps: int, iterations: int) -> dict[str, dict[str, float]]:
    """Steady-state training speed of each mode on any model (no evaluation): iterations/s and training
    signals (samples) per second, timed between iterations after the first two (warm-up, trajectory pool)."""
    from hsteer.training import CodsmaConfig, train_concept

    out = {}
    for name, mode, batch, checkpointing in (("fast", "fast", 8, False), ("fast_checkpointed", "fast", 8, True),
                                             ("reference", "reference", 1, False)):
        stamps: list[float] = []
        config = CodsmaConfig(concept="c", group="g", neutral="a photo of a person", target="a photo of a woman",
                              mode=mode, iterations=iterations + 2, batch_size=batch, steps=steps, seed=0)
        train_concept(pipe, config, progress=False, checkpoint_activations=checkpointing,
                      callback=lambda it, row, stamps=stamps: stamps.append(time.perf_counter()))
        per_iteration = (stamps[-1] - stamps[1]) / (len(stamps) - 2)
        out[name] = {"iterations_per_second": 1 / per_iteration, "signals_per_second": batch / per_iteration,
                     "batch": batch, "steps": steps}
    out["signals_per_second_ratio"] = out["fast"]["signals_per_second"] / out["reference"]["signals_per_second"]
    out["checkpointing_slowdown"] = (out["fast"]["iterations_per_second"]
                                     / out["fast_checkpointed"]["iterations_per_second"])
    return out


def _sweeps(args) -> dict:
    """The learning-rate sweeps this run makes: per-concept fast mode only when asked (it is informative)."""
    sweeps = QUICK_SWEEPS if args.quick else SWEEPS
    return sweeps if args.per_concept_sweep or args.quick else {k: v for k, v in sweeps.items() if k != "fast"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Smoke sizes (CI).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.add_argument("--model", default=None, help="Default: the bundled world model.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="e.g. cuda (the ratios are then GPU figures).")
    parser.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 weights.")
    parser.add_argument("--train-throughput", action="store_true",
                        help="Also time training iterations/s of both modes (any model; 50-step schedule).")
    parser.add_argument("--eval-images", type=int, default=48,
                        help="Images per profession in the training benchmark's quality evaluation.")
    parser.add_argument("--agreement-target", type=float, default=0.90,
                        help="Also require this same-seed colour agreement with plain images (0: do not).")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend of the compiled benchmarks (default: inductor on CUDA, else eager).")
    parser.add_argument("--skip-compile", action="store_true", help="No compiled-pipeline benchmarks.")
    parser.add_argument("--skip-equal-lr", action="store_true",
                        help="Do not also time the reference at the fast mode's learning rate.")
    parser.add_argument("--per-concept-sweep", action="store_true",
                        help="Also sweep the fast mode training each concept on its own (train_speedup_best_per_concept; "
                             "about 4 more minutes).")
    parser.add_argument("--skip-sweep", action="store_true",
                        help="No learning-rate sweeps (train_speedup_best, train_speedup_best_per_concept).")
    parser.add_argument("--skip-training", action="store_true",
                        help="Generation and memory only (the training benchmark needs the world model's probes).")
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    import torch

    from hsteer.model import load_pipeline

    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    pipe._hsteer_model = args.model
    machine = f"{os.cpu_count()} CPU cores, torch {torch.__version__}, threads {args.threads}"
    if pipe.unet.device.type == "cuda":
        machine += f", {torch.cuda.get_device_name(pipe.unet.device)}, {args.dtype}"
    results: dict = {"machine": machine,
                     "quick": args.quick}
    if args.quick:
        results.update(bench_generation(pipe, batch=4, steps=4, repeats=2))
    else:
        results.update(bench_generation(pipe, batch=16, steps=20, repeats=9))
    size = dict(batch=4, steps=4, repeats=2) if args.quick else dict(batch=16, steps=20, repeats=9)
    results.update(bench_attach(pipe, **size))
    if not args.skip_compile:
        backend = args.compile_backend or ("inductor" if pipe.unet.device.type == "cuda" else "eager")
        own = load_pipeline(args.model, device=args.device, dtype=args.dtype)  # compiled and hooked for good
        results.update(bench_compiled(own, backend=backend, **size))
        del own
    results["train_memory"] = bench_memory(pipe)
    if args.train_throughput:
        results["train_throughput"] = bench_train_throughput(pipe, steps=4 if args.quick else 50,
                                                             iterations=2 if args.quick else 10)
    if not args.skip_training:
        with tempfile.TemporaryDirectory() as tmp:
            arms = QUICK_ARMS if args.quick else ARMS
            if args.skip_equal_lr:
                arms = {k: v for k, v in arms.items() if k != "reference_fast_lr"}
            results.update(bench_training(pipe, arms, images=2 if args.quick else args.eval_images,
                                          workdir=Path(tmp), seeds=(0,) if args.quick else (0, 1, 2),
                                          agreement_target=args.agreement_target or None,
                                          sweeps=None if args.skip_sweep else _sweeps(args)))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
