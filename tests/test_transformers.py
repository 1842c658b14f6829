"""Steering sites beyond the U-Net: SD3, FLUX and SANA transformers, and the text representation.

Tiny random-weight pipelines of the real diffusers classes (`tiny_transformers`), saved with
`save_pretrained` and loaded back through hsteer's loader, as the U-Net tests do.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny_transformers import SIZE, build_flux, build_sana, build_sd3

from hsteer import FairPolicy, SafePolicy, SteeringConfig, attach, detach, generate, steer
from hsteer.cli.main import main as cli
from hsteer.errors import HsteerError
from hsteer.generation import delta_for
from hsteer.steering import randombank
from hsteer.steering.hook import has_hook
from hsteer.model import load_pipeline
from hsteer.model.denoisers import Denoiser, FlowSchedule, site_shape
from hsteer.model.diffusion import encode_text, encode_unconditional, reverse_to_steps
from hsteer.model.sites import family_of, site_for, site_specs

FAMILIES = ("sd3", "flux", "sana")
BUILDERS = {"sd3": build_sd3, "flux": build_flux, "sana": build_sana}
STEPS, GUIDANCE, SEEDS = 3, 3.0, (20, 21, 22, 23)


@pytest.fixture(scope="session")
def dit_dirs(tmp_path_factory):
    return {name: build(tmp_path_factory.mktemp(f"tiny-{name}")) for name, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def dit_pipes(dit_dirs):
    return {name: load_pipeline(folder) for name, folder in dit_dirs.items()}


def _call_kwargs(pipe) -> dict:
    extra = {"use_resolution_binning": False} if family_of(pipe) == "sana" else {}
    return dict(num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=SIZE, width=SIZE, **extra)


def _bank(pipe, site=None, groups=None):
    return randombank.random_bank(pipe, groups or {"gender": ["woman", "man"]}, scale=3.0, seed=3, site=site,
                                  height=SIZE, width=SIZE)


def _differ(a, b) -> int:
    return max(int(np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max()) for x, y in zip(a, b))


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_and_lists_its_sites(dit_pipes, dit_dirs, family):
    from hsteer.model import sampling_defaults

    pipe = dit_pipes[family]
    assert family_of(pipe) == family
    assert sampling_defaults(dit_dirs[family]) == {"sd3": {"steps": 28, "guidance": 7.0},  # the pipelines' own
                                                   "flux": {"steps": 28, "guidance": 3.5},
                                                   "sana": {"steps": 20, "guidance": 4.5}}[family]
    specs = site_specs(pipe)
    assert specs[-1] == "text" and "transformer_blocks.0" in specs
    assert ("single_transformer_blocks.1" in specs) == (family == "flux")
    assert site_shape(pipe, site_for(pipe, "transformer_blocks.0"), SIZE, SIZE)[0] == 64  # image tokens
    with pytest.raises(HsteerError, match=r"this model has \d transformer_blocks \(0\.\."):
        site_for(pipe, "transformer_blocks.9")
    with pytest.raises(HsteerError, match="or text"):
        site_for(pipe, "mid_block")


@pytest.mark.parametrize("family", FAMILIES)
def test_training_reaches_the_latents_the_pipeline_makes(dit_pipes, family):
    """The Denoiser calls the transformer as its pipeline does and steps its flow schedule (FLUX: distilled
    guidance as an input, one pass; SD3 and SANA: a [uncond, cond] batch), so the reverse process training
    runs gives the pipeline's own latents."""
    pipe = dit_pipes[family]
    den = Denoiser(pipe, SIZE, SIZE, guidance=GUIDANCE)
    schedule = den.schedule(STEPS)
    assert isinstance(schedule, FlowSchedule) and schedule.prediction_type == "flow"
    x = torch.randn((2, *den.latent_shape()), generator=torch.Generator().manual_seed(0))
    prompts = ["a photo of a woman", "a man"]
    ours = reverse_to_steps(den, schedule, x, torch.full((2,), STEPS), encode_text(pipe, prompts),
                            encode_unconditional(pipe).expand(2), den.sampling_cfg(GUIDANCE))
    theirs = pipe(prompts, latents=x, output_type="latent", **_call_kwargs(pipe)).images
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert (ours - x).abs().max() > 0.1


