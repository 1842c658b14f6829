"""Sets of sites on real transformer classes (tiny random-weight SD3, FLUX and SANA): one tensor per site,
one hook per site module armed together, banks that store every site, training (CoDSMa, RespoDiff, SDisc),
generation, attach, the prompt gate, `hsteer eval` and the group site scan."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from tiny_transformers import SIZE, build_flux, build_sana, build_sd3

from hsteer import ConceptBank, FairPolicy, SteeringConfig, attach, detach, generate, steer
from hsteer.cli.main import main as cli
from hsteer.errors import BankError, HsteerError, ShapeMismatchError
from hsteer.generation import delta_for
from hsteer.steering import randombank
from hsteer.steering.hook import has_hook
from hsteer.model import load_pipeline
from hsteer.model.denoisers import Denoiser, site_shape
from hsteer.model.diffusion import encode_text
from hsteer.model.sites import SiteSet, family_of, site_for

BUILDERS = {"sd3": build_sd3, "flux": build_flux, "sana": build_sana}
SET = "transformer_blocks.0,text"
SEEDS = (20, 21)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return {name: build(tmp_path_factory.mktemp(f"set-{name}")) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def pipes(dirs):
    return {name: load_pipeline(folder) for name, folder in dirs.items()}


def _bank(pipe, site=SET, groups=None):
    return randombank.random_bank(pipe, groups or {"gender": ["woman", "man"]}, scale=3.0, seed=3, site=site,
                                  height=SIZE, width=SIZE)


def _call(pipe) -> dict:
    extra = {"use_resolution_binning": False} if family_of(pipe) == "sana" else {}
    return dict(num_inference_steps=3, guidance_scale=3.0, height=SIZE, width=SIZE, **extra)


def _differ(a, b) -> int:
    return max(int(np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max()) for x, y in zip(a, b))


def test_a_set_adds_each_sites_tensor_at_its_own_site(pipes):
    """The flat delta of a set is split per site: steering the set equals steering each site with its own
    tensor, both matter, and leaving the block removes every site's hook."""
    pipe = pipes["sd3"]
    site = _bank(pipe).site_of(pipe)
    assert isinstance(site, SiteSet) and [p.spec for p in site.sites] == ["transformer_blocks.0", "text"]
    assert site_for(pipe, "text,transformer_blocks.0") == site_for(pipe, SET)  # one order, the model's
    den = Denoiser(pipe, SIZE, SIZE, site)
    x = torch.randn((1, *den.latent_shape()), generator=torch.Generator().manual_seed(0))
    t, y = torch.tensor([500.0]), encode_text(pipe, ["a doctor"], SIZE, SIZE)
    flat = torch.randn(site.size, generator=torch.Generator().manual_seed(1))
    (a, part_a), (b, part_b) = site.split(flat)
    with torch.no_grad():
        plain = den.predict(x, t, y)
        with steer(den.module, SteeringConfig(flat), site=site):
            both = den.predict(x, t, y)
        with steer(den.module, SteeringConfig(part_a), site=a), steer(den.module, SteeringConfig(part_b), site=b):
            each = den.predict(x, t, y)
        with steer(den.module, SteeringConfig(part_a), site=a):
            only_a = den.predict(x, t, y)
    assert torch.equal(both, each)
    assert (both - only_a).abs().max() > 1e-4 and (only_a - plain).abs().max() > 1e-4
    assert not has_hook(den.module, site) and torch.equal(site.join([part_a, part_b]), flat)
    with pytest.raises(HsteerError, match="names a site twice"):
        site_for(pipe, "text,text")


