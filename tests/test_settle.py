"""The prompt-switch measurement (`hsteer settle`): on the bundled model, read by its probes, and on the tiny
random-weight SD 1.x, SD3 and FLUX pipelines, where the switch must reach every text input of the denoiser."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hsteer import generate
from hsteer.errors import HsteerError
from hsteer.evaluation.settle import settle, settle_table, switched_images, world_prompts, world_settle
from hsteer.model import load_pipeline
from tiny_transformers import SIZE, build_flux, build_sd3


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    return load_pipeline(None)


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory):
    return build_sd3(tmp_path_factory.mktemp("s-sd3"))


@pytest.fixture(scope="module")
def tiny(sd_dir, sd3_dir, tmp_path_factory):
    torch.set_num_threads(1)
    return {"sd": load_pipeline(sd_dir), "sd3": load_pipeline(sd3_dir),
            "flux": load_pipeline(build_flux(tmp_path_factory.mktemp("s-flux")))}


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def test_world_shape_settles_between_the_ends_and_the_ends_are_the_plain_prompts(world):
    steps = 10
    result = world_settle(world, "shape", "circle", "square", steps=steps, images=6, switch_steps=[0, 2, 8, steps])
    share = {r["switch_step"]: r["share_b"] for r in result.rows}
    # switching at 0 is the square prompt throughout, at the last step the circle prompt throughout
    assert share[0] == 1.0 and share[steps] == 0.0
    # shape is decided in the middle of the schedule: a switch at step 2 still draws squares, at 8 circles
    assert share[2] >= 0.8 and share[8] <= 0.2
    assert result.settle_step == 8
    for row in result.rows:  # Wilson intervals hold the share and are not a point at 0 or 1
        assert row["ci"][0] <= row["share_b"] <= row["ci"][1] and row["ci"][1] - row["ci"][0] > 0.2
    assert "| **settle step** | 8 |" in settle_table([("shape", result)])
    assert result.to_dict()["settle_step"] == 8


@pytest.mark.parametrize("name", ["sd", "sd3", "flux"])
def test_the_switch_reaches_every_text_input_of_the_denoiser(tiny, name):
    pipe, steps = tiny[name], 4
    sampling = dict(num_images_per_prompt=2, seed=3, steps=steps, guidance=3.0, height=SIZE, width=SIZE,
                    progress=False)
    a, b = (generate(pipe, [p], **sampling).images for p in ("a cat", "a dog"))
    assert not _same(a, b)
    made = switched_images(pipe, "a cat", "a dog", [0, 1, steps], steps=steps, images=2, seed=3, guidance=3.0,
                           height=SIZE, width=SIZE)
    assert _same(made[0], b) and _same(made[steps], a)  # the ends are the plain prompts, bit for bit
    assert not _same(made[1], a) and not _same(made[1], b)  # B from step 1 on: neither prompt's image
    # any classifier reads the images (here: is it one of the plain B images?)
    result = settle(pipe, "a cat", "a dog", lambda ims: ["B" if any(_same([i], [x]) for x in b) else "A" for i in ims],
                    "B", steps=steps, images=2, seed=3, guidance=3.0, switch_steps=[0, steps], height=SIZE,
                    width=SIZE)
    assert [r["share_b"] for r in result.rows] == [1.0, 0.0] and result.settle_step == steps


def test_settle_refuses_what_it_cannot_measure(world):
    with pytest.raises(HsteerError, match="not a value of shape"):
        world_prompts("shape", "circle", "triangle")
    with pytest.raises(HsteerError, match="two different values"):
        world_prompts("colour", "red", "red")
    with pytest.raises(HsteerError, match="exactly one"):
        world_prompts("shape", "circle", "square", "a photo")
    assert world_prompts("harm", "no", "yes") == ("a photo of a figure", "a photo of a violent figure")
    with pytest.raises(HsteerError, match="switch steps must lie in 0..4"):
        settle(world, "a", "b", lambda ims: ["x"] * len(ims), "x", steps=4, images=1, switch_steps=[5])
    with pytest.raises(HsteerError, match="returned 1 labels for 2 images"):
        settle(world, "a", "b", lambda ims: ["x"], "x", steps=2, images=2, switch_steps=[0])


def test_cli_settle_on_the_bundled_model_and_refusal_elsewhere(tmp_path, sd_dir):
    from hsteer.cli.main import main

    out = tmp_path / "settle.json"
    result = CliRunner().invoke(main, ["settle", "--group", "colour", "--from", "red", "--to", "blue", "--steps",
                                       "6", "--images", "3", "--switch-step", "0", "--switch-step", "6",
                                       "--json", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "'a photo of a red figure' -> 'a photo of a blue figure'" in result.output
    data = json.loads(out.read_text())
    assert [r["share_b"] for r in data["rows"]] == [1.0, 0.0] and data["settle_step"] == 6
    refused = CliRunner().invoke(main, ["settle", "--model", str(sd_dir), "--group", "shape", "--from", "circle",
                                        "--to", "square", "--device", "cpu"])
    assert refused.exit_code == 2 and "read=<your classifier>" in refused.output
    assert len(refused.output.strip().splitlines()) == 1


def test_held_out_templates_are_phrased_unlike_the_demos_and_selectable():
    from hsteer.apps.demo import DemoConfig
    from hsteer.evaluation.tasks.world import HELD_OUT_TEMPLATES, TEMPLATES, world_jobs
    from hsteer.world.evaluate import WorldEvalConfig
    from hsteer.world.held_out import HeldOutConfig

    assert not set(HELD_OUT_TEMPLATES) & (set(TEMPLATES) | set(DemoConfig().leakage_templates))
    jobs = world_jobs({"templates": "held-out", "professions": ["nurse"], "images_per_prompt": 1,
                       "harm_prompts": []}, 0)
    assert [j["prompt"] for j in jobs] == [t.format("nurse") for t in HELD_OUT_TEMPLATES]
    assert WorldEvalConfig(templates="held-out").templates == "held-out"
    with pytest.raises(ValueError, match="unknown template set"):
        world_jobs({"templates": "unseen"}, 0)
    with pytest.raises(ValueError, match="multiples of 6"):
        HeldOutConfig(seed=1000)


def test_evaluate_held_out_reports_every_figure_with_an_interval(world):
    from hsteer.world.evaluate import WorldEvalConfig, evaluate_world
    from hsteer.world.held_out import HeldOutConfig, evaluate_held_out, held_out_section
    from hsteer.steering.randombank import random_bank

    bank = random_bank(world, {"shape": ["circle", "square"], "colour": ["red", "green", "blue"]}, scale=2.0)
    config = HeldOutConfig(templates=("{} portrait photo",), images_per_prompt=6, explicit_professions=("nurse",),
                           explicit_images_per_prompt=1)
    eval_config = WorldEvalConfig(steps=6, guidance=4.0)
    report = evaluate_held_out(world, bank, eval_config, config, respect_prompt=False, runs=(("shape",),))
    plain = evaluate_world(world, WorldEvalConfig(templates=("{} portrait photo",), images_per_prompt=6,
                                                  harm_prompts=(), seed=1200, steps=6, guidance=4.0), progress=False)
    assert report["plain"]["deviation_ratio"]["shape"]["value"] == plain.summary["deviation_ratio"]["mean_biased"]["shape"]
    run = report["runs"]["fair_shape"]
    assert set(run["untargeted"]) == {"colour", "profession"} and set(run["deviation_ratio"]) == {"shape"}
    figures = [run["fidelity"], *run["untargeted"].values(), *run["deviation_ratio"].values(),
               *(e[k] for e in run["explicit_kept"].values() for k in ("plain", "steered"))]
    for entry in figures:
        assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]
    # explicit prompts: 1 template x 1 profession x 2 shapes (or 3 colours) x 1 image, plain and steered
    assert run["explicit_kept"]["shape"]["steered"]["n"] == 2 and run["explicit_kept"]["colour"]["plain"]["n"] == 3
    section = "\n".join(held_out_section(report))
    assert "## On held-out templates" in section and "| fair shape | shape " in section


def test_each_family_learns_with_its_own_recipe(world):
    from hsteer.apps.compare import CompareConfig, method_configs
    from hsteer.apps.demo import DemoConfig, demo_train_configs
    from hsteer.apps.recipes import FAMILY_RECIPES, WINDOWS, family_recipe, pipeline_recipe, world_train_config

    assert pipeline_recipe(world) == ("unet", FAMILY_RECIPES["unet"]) and WINDOWS is FAMILY_RECIPES["unet"].windows
    assert family_recipe("flux") is family_recipe("sana") is FAMILY_RECIPES["sd3"]  # the measured transformer's
    assert family_recipe(None) is FAMILY_RECIPES["unet"]
    for family, recipe in FAMILY_RECIPES.items():
        trains = demo_train_configs(DemoConfig(iterations=5), family) + method_configs("codsma", CompareConfig(), family)
        assert {t.concept: t.window for t in trains} == {t.concept: recipe.windows[t.group] for t in trains}
        assert world_train_config("circle", 5, family=family, recipe="plain").window is None


def test_cli_settle_on_any_model_reads_each_image_with_clip(tmp_path, sd3_dir, tiny):
    """--classifier: CLIP reads each image as the prompt it is closer to, so the switch runs on any model
    from the command line; its ends are CLIP's reading of the two plain prompts' images."""
    from hsteer.cli.main import main
    from hsteer.evaluation.clip import ClipScorer, ClipZeroShot
    from test_eval_scoring import build_clip

    clip, out = build_clip(tmp_path / "clip"), tmp_path / "settle.json"
    common = ["settle", "--model", str(sd3_dir), "--from", "woman", "--to", "man", "--steps", "4", "--images", "3",
              "--device", "cpu"]
    result = CliRunner().invoke(main, [*common, "--classifier", str(clip), "--template", "a photo of a {}",
                                       "--switch-step", "0", "--switch-step", "2", "--switch-step", "4",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["switch_step"]: r for r in json.loads(out.read_text())["rows"]}
    assert sorted(rows) == [0, 2, 4]
    reader = ClipZeroShot(ClipScorer(clip), {"switch": ("a photo of a woman", "a photo of a man")})
    for step, prompt in ((0, "a photo of a man"), (4, "a photo of a woman")):
        images = generate(tiny["sd3"], prompt, num_images_per_prompt=3, seed=0, steps=4, batch_size=3,
                          progress=False).images
        labels = reader.classify(images)["switch"]
        assert rows[step]["share_b"] == sum(label == "a photo of a man" for label in labels) / 3, step
    assert all(r["ci"][0] <= r["share_b"] <= r["ci"][1] for r in rows.values())
    for extra, needle in (([], "give --group"), (["--classifier", str(clip)], "--classifier needs --template"),
                          (["--classifier", str(clip), "--group", "shape"], "not both"),
                          (["--classifier", str(clip), "--template", "a photo"], "exactly one '{}'")):
        refused = CliRunner().invoke(main, [*common, *extra])
        assert refused.exit_code == 2 and needle in refused.output, (extra, refused.output)