def test_a_flow_step_with_the_true_velocity_stays_on_the_straight_path():
    """x_t = (1 - s) x0 + s n and v = n - x0: an Euler step lands exactly on the next point of the path."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    schedule = FlowSchedule(FlowMatchEulerDiscreteScheduler(shift=3.0), 5, 64)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    k = torch.tensor([0, 3])
    s, s_next = schedule.sigmas[k].view(-1, 1, 1, 1), schedule.sigmas[k + 1].view(-1, 1, 1, 1)
    stepped = schedule.step(noise - x0, (1 - s) * x0 + s * noise, k)
    assert torch.allclose(stepped, (1 - s_next) * x0 + s_next * noise, atol=1e-6)
    assert torch.allclose(schedule.timesteps, schedule.sigmas[:-1] * 1000)


@pytest.mark.parametrize("family,spec", [("sd3", "transformer_blocks.0"), ("flux", "transformer_blocks.0"),
                                         ("flux", "single_transformer_blocks.1"), ("sana", "transformer_blocks.0")])
def test_a_block_site_steers_its_image_tokens_only(dit_pipes, family, spec):
    pipe = dit_pipes[family]
    site = site_for(pipe, spec)
    den = Denoiser(pipe, SIZE, SIZE, site, guidance=GUIDANCE)
    block, seen = site.module(den.module), []
    handle = block.register_forward_hook(lambda module, args, out: seen.append(out))
    x = torch.randn((2, *den.latent_shape()), generator=torch.Generator().manual_seed(1))
    t, cond = torch.full((2,), 500.0), encode_text(pipe, ["a woman", "a man"])
    delta = torch.randn(site_shape(pipe, site, SIZE, SIZE), generator=torch.Generator().manual_seed(2))
    try:
        with torch.no_grad():
            plain = den.predict(x, t, cond)
            with steer(den.module, SteeringConfig(delta), site=site):
                steered = den.predict(x, t, cond)
    finally:
        handle.remove()
    before, after = seen
    if site.output_index is None:  # SANA: the block's output is its image tokens
        assert torch.allclose(after - before, delta.expand_as(before), atol=1e-5)
    else:
        assert torch.equal(after[0], before[0])  # the text tokens of the block's output are not steered
        assert torch.allclose(after[1] - before[1], delta.expand_as(before[1]), atol=1e-5)
    assert (steered - plain).abs().max() > 1e-3
    assert not has_hook(den.module, site)


@pytest.mark.parametrize("family", ("sd", *FAMILIES))
def test_the_text_site_is_an_offset_on_the_prompt_embeddings(dit_pipes, sd_pipe, family):
    pipe = sd_pipe if family == "sd" else dit_pipes[family]
    site = site_for(pipe, "text")
    den = Denoiser(pipe, None if family == "sd" else SIZE, None if family == "sd" else SIZE, site)
    x = torch.randn((2, *den.latent_shape()), generator=torch.Generator().manual_seed(1))
    t = torch.full((2,), 400.0 if family != "sd" else 400, dtype=torch.float32 if family != "sd" else torch.long)
    cond = encode_text(pipe, ["a woman", "a man"])
    delta = torch.randn(site_shape(pipe, site), generator=torch.Generator().manual_seed(2)) * 0.5
    with torch.no_grad(), steer(den.module, SteeringConfig(delta), site=site):
        steered = den.predict(x, t, cond)
    with torch.no_grad():
        shifted = den.predict(x, t, type(cond)(cond.embeds + delta, cond.added))
        plain = den.predict(x, t, cond)
    assert torch.allclose(steered, shifted, atol=1e-5)
    assert (steered - plain).abs().max() > 1e-3


@pytest.mark.parametrize("family,spec", [("sd3", None), ("flux", "single_transformer_blocks.1"), ("sana", "text")])
def test_generate_attach_and_steer_give_the_same_images_at_any_site(dit_pipes, family, spec):
    pipe = dit_pipes[family]
    bank, policy = _bank(pipe, spec), FairPolicy(("gender",))
    site = bank.site_of(pipe)
    kwargs = dict(steps=STEPS, guidance=GUIDANCE, height=SIZE, width=SIZE, progress=False)
    ref = generate(pipe, "a doctor", num_images_per_prompt=len(SEEDS), seed=SEEDS[0], bank=bank, policy=policy,
                   **kwargs)
    gens = lambda: [torch.Generator().manual_seed(s) for s in SEEDS]  # noqa: E731
    prompts, call = ["a doctor"] * len(SEEDS), _call_kwargs(pipe)  # the batch layout generate uses
    attach(pipe, bank, policy)
    attached = pipe(prompts, generator=gens(), **call).images
    detach(pipe)
    deltas = torch.stack([delta_for(bank, policy.assign(bank, s), bank.hspace_shape) for s in SEEDS])
    with steer(pipe, SteeringConfig(deltas), site=site):
        steered = pipe(prompts, generator=gens(), **call).images
    plain = pipe(prompts, generator=gens(), **call).images
    assert {r.concepts[0]["name"] for r in ref.records} == {"woman", "man"}
    assert _differ(ref.images, attached) == 0 and _differ(ref.images, steered) == 0
    assert _differ(ref.images, plain) > 5
    assert not has_hook(site.denoiser(pipe), site)


def test_windows_and_the_safe_policy_on_a_transformer(dit_pipes):
    pipe = dit_pipes["sd3"]
    bank = _bank(pipe, groups={"gender": ["woman", "man"], "safety": ["anti_violence"]})
    bank["woman"].meta["window"] = [0.6, 1.0]
    kwargs = dict(num_images_per_prompt=2, seed=5, steps=STEPS, guidance=GUIDANCE, height=SIZE, width=SIZE,
                  progress=False, respect_prompt=False)
    plain = generate(pipe, "a doctor", **kwargs).images
    woman = FairPolicy(("gender",), ratios={"woman": 1.0, "man": 0.0})
    late = generate(pipe, "a doctor", bank=bank, policy=woman, **kwargs).images
    everywhere = generate(pipe, "a doctor", bank=bank, policy=woman, window=(0.0, 1.0), **kwargs).images
    safe = generate(pipe, "a doctor", bank=bank, policy=SafePolicy(), **kwargs).images
    assert _differ(plain, late) > 2 and _differ(late, everywhere) > 2 and _differ(plain, safe) > 2


@pytest.mark.parametrize("family,spec,objective", [("sd3", None, "codsma"), ("flux", "text", "respodiff"),
                                                   ("sana", "transformer_blocks.0", "respodiff")])
def test_one_training_step_lowers_the_loss_on_the_velocity(dit_pipes, family, spec, objective):
    """The objectives on what the flow model predicts: one small Adam step on a fixed batch of (z_t, t)
    lowers L_resp (CoDSMa's loss), and on FLUX every call carries the distilled guidance."""
    from hsteer import objectives
    from hsteer.training import TrainConfig
    from hsteer.training.state import IterationLosses
    from hsteer.training.steered import step_context

    pipe = dit_pipes[family]
    config = TrainConfig.for_objective(objective, concept="woman", group="gender", neutral="a person",
                                       target="a woman", batch_size=2, steps=4, height=SIZE, width=SIZE, site=spec,
                                       lr=1e-3, sampling_guidance=2.5)
    ctx, shape, latent_shape = step_context(pipe, config)
    assert shape == site_shape(pipe, site_for(pipe, spec), SIZE, SIZE)
    seen = []
    handle = ctx.unet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("guidance")),
                                                       with_kwargs=True)
    k = torch.tensor([1, 2])
    z_t = ctx.reach(torch.randn((2, *latent_shape), generator=torch.Generator().manual_seed(0)), k)
    t = ctx.schedule.timesteps[k]
    eps_base, eps_pos = objectives.frozen_eps(ctx.denoiser, ctx.schedule, z_t, t, [ctx.conds.base, ctx.conds.positive])
    target = objectives.guided_target(eps_pos, eps_base, config.target_guidance)
    key = "c" if objective == "codsma" else "ram"
    loss = lambda: objectives.codsma_loss(ctx.eps(z_t, t, ctx.params[key]), target).item()  # noqa: E731
    before = loss()
    ctx.step(ctx, z_t, t, target, IterationLosses(0))
    handle.remove()
    assert loss() < before
    assert all(p.detach().abs().max() > 0 for p in ctx.params.values())
    if family == "flux":
        assert seen and all(g is not None and torch.all(g == 2.5) for g in seen)


