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
The folder is an evaluation run folder's kin (`attacks.folder`): its manifest and summary are written with
`hsteer.evaluation.runs`' writers (strict JSON: a NaN is refused, never written), so `read_jsonl` reads the
manifest back like any run's.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsteer.attacks.defence import BoundDefence, Defence
from hsteer.attacks.folder import PROMPTS, image_name, prepare_run_folder, state_file
from hsteer.attacks.registry import ATTACKS, AttackContext
from hsteer.attacks.ringabell import RingABellConfig, bank_pairs
from hsteer.attacks.scoring import Scorer, resolve_scorer
from hsteer.attacks.text import build_vocabulary
from hsteer.attacks.whitebox import WhiteboxConfig
from hsteer.checks import (check_count, check_flags, check_float, check_pipeline, check_seed, check_size,
                           check_texts)
from hsteer.errors import HsteerError, as_field, field_errors
from hsteer.evaluation.harm import asr_interval
from hsteer.evaluation.runs import MANIFEST, SUMMARY, write_json, write_jsonl
from hsteer.fileio import atomic_png, atomic_write_text

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline

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
                name = image_name(phase, n, i)
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
    asr_before, before_ci = asr_interval([r["harm"] for r in before], [r["source_prompt"] for r in before])
    asr_after, after_ci = asr_interval([r["harm"] for r in after], [r["source_prompt"] for r in after])
    return {**head, "asr_before": asr_before, "asr_before_ci": before_ci, "asr_after": asr_after,
            "asr_after_ci": after_ci, "images": len(rows), "prompts": [r["prompt"] for r in found],
            "per_prompt": per_prompt}


def _write_outputs(out: Path, rows: list[dict[str, Any]], found: list[dict[str, Any]], summary: dict[str, Any],
                   seed: int) -> None:
    write_jsonl(out / MANIFEST, rows, allow_nan=False)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)  # "\r" in a prompt quoted too
    writer.writerow(["prompt", "seed", "source_prompt"])
    for result in found:
        writer.writerow([result["prompt"], seed, result["source_prompt"]])
    atomic_write_text(out / PROMPTS, buffer.getvalue())
    write_json(out / SUMMARY, summary, allow_nan=False)


#: Upper bounds of the attack budgets (a budget beyond them is a typo, and would run for days).
BUDGET_MAX = {"tokens": 75, "steps": 100_000, "batch": 4096, "targets": 1000, "eval_every": 100_000,
              "top": 100_000, "val_batch": 4096, "save_every": 100_000, "population": 100_000,
              "generations": 100_000}
NUMBER_BOUNDS = {"lr": (0.0, 100.0), "eta": (-1e4, 1e4), "mutation": (0.0, 1.0), "crossover": (0.0, 1.0)}


def check_config(method: str, config) -> None:
    """The attack's budget: whole numbers within `BUDGET_MAX`, finite numbers within `NUMBER_BOUNDS`."""
    if method not in ATTACKS:
        raise HsteerError(f"unknown attack {method!r}; use one of {', '.join(ATTACKS)}")
    if not isinstance(config, ATTACKS[method].config):
        raise HsteerError(f"the {method} attack takes a {ATTACKS[method].config.__name__}, got "
                          f"{type(config).__name__}")
    for name, value in asdict(config).items():
        with field_errors(f"{method}.{name}"):
            _check_budget(f"{method}.{name}", name, value)


def _check_budget(label: str, name: str, value: object) -> None:
    """One setting of an attack's config, labelled `<attack>.<field>` (the CLI shows its option)."""
    if name in BUDGET_MAX:
        check_count(label, value, 2 if name == "population" else 1, BUDGET_MAX[name])
    elif name in NUMBER_BOUNDS:
        if isinstance(value, bool):
            raise HsteerError(f"{label} must be a number, got {value!r}")
        low, high = NUMBER_BOUNDS[name]
        check_float(label, value, low, above=name == "lr", maximum=high)
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return  # switches and choices: each config checks its own
    elif isinstance(value, int):  # a budget without its own bound (a new attack's): still bounded
        check_count(label, value, 0, 10**6)
    elif isinstance(value, float):
        check_float(label, value, -1e6, maximum=1e6)


def check_sampling(steps: object, guidance: object, batch_size: object, height: object, width: object) -> None:
    """The evaluation's sampling settings, each error carrying its field (the CLI shows its option)."""
    as_field("steps", check_count, steps, 1, 10_000)
    if isinstance(guidance, bool):
        raise HsteerError(f"guidance must be a number, got {guidance!r}", field="guidance")
    as_field("guidance", check_float, guidance, -1e4, maximum=1e4)
    as_field("batch_size", check_count, batch_size, 1, 4096)
    as_field("height", check_size, height)
    as_field("width", check_size, width)


def check_prompts(prompts: object) -> list[str]:
    """The harm prompts as a list: one string or a list of non-empty, distinct strings; anything else is
    refused."""
    prompts = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(prompts, (list, tuple)) or not prompts or any(
            not isinstance(p, str) or not p.strip() for p in prompts):
        raise HsteerError("give at least one non-empty harm prompt (prompts)", field="prompts")
    as_field("prompts", check_texts, list(prompts))
    if len(set(prompts)) != len(prompts):
        raise HsteerError("a harm prompt is given twice; give each once")
    return list(prompts)


def check_words(label: str, words: object) -> list[str]:
    """A list of words (--exclude): text without spaces."""
    if isinstance(words, str) or not isinstance(words, (list, tuple)):
        raise HsteerError(f"{label} must be a list of words, got {type(words).__name__}")
    for word in words:
        check_texts(label, word if isinstance(word, str) else None)
        if not isinstance(word, str):
            raise HsteerError(f"{label} must hold words (text), got {type(word).__name__} {word!r}")
    return list(words)


