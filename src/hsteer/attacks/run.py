"""`attack()`: one attack run on a defended pipeline, from harm prompts to a folder of figures.

The run folder `DIR`:

- `config.json`: the attack, its settings, the defence, the prompts and the evaluation seeds (a resumed run
  must match it);
- `state/`: each prompt's resumable attack state (`attacks.state`);
- `images/`: `before-PPP-NNN.png` (the defended model on harm prompt PPP, image NNN) and
  `after-PPP-NNN.png` (on the adversarial prompt found for it), the same seeds before and after;
- `manifest.jsonl`: one line per image: file, phase, prompt, source prompt, seed, concepts drawn (and the
  gate's reasons), harm flag;
- `prompts.csv`: the adversarial prompts with their seeds (columns prompt, seed, source_prompt), the format
  `hsteer eval attack --prompts` reads;
- `summary.json`: `asr_before` and `asr_after` (share of images the scorer flags, with 95% bootstrap
  intervals stratified by harm prompt), per-prompt rates, `prompts` (the adversarial prompts), the budget
  spent.

Evaluation is deterministic, so a resumed run remakes its images rather than trusting half-written ones.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hsteer.attacks.defence import BoundDefence, Defence
from hsteer.attacks.ringabell import RingABellConfig, RingABellSearch, bank_pairs, harm_direction
from hsteer.attacks.scoring import Scorer, resolve_scorer
from hsteer.attacks.text import build_vocabulary
from hsteer.attacks.whitebox import WhiteboxAttack, WhiteboxConfig
from hsteer.checks import check_count, check_output_dir, check_seed, check_texts
from hsteer.errors import HsteerError
from hsteer.fileio import FolderLock, atomic_png, atomic_write_text

ATTACKS = ("whitebox", "ringabell")
CONFIGS = {"whitebox": WhiteboxConfig, "ringabell": RingABellConfig}


def _interval(flags: Sequence[bool], strata: Sequence[str]) -> dict[str, Any]:
    from hsteer.evaluation.metrics import Bootstrap, share_statistic

    boot = Bootstrap(list(strata))
    stat = share_statistic(list(flags))
    return {"value": boot.point(stat), "ci": boot.interval(stat)}


def _prepare(out: Path, config: dict[str, Any], resume: bool, overwrite: bool) -> FolderLock:
    """Lock the folder; refuse another run's folder; on resume, refuse changed settings."""
    check_output_dir(out, "--out")
    lock = FolderLock(out, f"{out} is in use by another hsteer run; wait for it or use another --out")
    stored = out / "config.json"
    if stored.exists() and not (resume or overwrite):
        lock.release()
        raise HsteerError(f"{out} already holds an attack run; pass --resume to continue it or --overwrite")
    if stored.exists() and resume and json.loads(stored.read_text(encoding="utf-8")) != config:
        lock.release()
        raise HsteerError(f"{out} holds an attack run with other settings; resume it with the same command, or "
                          "use another --out")
    if overwrite:
        for sub, pattern in (("state", "*"), ("images", "*.png")):
            for path in (out / sub).glob(pattern) if (out / sub).is_dir() else ():
                path.unlink()
    atomic_write_text(stored, json.dumps(config, indent=2, allow_nan=False))
    return lock


def _searches(method: str, pipe, vocab, prompts, config, seed: int, defence: BoundDefence,
              teacher: BoundDefence, scorer, pairs, sampling: dict[str, Any]):
    """One search object per prompt, made as each is reached (the white-box one makes its targets)."""
    if method == "ringabell":
        direction = harm_direction(pipe, pairs)
        for n, prompt in enumerate(prompts):
            yield RingABellSearch(pipe, vocab, prompt, direction, config, seed=seed, index=n)
        return
    for n, prompt in enumerate(prompts):
        yield WhiteboxAttack(defence, teacher, vocab, prompt, config, seed=seed, index=n, scorer=scorer,
                             steps=sampling["steps"], guidance=sampling["guidance"])


def _evaluate(out: Path, defence: BoundDefence, found: list[dict[str, Any]], scorer: Scorer, num_images: int,
              seed: int, sampling: dict[str, Any], method: str) -> list[dict[str, Any]]:
    """The defended model's images of each harm prompt and of its adversarial prompt, scored and written."""
    rows = []
    for n, result in enumerate(found):
        for phase, prompt in (("before", result["source_prompt"]), ("after", result["prompt"])):
            made = defence.generate([(prompt, seed + i) for i in range(num_images)], steps=sampling["steps"],
                                    guidance=sampling["guidance"], batch_size=sampling["batch_size"])
            flags = scorer([image for _, image in made])
            for i, ((row, image), harmful) in enumerate(zip(made, flags)):
                name = f"images/{phase}-{n:03d}-{i:03d}.png"
                atomic_png(out / name, image)
                rows.append({**row, "file": name, "phase": phase, "source_prompt": result["source_prompt"],
                             "attack": method, "harm": bool(harmful)})
    return rows


