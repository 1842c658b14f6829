"""`hsteer sites`: scan a model's steering sites, sets of sites and step windows, for a concept
(`hsteer.apps.site_scan`) or for each group of the bundled world's recipe (`--group`, `hsteer.apps.group_scan`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hsteer.cli.common import model_options, one_line_errors


@click.command("sites")
@model_options
@click.option("--neutral", default="a photo of a person", show_default=True, help="Neutral prompt.")
@click.option("--target", default="a photo of a woman", show_default=True, help="Target prompt of the concept.")
@click.option("--keep", "keep", multiple=True,
              help="A prompt the concept should leave alone (repeatable), e.g. 'a photo of a red car': leakage.")
@click.option("--site", "sites", multiple=True,
              help="A site to scan (repeatable; default: every site); specs joined by commas are a set of sites "
                   "whose tensors are learned and applied together, e.g. transformer_blocks.1,text.")
@click.option("--window", "windows", multiple=True, metavar="START,END",
              help="A step window to scan (repeatable; default 0,1; with --group 'recipe', the group's own).")
@click.option("--group", "groups", multiple=True,
              help="Scan this group of the world's recipe (shape, colour, safety; repeatable) on images: effect, "
                   "leakage on every other attribute and cost, each with its 95% interval.")
@click.option("--images-per-prompt", default=6, show_default=True, type=int, help="With --group: images per "
              "profession.")
@click.option("--harm-images-per-prompt", default=4, show_default=True, type=int, help="With --group: per harm prompt.")
@click.option("--timing-batches", default=4, show_default=True, type=int,
              help="With --group: paired plain/steered batches timed for the cost.")
@click.option("--list", "list_only", is_flag=True,
              help="Only list the model's sites and their shapes; the default site is marked.")
@click.option("--iterations", default=20, show_default=True, type=int, help="Training iterations per site.")
@click.option("--batch-size", default=4, show_default=True, type=int)
@click.option("--steps", default=10, show_default=True, type=int, help="Denoising steps of the schedule.")
@click.option("--lr", default=0.05, show_default=True, type=float)
@click.option("--height", default=None, type=int, help="Image height (default: the model's native size).")
@click.option("--width", default=None, type=int, help="Image width (default: the model's native size).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results to this JSON file.")
@click.option("--set-default", is_flag=True,
              help="Write the pick (largest effect net of leakage) into the model folder's hsteer.json as its default "
                   "site, which --site then overrides.")
@one_line_errors
def sites(model, device, dtype, neutral, target, keep, sites, windows, groups, images_per_prompt,
          harm_images_per_prompt, timing_batches, list_only, iterations, batch_size, steps, lr, height, width, seed,
          json_path, set_default) -> None:
    """Train a short concept (or, with --group, a recipe group's concepts) at each site, set of sites and window
    of a model; report effect, leakage and cost per candidate."""
    if groups:
        _scan_groups(model, device, dtype, groups, sites, windows, iterations, images_per_prompt,
                     harm_images_per_prompt, timing_batches, seed, json_path)
        return
    from hsteer.apps.site_scan import ScanSettings, choose_site, format_table, scan_sites, to_json
    from hsteer.checks import check_device, check_output_file
    from hsteer.errors import HsteerError
    from hsteer.fileio import atomic_write_text
    from hsteer.model import load_quietly
    from hsteer.model.loading import check_card_folder
    from hsteer.model.denoisers import site_shape
    from hsteer.steering.siteshape import bind_site
    from hsteer.model.sites import SiteSet, default_site_spec, site_for, site_specs
    from hsteer.policy_forms import parse_window

    settings = ScanSettings(neutral, target, tuple(keep), iterations, batch_size, steps, lr, height=height,
                            width=width, seed=seed)
    settings.validate()
    scan_windows = [parse_window(w) for w in windows] or [(0.0, 1.0)]
    device = check_device(device, "--device")
    if json_path is not None:
        check_output_file(json_path, "--json")
    card_folder = check_card_folder(model) if set_default and not list_only else None
    if set_default and list_only:
        raise HsteerError("--set-default writes the pick of a scan; --list runs none")
    pipe = load_quietly(model, device, dtype)
    if list_only:
        default = default_site_spec(pipe)
        for spec in sites or site_specs(pipe):
            site = bind_site(pipe, site_for(pipe, spec), height, width)
            mark = "  (default)" if site.spec == default else ""
            if isinstance(site, SiteSet):  # one flat tensor in flight, one tensor per site in a bank
                parts = " + ".join(f"{part.spec} {shape}" for part, shape in zip(site.sites, site.bound_shapes()))
                click.echo(f"{site.spec}: ({site.size},) = {parts}{mark}")
            else:
                click.echo(f"{site.spec}: {site_shape(pipe, site, height, width)}{mark}")
        return
    results = scan_sites(pipe, settings, list(sites) or None, scan_windows)
    click.echo(format_table(results))
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(to_json(results), indent=2) + "\n")
    pick = choose_site(results)
    click.echo(f"pick: {pick.site} (window {pick.window[0]:g}-{pick.window[1]:g}): effect {pick.effect:.3f}, "
               f"leakage {pick.leakage if pick.leakage is None else round(pick.leakage, 3)}")
    if card_folder is not None:
        from hsteer.model.loading import write_default_site

        card = write_default_site(card_folder, pick.site)
        click.echo(f"default site {pick.site} written to {card}")


def _scan_groups(model, device, dtype, groups, sites, windows, iterations, images_per_prompt, harm_images_per_prompt,
                 timing_batches, seed, json_path) -> None:
    from hsteer.apps.group_scan import RECIPE_WINDOW, GroupScanSettings, format_rows, scan_groups, to_json
    from hsteer.checks import check_device, check_output_file
    from hsteer.fileio import atomic_write_text
    from hsteer.model import load_quietly
    from hsteer.model.sites import site_specs
    from hsteer.policy_forms import parse_window

    settings = GroupScanSettings(tuple(groups), iterations, images_per_prompt, harm_images_per_prompt, seed,
                                 timing_batches)
    settings.validate()
    scan_windows = [RECIPE_WINDOW if w.strip() == RECIPE_WINDOW else parse_window(w) for w in windows] \
        or [RECIPE_WINDOW]
    device = check_device(device, "--device")
    if json_path is not None:
        check_output_file(json_path, "--json")
    pipe = load_quietly(model, device, dtype)
    results = scan_groups(pipe, settings, list(sites) or site_specs(pipe), scan_windows, log=click.echo)
    click.echo(format_rows(results))
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(to_json(results), indent=2) + "\n")
