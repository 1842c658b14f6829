"""`hsteer bank show|merge|card|push`: inspect, combine and publish concept banks.

Every BANK argument is a bank file, a folder, or a Hub repo: USER/REPO[:FILE][@REVISION].
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from hsteer.cli.common import one_line_errors

BANK_HELP = "Bank file or folder, or a Hub repo USER/REPO[:FILE][@REVISION]."


@click.group()
def bank() -> None:
    """Inspect, combine and publish concept banks (files, folders or Hub repos USER/REPO[:FILE][@REV])."""


@bank.command("show")
@click.argument("bank_path")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@one_line_errors
def bank_show(bank_path, as_json) -> None:
    """List a bank's concepts, groups, tensors, training settings and harm detectors."""
    from hsteer.steering.bank import ConceptBank
    from hsteer.steering.bankcheck import flag_nonfinite

    loaded = ConceptBank.load(bank_path)
    info = flag_nonfinite(loaded)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    if info["site"] == "mid_block":  # the U-Net's h-space (no other family has a mid-block site)
        click.echo(f"{bank_path}: h-space {tuple(info['hspace_shape'])}, U-Net {info['unet_fingerprint']}")
    else:
        click.echo(f"{bank_path}: site {info['site']} {tuple(info['hspace_shape'])} of a {info['family']} model "
                   f"{info['unet_fingerprint']}")
    detectors = info.get("detectors", {})
    last = {c["group"]: i for i, c in enumerate(info["concepts"])}  # a group's detector follows its last concept
    for i, (concept, c) in enumerate(zip(loaded, info["concepts"])):
        tensors = ", ".join(f"{k}{tuple(v)}" for k, v in c["tensors"].items())
        prompts = " ".join(f"{k}={c[k]!r}" for k in ("neutral", "target", "negative") if c.get(k))
        flag = f" NON-FINITE VALUES in {', '.join(c['nonfinite'])}" if c.get("nonfinite") else ""
        click.echo(f"  {c['group']}/{c['name']}: {c['objective']} [{tensors}] {prompts}{flag}")
        for line in concept_details(concept.window, c):
            click.echo(f"    {line}")
        if last[c["group"]] == i and c["group"] in detectors:
            click.echo(f"  {c['group']} harm detector: {detector_line(detectors[c['group']])}")


def detector_line(d: dict) -> str:
    """A stored harm detector: its kind, the feature it reads, its decision step, threshold and held-out errors."""
    shape = f" {tuple(d['feature_shape'])}" if d.get("feature_shape") else ""
    line = (f"{d['kind']} reads x0-hat {d['features']}{shape} at step {d['step']} of {d['steps']}; "
            f"threshold {d['threshold']:g}")
    rates = [f"{label} {_rate(d[key])}" for key, label in (("false_positive_rate", "false positives"),
                                                             ("false_negative_rate", "false negatives")) if key in d]
    return line + (f"; held-out {', '.join(rates)}" if rates else "")


def _rate(value) -> str:
    """A stored error rate as written (a rate from the file's meta, which may hold anything)."""
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)


#: The training settings `bank show` lists, in this order, where a concept has them.
SHOWN_SETTINGS = ("iterations", "lr", "batch_size", "steps", "target_guidance", "seed", "mode", "stored_scale",
                  "lr_sam", "lam", "sdisc_images", "sdisc_epochs")


def concept_details(window, c: dict) -> list[str]:
    """A concept's prompt pairs, step window, site and training settings, one line each."""
    pairs = c.get("pairs") or []
    lines = [f"pairs: {'; '.join(f'{n} => {t}' for n, t in pairs)}"] if pairs else []
    span = f"steps {window[0]:.0%}-{window[1]:.0%}" if window and tuple(window) != (0.0, 1.0) else "every step"
    lines.append(f"window: {span}; site: {c.get('site') or 'mid_block'}")
    settings = [f"{k}={c[k]:g}" if isinstance(c[k], float) else f"{k}={c[k]}" for k in SHOWN_SETTINGS
                if c.get(k) is not None]
    if settings:
        lines.append(f"settings: {' '.join(settings)}")
    return lines


@bank.command("merge")
@click.argument("banks", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="On a name clash, later banks win (default: error).")
@one_line_errors
def bank_merge(banks, out, replace) -> None:
    """Merge banks of the same model into one."""
    from hsteer.steering.bankmerge import merge_bank_files

    merged = merge_bank_files(banks, out, replace=replace)
    click.echo(f"wrote {len(merged)} concepts to {out}")


def _summary(path: Path | None):
    if path is None:
        return None
    from hsteer.checks import check_input_file, load_json
    from hsteer.errors import HsteerError

    path = check_input_file(path, "--eval-summary")
    if path.stat().st_size > 16 * 2**20:
        raise HsteerError(f"--eval-summary {path} is larger than 16 MiB; give a run's summary.json")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise HsteerError(f"--eval-summary {path} is not UTF-8 text") from None
    data = load_json(text, f"--eval-summary {path}")
    if not isinstance(data, dict):
        raise HsteerError(f"--eval-summary {path} is a JSON {type(data).__name__}, not a summary (an object)")
    return data


_summary_option = click.option("--eval-summary", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                               default=None, help="A summary.json (e.g. of `hsteer eval`) to show in the card.")
_license_option = click.option("--license", "license_", default="other", show_default=True,
                               help="The card's license (a Hub license id).")


@bank.command("card")
@click.argument("bank_path")
@click.option("--repo-id", default=None, help="The repo the card is for (its usage snippets name it).")
@_summary_option
@_license_option
@one_line_errors
def bank_card(bank_path, repo_id, eval_summary, license_) -> None:
    """Print the model card (README.md) that `push` would upload."""
    from hsteer.steering.bank import ConceptBank

    click.echo(ConceptBank.load(bank_path).model_card(repo_id, _summary(eval_summary), license=license_))


@bank.command("push")
@click.argument("bank_path")
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repo private.")
@click.option("--token", default=None, help="Hub token (default: your login, HF_TOKEN).")
@click.option("--revision", default=None, help="Branch to commit to.")
@click.option("--commit-message", default=None)
@click.option("--save-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Only write the folder that would be uploaded (bank + README.md) here; no upload.")
@_summary_option
@_license_option
@one_line_errors
def bank_push(bank_path, repo_id, private, token, revision, commit_message, save_dir, eval_summary,
              license_) -> None:
    """Upload BANK and its model card to the Hub repo REPO_ID (created if missing)."""
    from hsteer.steering.bank import ConceptBank

    loaded = ConceptBank.load(bank_path)
    summary = _summary(eval_summary)
    if save_dir is not None:
        loaded.save_pretrained(save_dir, summary, repo_id=repo_id, license=license_)
        click.echo(f"wrote {save_dir} (hsteer_bank.safetensors, README.md); nothing uploaded")
        return
    url = loaded.push_to_hub(repo_id, private=private, token=token, revision=revision,
                             commit_message=commit_message, eval_summary=summary, license=license_)
    click.echo(f"pushed {len(loaded)} concepts to {repo_id}: {url}")