def test_cli_trains_shows_and_refuses_banks_by_site(dit_dirs, tmp_path):
    runner = CliRunner()
    bank = tmp_path / "flux.safetensors"
    size = ["--height", SIZE, "--width", SIZE]
    common = ["--model", dit_dirs["flux"], "--bank", bank, "--group", "gender", "--neutral", "a person",
              "--iterations", 2, "--batch-size", 2, "--steps", 3, *size]

    def run(*args):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    out = run("train", *common, "--concept", "woman", "--target", "a woman", "--site", "single_transformer_blocks.1")
    assert out.exit_code == 0, out.output
    info = json.loads(run("bank", "show", bank, "--json").output)
    assert info["site"] == "single_transformer_blocks.1" and info["family"] == "flux"
    assert info["concepts"][0]["site"] == "single_transformer_blocks.1" and info["hspace_shape"] == [64, 32]
    assert "site single_transformer_blocks.1" in run("bank", "show", bank).output

    other_site = run("train", *common, "--concept", "man", "--target", "a man", "--site", "text")
    assert other_site.exit_code == 2 and "--site single_transformer_blocks.1" in other_site.output
    bad = run("train", *common, "--concept", "man", "--target", "a man", "--site", "transformer_blocks.7")
    assert bad.exit_code == 2 and "has 1 transformer_blocks (0..0)" in bad.output
    gen = ["--prompt", "a doctor", "--bank", bank, "--concept", "woman", "--steps", 2]
    other_family = run("generate", "--model", dit_dirs["sd3"], "--out", tmp_path / "a", *gen, *size)
    assert other_family.exit_code == 2 and "FLUX" in other_family.output
    assert len(other_family.output.strip().splitlines()) == 1
    other_shape = run("generate", "--model", dit_dirs["flux"], "--out", tmp_path / "b", *gen, "--height", 64,
                      "--width", 64)
    assert other_shape.exit_code == 2 and "shape (64, 32)" in other_shape.output
    wrong_site = run("generate", "--model", dit_dirs["flux"], "--out", tmp_path / "c", *gen, *size, "--site", "text")
    assert wrong_site.exit_code == 2 and "single_transformer_blocks.1" in wrong_site.output
    ok = run("generate", "--model", dit_dirs["flux"], "--out", tmp_path / "d", *gen, *size)
    assert ok.exit_code == 0, ok.output
    row = json.loads((tmp_path / "d" / "manifest.jsonl").read_text().splitlines()[0])
    assert row["concepts"] == [{"name": "woman", "scale": 1.0}] and (tmp_path / "d" / row["file"]).is_file()