def _summary(rows: list[dict[str, Any]], found: list[dict[str, Any]], head: dict[str, Any]) -> dict[str, Any]:
    before = [r for r in rows if r["phase"] == "before"]
    after = [r for r in rows if r["phase"] == "after"]
    per_prompt = []
    for result in found:
        src = result["source_prompt"]
        b = [r["harm"] for r in before if r["source_prompt"] == src]
        a = [r["harm"] for r in after if r["source_prompt"] == src]
        per_prompt.append({"source_prompt": src, "prompt": result["prompt"], "asr_before": sum(b) / len(b),
                           "asr_after": sum(a) / len(a),
                           **{k: v for k, v in result.items() if k not in ("prompt", "source_prompt", "losses",
                                                                           "history")}})
    b_ci = _interval([r["harm"] for r in before], [r["source_prompt"] for r in before])
    a_ci = _interval([r["harm"] for r in after], [r["source_prompt"] for r in after])
    return {**head, "asr_before": b_ci["value"], "asr_before_ci": b_ci["ci"], "asr_after": a_ci["value"],
            "asr_after_ci": a_ci["ci"], "images": len(rows), "prompts": [r["prompt"] for r in found],
            "per_prompt": per_prompt}


def _write_outputs(out: Path, rows: list[dict[str, Any]], found: list[dict[str, Any]], summary: dict[str, Any],
                   seed: int) -> None:
    atomic_write_text(out / "manifest.jsonl", "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["prompt", "seed", "source_prompt"])
    for result in found:
        writer.writerow([result["prompt"], seed, result["source_prompt"]])
    atomic_write_text(out / "prompts.csv", buffer.getvalue())
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False))


def _check(method: str, prompts: Sequence[str], num_images: int, seed: int, config) -> list[str]:
    if method not in ATTACKS:
        raise HsteerError(f"unknown attack {method!r}; use one of {', '.join(ATTACKS)}")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise HsteerError("give at least one non-empty harm prompt (--prompt P)")
    check_texts("a --prompt", prompts)
    if len(set(prompts)) != len(prompts):
        raise HsteerError("a harm prompt is given twice; give each once")
    check_count("--num-images", num_images, 1, 100_000)
    check_seed("--seed", seed, span=num_images)
    if not isinstance(config, CONFIGS[method]):
        raise HsteerError(f"the {method} attack takes a {CONFIGS[method].__name__}, got {type(config).__name__}")
    return prompts


def attack(pipe, prompts: str | Sequence[str], method: str = "whitebox", defence: Defence | None = None,
           config: WhiteboxConfig | RingABellConfig | None = None, *, out_dir: str | Path, num_images: int = 8,
           seed: int = 0, steps: int = 20, guidance: float = 4.0, batch_size: int = 8, height: int | None = None,
           width: int | None = None,
           scorer: str | Scorer | None = None, scorer_options: dict[str, Any] | None = None,
           exclude: Sequence[str] = (), pairs: Sequence[tuple[str, str]] | None = None, resume: bool = False,
           overwrite: bool = False, progress: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Attack `defence` (default: the plain model) on each harm prompt; write `out_dir`; return the summary.

    `config`: the attack's budget (`WhiteboxConfig` / `RingABellConfig`). `exclude`: words the adversarial
    tokens may not use (e.g. the harm words, to look for the gate's blind spot). `pairs`: Ring-A-Bell's
    (clean, harmful) prompt pairs (default: the training pairs of the defence bank's safety group).
    `scorer`: see `attacks.scoring.resolve_scorer`. The attack itself is seeded by `seed` too.
    """
    from tqdm.auto import tqdm

    defence = defence or Defence()
    config = config or CONFIGS.get(method, WhiteboxConfig)()
    prompts = _check(method, prompts, num_images, seed, config)
    if method == "ringabell" and pairs is None:
        if defence.bank is None:
            raise HsteerError("Ring-A-Bell needs (clean, harmful) prompt pairs: a bank with a safety group "
                              "(--bank, --pairs-bank) or --pairs FILE")
        pairs = bank_pairs(defence.bank)
    scorer_fn, scorer_name = resolve_scorer(pipe, scorer, scorer_options, device)
    sampling = {"steps": int(steps), "guidance": float(guidance), "batch_size": int(batch_size), "height": height,
                "width": width}
    head = {"attack": method, "config": asdict(config), "defence": defence.describe(),
            "defence_spec": defence.to_spec(), "prompts_in": prompts, "num_images": num_images, "seed": seed,
            "sampling": sampling, "exclude": list(exclude), "scorer": scorer_name,
            "pairs": [list(p) for p in pairs] if pairs else None}
    out = Path(out_dir)
    lock = _prepare(out, head, resume, overwrite)
    try:
        bound, teacher = defence.bind(pipe, height, width), Defence().bind(pipe, height, width)
        vocab = build_vocabulary(pipe, exclude)
        budget = config.steps if method == "whitebox" else config.generations
        bar = tqdm(total=len(prompts) * budget, disable=not progress, desc=f"attack ({method})", unit="step")
        found = []
        for n, search in enumerate(_searches(method, pipe, vocab, prompts, config, seed, bound, teacher,
                                             scorer_fn, pairs, sampling)):
            suffix = "safetensors" if method == "whitebox" else "json"
            found.append(search.run(out / "state" / f"{method}-{n:03d}.{suffix}", bar.update))
        bar.close()
        rows = _evaluate(out, bound, found, scorer_fn, num_images, seed, sampling, method)
        summary = _summary(rows, found, {k: v for k, v in head.items() if k != "prompts_in"})
        _write_outputs(out, rows, found, summary, seed)
        return summary
    finally:
        lock.release()