def test_banks_store_every_site_and_single_site_banks_as_before(pipes, tmp_path):
    pipe = pipes["flux"]
    bank = _bank(pipe)
    path = bank.save(tmp_path / "set.safetensors")
    with safe_open(str(path), "pt") as handle:
        keys, header = sorted(handle.keys()), json.loads(handle.metadata()["hsteer"])
    assert keys == ["man/c@text", "man/c@transformer_blocks.0", "woman/c@text", "woman/c@transformer_blocks.0"]
    assert header["site"] == SET and header["site_shapes"] == {"transformer_blocks.0": [64, 32], "text": [512, 32]}
    loaded = ConceptBank.load(path)
    assert torch.equal(loaded["woman"].delta(), bank["woman"].delta())  # bit-identical round trip
    assert {k: tuple(v.shape) for k, v in loaded["woman"].site_deltas().items()} == {
        "transformer_blocks.0": (64, 32), "text": (512, 32)}
    assert loaded.site_of(pipe) == bank.site_of(pipe) and loaded.describe()["site_shapes"]["text"] == [512, 32]
    single = _bank(pipe, site="text").save(tmp_path / "one.safetensors")
    with safe_open(str(single), "pt") as handle:
        assert sorted(handle.keys()) == ["man/c", "woman/c"] and "site_shapes" not in handle.metadata()["hsteer"]
    with pytest.raises(ShapeMismatchError, match="site shapes"):
        loaded.add(_bank(pipe, site="transformer_blocks.0,single_transformer_blocks.0")["woman"])
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    tensors["woman/c@text"] = torch.zeros(3, 32)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={"hsteer": json.dumps(header)})
    with pytest.raises(BankError, match=r"bad.safetensors is corrupt: tensor 'woman/c@text' has shape \(3, 32\)"):
        ConceptBank.load(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_generate_attach_and_steer_agree_on_a_set_of_sites(pipes, family):
    pipe = pipes[family]
    bank, policy = _bank(pipe), FairPolicy(("gender",))
    site = bank.site_of(pipe)
    ref = generate(pipe, "a doctor", num_images_per_prompt=len(SEEDS), seed=SEEDS[0], bank=bank, policy=policy,
                   steps=3, guidance=3.0, height=SIZE, width=SIZE, progress=False)
    gens = lambda: [torch.Generator().manual_seed(s) for s in SEEDS]  # noqa: E731
    prompts = ["a doctor"] * len(SEEDS)
    attach(pipe, bank, policy)
    attached = pipe(prompts, generator=gens(), **_call(pipe)).images
    detach(pipe)
    deltas = torch.stack([delta_for(bank, policy.assign(bank, s), bank.hspace_shape) for s in SEEDS])
    with steer(pipe, SteeringConfig(deltas), site=site):
        steered = pipe(prompts, generator=gens(), **_call(pipe)).images
    text_only = _bank(pipe, site="text")  # the same seeds, one site: another image
    other = generate(pipe, "a doctor", num_images_per_prompt=len(SEEDS), seed=SEEDS[0], bank=text_only,
                     policy=policy, steps=3, guidance=3.0, height=SIZE, width=SIZE, progress=False)
    assert _differ(ref.images, attached) == 0 and _differ(ref.images, steered) == 0
    assert _differ(ref.images, other.images) > 2
    assert not has_hook(site.denoiser(pipe), site)


@pytest.mark.parametrize("family,objective", [("sd3", "codsma"), ("sana", "respodiff"), ("flux", "sdisc")])
def test_every_method_learns_one_tensor_per_site_jointly(pipes, family, objective):
    from hsteer.training import TrainConfig, train_concept

    pipe = pipes[family]
    extra = {"sdisc_images": 2, "sdisc_epochs": 2} if objective == "sdisc" else {"iterations": 2}
    config = TrainConfig.for_objective(objective, concept="woman", group="gender", neutral="a person",
                                       target="a woman", batch_size=2, steps=3, height=SIZE, width=SIZE, site=SET,
                                       **extra)
    concept = train_concept(pipe, config, progress=False).concept
    shapes = {"transformer_blocks.0": site_shape(pipe, site_for(pipe, "transformer_blocks.0"), SIZE, SIZE),
              "text": site_shape(pipe, site_for(pipe, "text"), SIZE, SIZE)}
    assert concept.meta["site"] == SET and concept.site_shapes == shapes
    assert all(d.abs().max() > 0 for d in concept.site_deltas().values())  # both sites learned
    ConceptBank(concepts=[concept]).site_of(pipe)  # a bank of it binds to this model


def test_cli_trains_a_set_generates_and_evaluates_it(dirs, tmp_path):
    runner = CliRunner()
    bank = tmp_path / "sd3.safetensors"
    size = ["--height", SIZE, "--width", SIZE]

    def run(*args):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    common = ["--model", dirs["sd3"], "--bank", bank, "--group", "shape", "--neutral", "a figure", "--iterations", 2,
              "--batch-size", 2, "--steps", 3, *size]
    # the same set, joined by a comma or repeated in another order
    for name, sites in (("circle", ["--site", SET]), ("square", ["--site", "text", "--site", "transformer_blocks.0"])):
        out = run("train", *common, *sites, "--concept", name, "--target", f"a {name} figure")
        assert out.exit_code == 0, out.output
    info = json.loads(run("bank", "show", bank, "--json").output)
    assert info["site"] == SET and info["site_shapes"]["transformer_blocks.0"] == [64, 32]
    made = run("generate", "--model", dirs["sd3"], "--out", tmp_path / "g", "--prompt", "a doctor", "--bank", bank,
               "--fair", "shape", "--num-images", 2, "--steps", 2, *size)
    assert made.exit_code == 0, made.output
    rows = [json.loads(line) for line in (tmp_path / "g" / "manifest.jsonl").read_text().splitlines()]
    assert {r["concepts"][0]["name"] for r in rows} <= {"circle", "square"} and len(rows) == 2
    evaluated = run("eval", "winobias", "--model", dirs["sd3"], "--classifier", "world", "--group", "shape",
                    "--watch", "colour", "--professions", "doctor", "--max-templates", 1, "--images-per-prompt", 2,
                    "--steps", 2, *size, "--quiet", "--bank", bank, "--fair", "shape", "--out", tmp_path / "e")
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    evaluated_rows = [json.loads(line) for line in (tmp_path / "e" / "manifest.jsonl").read_text().splitlines()]
    assert summary["targeted"] == ["shape"]
    assert len(evaluated_rows) == 2 and all(r["concepts"][0]["name"] in {"circle", "square"} for r in evaluated_rows)


def test_the_prompt_gate_keeps_a_named_attribute_at_a_set_of_sites(pipes):
    pipe = pipes["flux"]
    bank = _bank(pipe)
    for concept in bank:
        concept.meta.update(neutral="a photo of a person", target=f"a photo of a {concept.name}")
    kwargs = dict(num_images_per_prompt=2, seed=0, steps=2, guidance=3.0, height=SIZE, width=SIZE, progress=False,
                  bank=bank, policy=FairPolicy(("gender",)), gate="token")
    named = generate(pipe, "a photo of a woman", **kwargs)
    blind = generate(pipe, "a photo of a woman", respect_prompt=False, **kwargs)
    assert all(not r.concepts and r.extra.get("gate") for r in named.records)
    assert all(r.concepts for r in blind.records) and _differ(named.images, blind.images) > 2


def test_the_group_scan_reports_effect_leakage_and_cost_with_intervals(pipes):
    from hsteer.apps.group_scan import GroupScanSettings, format_rows, scan_groups

    pipe = pipes["sd3"]
    settings = GroupScanSettings(groups=("shape",), iterations=1, images_per_prompt=1, timing_batches=2,
                                 timing_images=1, steps=2, guidance=3.0, professions=("doctor", "nurse"))
    results = scan_groups(pipe, settings, [SET], [(0.0, 1.0)])
    (row,) = results
    assert (row.group, row.site, row.window, row.effect_name) == ("shape", SET, None, "DevRat")
    assert set(row.leakage) == {"colour", "profession"}
    for value, ci in [(row.effect, row.effect_ci), (row.cost, row.cost_ci),
                      *((e["agreement"], e["agreement_ci"]) for e in row.leakage.values())]:
        assert ci[0] <= value <= ci[1]
    assert row.cost > 0 and "| shape | transformer_blocks.0,text | all | DevRat" in format_rows(results)
    with pytest.raises(HsteerError, match="the recipe's groups are"):
        GroupScanSettings(groups=("gender",)).validate()


def test_every_method_trains_a_transformer_and_the_concept_scan_takes_a_set(pipes):
    from hsteer.apps.compare import METHODS as COMPARED
    from hsteer.apps.site_scan import ScanSettings, scan_sites
    from hsteer.training import METHODS

    pipe = pipes["sd3"]
    for method in METHODS:  # none refuses a transformer site: every method is in the DiT compare table
        method.check_supports(pipe, SET)
    assert {m.name for m in METHODS} <= set(COMPARED)
    settings = ScanSettings("a person", "a woman", keep=("a red square",), iterations=1, batch_size=1, steps=2,
                            height=SIZE, width=SIZE, eval_samples=1)
    (row,) = scan_sites(pipe, settings, [SET])
    assert row.site == SET and row.shape == (_bank(pipe).site_of(pipe).size,) and row.leakage >= 0
