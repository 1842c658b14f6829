"""`hsteer bank show|merge`: inspect and combine concept banks."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hsteer.cli.common import one_line_errors

@click.group()
def bank() -> None:
    """Inspect and combine concept banks."""


@bank.command("show")
@click.argument("bank_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@one_line_errors
def bank_show(bank_path, as_json) -> None:
    """List a bank's concepts, groups, tensors and training settings."""
    from hsteer.hspace.bank import ConceptBank
    from hsteer.hspace.bankcheck import flag_nonfinite

    info = flag_nonfinite(ConceptBank.load(bank_path))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{bank_path}: h-space {tuple(info['hspace_shape'])}, U-Net {info['unet_fingerprint']}")
    for c in info["concepts"]:
        tensors = ", ".join(f"{k}{tuple(v)}" for k, v in c["tensors"].items())
        prompts = " ".join(f"{k}={c[k]!r}" for k in ("neutral", "target", "negative") if c.get(k))
        flag = f" NON-FINITE VALUES in {', '.join(c['nonfinite'])}" if c.get("nonfinite") else ""
        click.echo(f"  {c['group']}/{c['name']}: {c['objective']} [{tensors}] {prompts}{flag}")


@bank.command("merge")
@click.argument("banks", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="On a name clash, later banks win (default: error).")
@one_line_errors
def bank_merge(banks, out, replace) -> None:
    """Merge banks of the same model into one."""
    from hsteer.hspace.bankmerge import merge_bank_files

    merged = merge_bank_files(banks, out, replace=replace)
    click.echo(f"wrote {len(merged)} concepts to {out}")