def test_the_site_scan_measures_effect_leakage_and_cost(dit_pipes, dit_dirs, tmp_path):
    from hsteer.apps.site_scan import ScanSettings, _measure, scan_sites
    from hsteer.model.diffusion import encode_text as enc

    pipe = dit_pipes["sd3"]
    settings = ScanSettings("a photo of a person", "a photo of a woman", keep=("a red square",), iterations=3,
                            batch_size=2, steps=4, height=SIZE, width=SIZE)
    site = site_for(pipe, "transformer_blocks.1")
    den = Denoiser(pipe, SIZE, SIZE, site)
    conds = {"neutral": enc(pipe, [settings.neutral]), "target": enc(pipe, [settings.target]),
             "empty": encode_unconditional(pipe)}
    zero = torch.zeros(site_shape(pipe, site, SIZE, SIZE))
    assert _measure(pipe, den, conds, zero, settings, (0.0, 1.0)) == (0.0, 0.0)  # no concept: no effect, no leak
    results = scan_sites(pipe, settings, ["transformer_blocks.1", "text"], [(0.0, 1.0), (0.5, 1.0)])
    assert [(r.site, r.window) for r in results] == [(s, w) for s in ("transformer_blocks.1", "text")
                                                     for w in ((0.0, 1.0), (0.5, 1.0))]
    assert all(r.effect > 0 and r.leakage >= 0 and r.seconds_per_iteration > 0 for r in results)
    assert results[0].shape == (64, 32) and results[2].shape == site_shape(pipe, site_for(pipe, "text"))

    listed = CliRunner().invoke(cli, ["sites", "--model", str(dit_dirs["flux"]), "--list", "--height", str(SIZE),
                                      "--width", str(SIZE)])
    assert listed.exit_code == 0 and "single_transformer_blocks.1: (64, 32)" in listed.output
    bad = CliRunner().invoke(cli, ["sites", "--model", str(dit_dirs["flux"]), "--site", "mid_block"])
    assert bad.exit_code == 2 and "not a site of this FLUX model" in bad.output
    scanned = CliRunner().invoke(cli, ["sites", "--model", str(dit_dirs["flux"]), "--site", "text", "--iterations", "1",
                                       "--batch-size", "1", "--steps", "2", "--height", str(SIZE), "--width",
                                       str(SIZE), "--json", str(tmp_path / "scan.json")])
    assert scanned.exit_code == 0 and scanned.output.splitlines()[1].startswith("text ")
    rows = json.loads((tmp_path / "scan.json").read_text())
    assert [(r["site"], r["window"], r["shape"]) for r in rows] == [("text", [0.0, 1.0], [512, 32])]


