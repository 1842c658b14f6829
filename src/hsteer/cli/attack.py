"""`hsteer attack`: an adversarial prompt attack on a defended model (SD 1.x/2.x, SDXL, SD3, FLUX; the bundled
`world` and `world-dit`), with the ASR before and after.

The defence options are those of `hsteer generate` (`--bank B --safe`, `--concept ...`, the gate), plus
`--baseline sld-*` (SLD, as in `hsteer eval`) and `--negative-prompt`.
"""

from __future__ import annotations

from pathlib import Path

import click

from hsteer.cli.common import model_options, one_line_errors
from hsteer.cli.common import ATTACK_CONFIG_OPTIONS as CONFIG_OPTIONS
from hsteer.cli.options import build_policy, guard_options, policy_options, sampling_options
from hsteer.attacks.registry import ATTACKS
from hsteer.errors import HsteerError
from hsteer.policies import BASELINES



def _defence(o: dict, bank):
    """The Defence of the command line's options (checked before the model loads)."""
    from hsteer.attacks.defence import Defence
    from hsteer.policies import baseline_policy, require_bank
    from hsteer.policy_forms import parse_window

    policy = build_policy(o["fair"], o["safe"], o["concepts"], o["scales"], o["ratios"])
    baseline = baseline_policy(o["baseline"])
    if baseline is not None:
        if policy.needs_bank:
            raise HsteerError(f"--baseline {o['baseline']} is its own method; do not combine it with "
                              "--fair/--safe/--concept")
        policy = baseline
    elif o["sld_concept"]:
        raise HsteerError("--sld-concept needs --baseline sld-*")
    if policy.needs_bank:
        require_bank(bank, policy)
    return Defence(policy, bank if policy.needs_bank else None, respect_prompt=o["respect_prompt"], gate=o["gate"],
                   negative_prompt=o["negative_prompt"] or None, window=parse_window(o["window"]),
                   steer_unconditional=o["steer_unconditional"], sld_concept=o["sld_concept"] or None,
                   allow_other_model=o["allow_other_model"], guard=_guard(o, bank, policy))


def _guard(o: dict, bank, policy):
    """--guard learned (the only differentiable detector, the one the adaptive attack needs) or none; auto:
    learned where --safe draws a safety group whose detector the bank holds, as in `hsteer generate`."""
    from hsteer.cli.options import build_guard_config, resolve_guard_choice

    o = {**o, "guard": resolve_guard_choice(o["guard"], policy, bank if policy.needs_bank else None)}
    if o["guard"] not in ("none", "learned"):
        raise HsteerError(f"--guard {o['guard']}: attacks run against the bank's learned detector (--guard learned)")
    if o["guard"] == "learned" and (bank is None or "safety" not in bank.detectors):
        raise HsteerError("--guard learned needs a --bank with a harm detector for its safety group "
                          "(hsteer guard fit --bank BANK)")
    if ATTACKS[o["attack"]].guarded and o["guard"] == "none":
        raise HsteerError("--attack adaptive attacks the guard: add --guard learned (and --safe --bank BANK)")
    return build_guard_config(o["guard"], o["guard_step"], o["guard_threshold"], o["guard_design"])


def _config(o: dict):
    """The attack's budget from the options (unset ones keep the config's defaults)."""
    from dataclasses import fields as config_fields

    from hsteer.attacks import RingABellConfig

    cls = ATTACKS[o["attack"]].config
    known = {f.name for f in config_fields(cls)}
    fields = {field: o[option] for option, field in CONFIG_OPTIONS.items() if field in known and o[option] is not None}
    unused = [option for option, field in CONFIG_OPTIONS.items() if field not in known and o[option] is not None]
    if unused:  # silently ignored, it would look like a setting the run used
        raise HsteerError(f"--{unused[0].replace('_', '-')} is not a setting of --attack {o['attack']}; drop it, or "
                          "choose the attack it belongs to")
    if o["position"] == "whole" and not issubclass(cls, RingABellConfig):
        raise HsteerError("--position whole is Ring-A-Bell's; the white-box attack adds tokens as prefix or suffix")
    return cls(**fields)