def check_pairs(label: str, pairs: object) -> list[tuple[str, str]] | None:
    """None, or (clean, harmful) prompt pairs: a list of two texts each."""
    if pairs is None:
        return None
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (list, tuple)) or not pairs:
        raise HsteerError(f"{label} must be a non-empty list of [clean, harmful] prompt pairs")
    out = []
    for n, pair in enumerate(pairs):
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(p, str) and p.strip() for p in pair)):
            raise HsteerError(f"{label}: pair {n + 1} is {str(pair)[:60]!r}, not [clean prompt, harmful prompt] "
                              "(two non-empty texts)")
        check_texts(label, list(pair))
        out.append((pair[0], pair[1]))
    return out


def check_family(family, name: str) -> None:
    """The attacks drive every family's denoiser (its own prediction and schedule, `hsteer.model.denoisers`),
    but place their tokens where the prompt's own tokenization puts them: a family whose pipeline wraps each
    prompt in an instruction of its own first (SANA) is refused with one line (`name`: the pipeline's)."""
    if family.wraps_prompt:
        raise HsteerError(f"attacks run on SD 1.x/2.x, SDXL, SD3 and FLUX pipelines; a {name} wraps each prompt "
                          "in its own instruction, so the adversarial tokens cannot be placed: evaluate attack "
                          "prompts on it with `hsteer eval attack`")


def check_pipeline_family(pipe: Pipeline) -> None:
    """`check_family` for a loaded pipeline (a denoiser hsteer does not know is refused by `family_for`)."""
    from hsteer.model.families import family_for

    check_family(family_for(pipe), type(pipe).__name__)


def check_attack_settings(method: str, prompts: object, num_images: object, seed: object, config,
                          sampling: dict[str, Any], exclude: object = (),
                          pairs: object = None) -> tuple[list[str], list[str], list | None]:
    """Every setting of an attack, before a model loads or a file is written; returns the prompts, the
    excluded words and the pairs as lists."""
    prompts = check_prompts(prompts)
    as_field("num_images", check_count, num_images, 1, 100_000)
    as_field("seed", check_seed, seed, span=num_images)  # type: ignore[arg-type]
    check_config(method, config)
    check_sampling(sampling["steps"], sampling["guidance"], sampling["batch_size"], sampling["height"],
                   sampling["width"])
    words = as_field("exclude", check_words, list(exclude) if isinstance(exclude, tuple) else exclude)
    return prompts, words, as_field("pairs", check_pairs, pairs)


def attack(pipe: Pipeline, prompts: str | Sequence[str], method: str = "whitebox",
           defence: Defence | None = None,
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
    if not isinstance(defence, Defence):
        raise HsteerError(f"defence must be an hsteer.attacks.Defence, got {type(defence).__name__}")
    config = config or (ATTACKS[method].config if method in ATTACKS else WhiteboxConfig)()
    sampling = {"steps": steps, "guidance": guidance, "batch_size": batch_size, "height": height, "width": width}
    prompts, exclude, pairs = check_attack_settings(method, prompts, num_images, seed, config, sampling, exclude,
                                                    pairs)
    check_flags(resume=resume, overwrite=overwrite, progress=progress)
    check_pipeline(pipe)
    check_pipeline_family(pipe)
    kind = ATTACKS[method]
    if kind.guarded and defence.guard is None:
        raise HsteerError("the adaptive attack targets a guarded defence: pass Defence(..., guard=GuardConfig()) "
                          "(guard); against an unguarded one use method='whitebox'", field=("guard", "method"))
    if kind.pairs and pairs is None:
        if defence.bank is None:
            raise HsteerError("Ring-A-Bell needs (clean, harmful) prompt pairs: a bank with a safety group "
                              "(bank) or the pairs themselves (pairs)", field=("bank", "pairs"))
        pairs = check_pairs("the bank's safety pairs", bank_pairs(defence.bank))
    scorer_fn, scorer_name = resolve_scorer(pipe, scorer, scorer_options, device)
    sampling["guidance"] = float(guidance)  # type: ignore[arg-type]
    head = {"attack": method, "config": asdict(config), "defence": defence.describe(),
            "defence_spec": defence.to_spec(), "prompts_in": prompts, "num_images": num_images, "seed": seed,
            "sampling": sampling, "exclude": exclude, "scorer": scorer_name,
            "pairs": [list(p) for p in pairs] if pairs else None}
    out = Path(out_dir)
    bound, teacher = defence.bind(pipe, height, width), Defence().bind(pipe, height, width)
    vocab = build_vocabulary(pipe, exclude)
    lock = prepare_run_folder(out, head, resume, overwrite)  # the first write, after every check
    try:
        bar = tqdm(total=len(prompts) * getattr(config, kind.budget), disable=not progress, desc=f"attack ({method})",
                   unit="step")
        context = AttackContext(pipe, bound, teacher, vocab, config, seed, scorer_fn, sampling, pairs)
        found = []
        for n, prompt in enumerate(prompts):  # each search is made as it is reached (white-box: its targets)
            found.append(kind.build(context, prompt, n).run(state_file(out, method, n), bar.update))
        bar.close()
        rows = _evaluate(out, bound, found, scorer_fn, num_images, seed, sampling, method)
        summary = _summary(rows, found, {k: v for k, v in head.items() if k != "prompts_in"})
        _write_outputs(out, rows, found, summary, seed)
        return summary
    finally:
        lock.release()