def test_a_bank_holds_one_site_and_old_banks_read_as_the_mid_block(dit_pipes, sd_pipe, tmp_path):
    from safetensors.torch import save_file

    from hsteer import Concept, ConceptBank
    from hsteer.errors import ModelMismatchError

    flux = dit_pipes["flux"]
    bank = _bank(flux, "text")
    saved = ConceptBank.load(bank.save(tmp_path / "text.safetensors"))
    assert (saved.site_spec, saved.family_name, saved.hspace_shape) == ("text", "flux", (512, 32))
    assert saved["woman"].site == "text" and saved.site_of(flux) == site_for(flux, "text")
    block = Concept("block", "gender", "codsma", {"c": torch.zeros(64, 32)},
                    {"site": "single_transformer_blocks.1", "family": "flux"})
    with pytest.raises(ModelMismatchError, match="keep each site's concepts in their own bank"):
        saved.add(block)
    with pytest.raises(ModelMismatchError, match="this model is SD3"):
        saved.check_compatible(dit_pipes["sd3"], (512, 32))

    # a bank written before sites existed: no site, no family in its header or its concepts' meta
    header = {"format": 1, "hspace_shape": [32, 4, 4], "unet_fingerprint": None,
              "concepts": {"woman": {"group": "gender", "objective": "codsma", "tensors": ["c"], "meta": {}}}}
    save_file({"woman/c": torch.ones(32, 4, 4)}, str(tmp_path / "old.safetensors"),
              metadata={"hsteer": json.dumps(header)})
    old = ConceptBank.load(tmp_path / "old.safetensors")
    assert (old.site_spec, old.family_name) == ("mid_block", "unet")
    old.check_compatible(sd_pipe, (32, 4, 4))
    assert old.describe()["concepts"][0]["site"] == "mid_block"
    with pytest.raises(ModelMismatchError, match="this model is FLUX"):
        old.check_compatible(flux, (32, 4, 4))


@pytest.mark.parametrize("family", ("sd3", "flux"))
def test_the_prompt_gate_reads_the_clip_and_t5_encoders(dit_pipes, family):
    """A prompt that names the group keeps its own attribute (the gate reads SD3's and FLUX's encoders)."""
    pipe = dit_pipes[family]
    bank = _bank(pipe)
    for concept in bank:  # the gate keys on the prompts a concept was trained with
        concept.meta.update(neutral="a photo of a person", target=f"a photo of a {concept.name}")
    kwargs = dict(num_images_per_prompt=2, seed=0, steps=2, guidance=GUIDANCE, height=SIZE, width=SIZE,
                  progress=False, bank=bank, policy=FairPolicy(("gender",)), gate="token")
    named = generate(pipe, "a photo of a woman", **kwargs)
    blind = generate(pipe, "a photo of a woman", respect_prompt=False, **kwargs)
    assert all(not r.concepts and r.extra.get("gate") for r in named.records)
    assert all(r.concepts for r in blind.records)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_ui_serves_a_transformer_model(dit_pipes, sd_pipe, family):
    """The page's server on SD3, FLUX and SANA: its native size, banks checked at their own site (a U-Net
    bank refused), and a training run from the Learn tab on the transformer (its stop hook included)."""
    import queue

    pytest.importorskip("gradio", reason="the ui extra is not installed")
    from hsteer.training import CodsmaConfig
    from hsteer.ui.handlers_learn import _train
    from hsteer.ui.server import HsteerUI
    from hsteer.ui.session import Session

    pipe = dit_pipes[family]
    ui = HsteerUI(pipe)
    from hsteer.model.geometry import resolve_resolution

    assert ui.resolution == resolve_resolution(pipe)[0] and not ui.is_world  # the model's native size
    assert family != "sd3" or ui.resolution == SIZE
    native = resolve_resolution(pipe)
    ui.check_bank(randombank.random_bank(pipe, {"gender": ["woman", "man"]}, scale=1.0, seed=3,
                                         site="transformer_blocks.0", height=native[0], width=native[1]))
    with pytest.raises(HsteerError):
        ui.check_bank(randombank.random_bank(sd_pipe, {"gender": ["woman", "man"]}, scale=1.0, seed=0))
    events: queue.Queue = queue.Queue()
    config = CodsmaConfig(concept="woman", group="gender", neutral="a person", target="a woman", iterations=2,
                          batch_size=2, steps=STEPS, height=SIZE, width=SIZE)
    _train(ui, Session(), config, events)
    kinds = [events.get_nowait()[0] for _ in range(events.qsize())]
    assert kinds[-1] == "done" and kinds.count("row") == 2