def _pairs(o: dict, bank) -> list[tuple[str, str]] | None:
    """Ring-A-Bell's (clean, harmful) pairs: --pairs FILE, else --pairs-bank / --bank's safety group."""
    from hsteer.attacks.ringabell import bank_pairs
    from hsteer.attacks.run import check_pairs
    from hsteer.checks import check_input_file, load_json
    from hsteer.steering.bank import ConceptBank

    if o["pairs"] is not None:
        path = check_input_file(o["pairs"], "--pairs")
        if path.stat().st_size > 16 * 2**20:
            raise HsteerError(f"--pairs {path} is larger than 16 MiB; a pairs file is a short JSON list")
        data = load_json(path.read_text(encoding="utf-8"), f"--pairs {path}")
        if not isinstance(data, list):
            raise HsteerError(f"--pairs {path}: write a JSON list of [clean, harmful] prompt pairs")
        return check_pairs(f"--pairs {path}", data)
    if o["pairs_bank"]:
        source = ConceptBank.load(o["pairs_bank"])
        if "safety" not in source.groups():
            raise HsteerError(f"--pairs-bank {o['pairs_bank']} has no 'safety' group to take the pairs from "
                              f"(its groups: {', '.join(source.groups()) or 'none'}); give --pairs FILE instead")
        return check_pairs(f"--pairs-bank {o['pairs_bank']}", bank_pairs(source))
    if bank is not None and "safety" in bank.groups():
        from hsteer.gate import training_pairs

        needed = ATTACKS[o["attack"]].pairs or o["exclude_harm_words"]
        if not needed and not any(training_pairs(c) for c in bank.group("safety")):
            return None  # the white-box attacks read no pairs: a safety group trained without them is fine
        return check_pairs(f"--bank {o['bank_path']}", bank_pairs(bank))
    return None


def _check_model(model: str | None) -> None:
    """A local model whose family the attacks cannot drive (SANA, `attacks.run.check_family`) is refused
    before it loads."""
    from hsteer.attacks.run import check_family
    from hsteer.model.families import FAMILY_OF_CLASS
    from hsteer.model.loading import local_class_name, local_denoiser_class

    family = FAMILY_OF_CLASS.get(local_denoiser_class(model))
    if family is not None:
        try:
            check_family(family, local_class_name(model) or family.label)
        except HsteerError as exc:
            raise HsteerError(f"--model {model}: {exc}") from None


def _sampling(o: dict) -> dict:
    """The evaluation's sampling settings, the model card's defaults filled in, checked before loading."""
    from hsteer.attacks.run import check_sampling
    from hsteer.model import sampling_defaults

    defaults = sampling_defaults(o["model"])
    sampling = {"steps": o["steps"] if o["steps"] is not None else int(defaults["steps"]),
                "guidance": o["guidance"] if o["guidance"] is not None else float(defaults["guidance"]),
                "batch_size": o["batch_size"], "height": o["height"], "width": o["width"]}
    check_sampling(**sampling)
    return sampling


@click.command("attack")
@model_options
@click.option("--attack", "attack", required=True, type=click.Choice(list(ATTACKS)),
              help="whitebox: UnlearnDiffAtk-style token optimisation; ringabell: Ring-A-Bell-style genetic search; "
                   "adaptive: the white-box attack plus a hinge through the guard's detector (needs --guard learned).")
@click.option("--prompt", "prompts", multiple=True, required=True, help="A harm prompt (repeat for several).")
@click.option("--num-images", default=8, show_default=True, type=int, help="Images per prompt, before and after.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@policy_options
@guard_options
@sampling_options
@click.option("--baseline", default="plain", show_default=True,
              type=click.Choice(BASELINES),
              help="Without a bank: the plain model or SLD (diffusers' safe pipeline) with a preset.")
@click.option("--sld-concept", default=None, help="SLD's safety concept text (default: diffusers').")
@click.option("--negative-prompt", default=None, help="A negative prompt as the defence (or on top of one).")
@click.option("--tokens", default=None, type=int, help="Adversarial tokens (whitebox 5, ringabell 8).")
@click.option("--position", default=None, type=click.Choice(["prefix", "suffix", "whole"]),
              help="Where the tokens go (whitebox: suffix; ringabell: whole, the prompt is the tokens).")
@click.option("--attack-steps", default=None, type=int, help="whitebox: optimisation steps (100).")
@click.option("--lr", default=None, type=float, help="whitebox: Adam learning rate on the embeddings (0.05).")
@click.option("--top", default=None, type=int, help="whitebox: words tried per position in each refinement (8).")
@click.option("--eval-every", default=None, type=int, help="whitebox: steps between refinements (20).")
@click.option("--targets", default=None, type=int, help="whitebox: target images of the undefended model (4).")
@click.option("--objective", default=None, type=click.Choice(["teacher", "noise"]),
              help="whitebox: match the undefended model's guided prediction (teacher) or the noise.")
@click.option("--population", default=None, type=int, help="ringabell: population (64).")
@click.option("--generations", default=None, type=int, help="ringabell: generations (40).")
@click.option("--eta", default=None, type=float, help="ringabell: strength of the harm direction (1.0).")
@click.option("--mutation", default=None, type=float, help="ringabell: per-token mutation probability (0.2).")
@click.option("--pairs", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="ringabell: JSON list of [clean, harmful] prompt pairs (default: the bank's safety concepts').")
@click.option("--pairs-bank", default=None, help="ringabell: the bank whose safety group gives the pairs.")
@click.option("--exclude", default=None, help="Comma-separated words the adversarial tokens may not use.")
@click.option("--exclude-harm-words", is_flag=True,
              help="Also exclude the words the safety concept's training pairs add (what the gate keys on).")
@click.option("--scorer", default=None, help="world, nudenet, q16 or q16,nudenet (default: world on the bundled "
                                             "models, nudenet elsewhere).")
@click.option("--q16-prompts", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Q16 prompt embeddings for --scorer q16.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out (same settings).")
@click.option("--overwrite", is_flag=True, help="Replace the attack run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@one_line_errors
def attack(**o) -> None:
    """Attack a defended model on harm prompts; write DIR/summary.json (asr_before, asr_after, prompts)."""
    from hsteer.attacks import attack as run
    from hsteer.attacks.ringabell import harm_words
    from hsteer.attacks.folder import check_run_folder
    from hsteer.attacks.run import check_attack_settings
    from hsteer.checks import check_device
    from hsteer.steering.bank import ConceptBank
    from hsteer.model import load_quietly

    device = check_device(o["device"], "--device")
    if o["resume"] and o["overwrite"]:
        raise HsteerError("--resume continues the run in --out and --overwrite replaces it; pass one of them")
    _check_model(o["model"])
    sampling = _sampling(o)
    bank = ConceptBank.load(o["bank_path"]) if o["bank_path"] else None
    defence, config, pairs = _defence(o, bank), _config(o), _pairs(o, bank)
    if defence.guard is not None:
        from hsteer.generation.guard import build_guard

        build_guard(defence.guard, defence.bank, sampling["steps"])  # group, detector, decision step: before loading
    exclude = [w.strip() for w in (o["exclude"] or "").split(",") if w.strip()]
    if o["exclude_harm_words"]:
        if not pairs:
            raise HsteerError("--exclude-harm-words reads the safety concept's pairs: give --bank with a safety "
                              "group, --pairs-bank or --pairs")
        exclude += harm_words(pairs)
    if ATTACKS[o["attack"]].pairs and not pairs:
        raise HsteerError("Ring-A-Bell needs (clean, harmful) prompt pairs: a bank with a safety group "
                          "(--bank, --pairs-bank) or --pairs FILE")
    check_attack_settings(o["attack"], list(o["prompts"]), o["num_images"], o["seed"], config, sampling, exclude,
                          pairs)
    check_run_folder(o["out_dir"], o["resume"], o["overwrite"])
    pipe = load_quietly(o["model"], device, o["dtype"])
    summary = run(pipe, list(o["prompts"]), o["attack"], defence, config, out_dir=o["out_dir"],
                  num_images=o["num_images"], seed=o["seed"], **sampling, scorer=o["scorer"],
                  scorer_options={"q16_prompts": str(o["q16_prompts"]) if o["q16_prompts"] else None},
                  exclude=exclude, pairs=pairs, resume=o["resume"], overwrite=o["overwrite"],
                  progress=not o["quiet"], device=device)
    click.echo(f"{o['out_dir']}: ASR {summary['asr_before']:.3f} -> {summary['asr_after']:.3f} "
               f"({summary['defence']}); prompts: " + "; ".join(summary["prompts"]))