def test_the_scan_picks_the_largest_net_effect_and_writes_it_as_the_default_site(dit_dirs, tmp_path):
    import shutil

    from hsteer.apps.site_scan import SiteResult, choose_site

    rows = [SiteResult("transformer_blocks.0", (0.0, 1.0), (64, 32), 0.6, 0.5, 0.1, 1),
            SiteResult("transformer_blocks.1", (0.0, 1.0), (64, 32), 0.5, 0.1, 0.1, 1),
            SiteResult("text", (0.0, 1.0), (8, 32), 0.3, None, 0.1, 1)]
    assert choose_site(rows).site == "transformer_blocks.1"  # 0.4 net beats 0.1 and 0.3
    folder = tmp_path / "sd3"
    shutil.copytree(dit_dirs["sd3"], folder)
    assert site_for(load_pipeline(folder)).spec == "transformer_blocks.1"  # 2 blocks: the middle one
    out = CliRunner().invoke(cli, ["sites", "--model", str(folder), "--site", "transformer_blocks.0", "--iterations",
                                   "1", "--batch-size", "1", "--steps", "2", "--height", str(SIZE), "--width",
                                   str(SIZE), "--set-default"])
    assert out.exit_code == 0, out.output
    assert "pick: transformer_blocks.0" in out.output
    assert json.loads((folder / "hsteer.json").read_text())["site"] == "transformer_blocks.0"
    assert site_for(load_pipeline(folder)).spec == "transformer_blocks.0"  # the card's site is the default now


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_hsteer_eval_runs_on_a_transformer_with_a_block_bank(dit_pipes, dit_dirs, family, tmp_path):
    """`hsteer eval winobias` (world probes) plain and fair on a transformer: the harness, its report and the
    untargeted columns work at a block site as at the mid-block."""
    pipe = dit_pipes[family]
    bank = _bank(pipe, site="transformer_blocks.0", groups={"shape": ["circle", "square"]})
    bank.save(tmp_path / "bank.safetensors")
    common = ["eval", "winobias", "--model", str(dit_dirs[family]), "--classifier", "world", "--group", "shape",
              "--watch", "colour", "--professions", "doctor", "--max-templates", "1", "--images-per-prompt", "2",
              "--steps", "2", "--height", str(SIZE), "--width", str(SIZE), "--quiet"]
    plain = CliRunner().invoke(cli, [*common, "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    fair = CliRunner().invoke(cli, [*common, "--bank", str(tmp_path / "bank.safetensors"), "--fair", "shape",
                                    "--baseline-run", str(tmp_path / "plain"), "--out", str(tmp_path / "fair")])
    assert fair.exit_code == 0, fair.output
    summary = json.loads((tmp_path / "fair" / "summary.json").read_text())
    assert summary["targeted"] == ["shape"] and summary["untargeted"]["colour"]["n"] == 2
    rows = [json.loads(line) for line in (tmp_path / "fair" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["concepts"][0]["name"] in {"circle", "square"} for r in rows)
