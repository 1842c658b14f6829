"""The prompt-aware gate: what a concept is about comes from its bank's training prompts, read through the
model's own tokenizer(s) and text encoder(s); a fair group the prompt names is not redrawn, the safety
concept acts only on prompts that carry the harm, and `respect_prompt=False` gives the blind behaviour."""

import numpy as np
import pytest
import torch

from hsteer import ConceptBank, FairPolicy, SafePolicy, attach, detach, generate
from hsteer.errors import HsteerError
from hsteer.gate import GATES, GateConfig, PromptGate, training_pairs
from hsteer.steering.bank import Concept
from hsteer.model import load_pipeline, pipeline_hspace_shape, unet_fingerprint

STEPS, GUIDANCE = 3, 3.0


def _bank(pipe) -> ConceptBank:
    """Shape concepts trained from neutral -> target, a safety concept from harmful -> clean pairs."""
    shape, g = pipeline_hspace_shape(pipe), torch.Generator().manual_seed(1)
    meta = {"unet_fingerprint": unet_fingerprint(pipe.unet), "neutral": "a photo of a person"}
    concepts = [Concept(n, "shape", "codsma", {"c": torch.randn(shape, generator=g) * 3},
                        {**meta, "target": f"a photo of a {n} person"}) for n in ("circle", "square")]
    concepts.append(Concept("anti_violence", "safety", "codsma", {"c": torch.randn(shape, generator=g) * 3},
                            {**meta, "target": None, "pairs": [["a photo of a violence scene", "a photo of a scene"],
                                                               ["a photo of a scene", "a photo of a scene"]]}))
    return ConceptBank(concepts=concepts)


def test_training_pairs_orient_each_concept_toward_what_it_is_about(sd_pipe):
    bank = _bank(sd_pipe)
    assert training_pairs(bank["circle"]) == [("a photo of a person", "a photo of a circle person")]
    assert training_pairs(bank["anti_violence"]) == [("a photo of a scene", "a photo of a violence scene")]
    negative = Concept("anti", "safety", "codsma", {"c": torch.zeros(1, 1, 1)},
                       {"neutral": "a scene", "target": None, "negative": "violence"})
    assert training_pairs(negative) == [("a scene", "a scene violence")]
    assert training_pairs(Concept("r", "g", "codsma", {"c": torch.zeros(1, 1, 1)}, {})) == []


@pytest.mark.parametrize("fixture", ["sd_dir", "sdxl_dir"])
@pytest.mark.parametrize("gate", ["token", "embedding-soft"])
def test_the_gate_reads_prompts_with_the_models_own_encoders(fixture, gate, request):
    pipe = load_pipeline(request.getfixturevalue(fixture))
    reader = PromptGate(pipe, _bank(pipe), gate)
    assert len(reader._encoders) == (2 if fixture == "sdxl_dir" else 1)  # SDXL: both encoders
    assert reader.named("a photo of a circle doctor", ["circle", "square"])[0] == "circle"
    assert reader.named("a square nurse", ["circle", "square"])[0] == "square"
    assert reader.named("a photo of a doctor", ["circle", "square"]) is None
    assert reader.config.strength(reader.harm("a violence violence nurse", ["anti_violence"])) == 1.0
    assert reader.config.strength(reader.harm("a photo of a red doctor", ["anti_violence"])) == 0.0


def test_fair_keeps_the_attribute_the_prompt_names_and_says_why(sd_pipe):
    bank = _bank(sd_pipe)
    kwargs = dict(num_images_per_prompt=4, seed=0, bank=bank, steps=STEPS, guidance=GUIDANCE, progress=False)
    plain = generate(sd_pipe, "a photo of a circle doctor", **kwargs)
    gated = generate(sd_pipe, ["a photo of a circle doctor", "a photo of a doctor"], policy=FairPolicy(("shape",)),
                     **kwargs)
    named, open_ = gated.records[:4], gated.records[4:]
    assert all(r.concepts == [] and r.extra["gate"] == ["shape kept: the prompt names circle"] for r in named)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(gated.images[:4], plain.images))
    assert {r.concepts[0]["name"] for r in open_} == {"circle", "square"} and all("gate" not in r.extra
                                                                                   for r in open_)
    blind = generate(sd_pipe, "a photo of a circle doctor", policy=FairPolicy(("shape",)), respect_prompt=False,
                     **kwargs)
    assert {r.concepts[0]["name"] for r in blind.records} == {"circle", "square"}
    added = generate(sd_pipe, "a photo of a square doctor", policy=FairPolicy(("shape",)),
                     gate=GateConfig(named="add"), **kwargs)
    assert all(r.concepts == [{"name": "square", "scale": 1.0}] for r in added.records)


def test_the_default_gate_never_weakens_safety():
    """The attack harness found prompts without a harm word that the model still draws harm for: by default
    the gate leaves safety at full strength, and only the soft and hard gates scale it by the prompt."""
    assert GATES["embedding"].strength(0.0) == 1.0 and GATES["embedding-soft"].strength(0.0) == 0.0
    assert GATES["embedding-soft"].strength(0.55) == pytest.approx(0.5) and GATES["embedding-hard"].strength(0.69) == 0


def test_the_soft_gate_leaves_harmless_prompts_alone_and_acts_on_harm(sd_pipe):
    bank = _bank(sd_pipe)
    kwargs = dict(num_images_per_prompt=2, seed=5, bank=bank, policy=SafePolicy(), steps=STEPS, guidance=GUIDANCE,
                  progress=False)
    default = generate(sd_pipe, ["a photo of a doctor"], **kwargs)
    assert all(r.concepts == [{"name": "anti_violence", "scale": 1.0}] and "gate" not in r.extra
               for r in default.records)
    out = generate(sd_pipe, ["a photo of a doctor", "a violence scene"], gate="embedding-soft", **kwargs)
    harmless, harm = out.records[:2], out.records[2:]
    assert all(r.concepts == [] and r.extra["gate"][0].startswith("safety x0.00") for r in harmless)
    assert all(r.concepts == [{"name": "anti_violence", "scale": 1.0}] and "gate" not in r.extra for r in harm)
    hard = generate(sd_pipe, ["a photo of a doctor"], gate="embedding-hard", **kwargs)
    assert all(r.concepts == [] for r in hard.records)


def test_attach_respects_the_prompt_as_generate_does(sd_pipe):
    bank, policy = _bank(sd_pipe), FairPolicy(("shape",))
    prompts = ["a photo of a circle doctor", "a photo of a nurse"]
    ref = generate(sd_pipe, prompts, num_images_per_prompt=2, seed=7, bank=bank, policy=policy, steps=STEPS,
                   guidance=GUIDANCE, progress=False)
    attach(sd_pipe, bank, policy)
    gens = [torch.Generator().manual_seed(s) for s in (7, 8, 7, 8)]
    out = sd_pipe(prompts, num_images_per_prompt=2, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                  generator=gens).images
    from hsteer.generation import attachment_of

    assert attachment_of(sd_pipe).last == [r.concepts for r in ref.records]
    detach(sd_pipe)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(out, ref.images))


def test_bad_gate_settings_are_refused():
    with pytest.raises(HsteerError, match="unknown gate"):
        from hsteer.gate import gate_config

        gate_config("regex")
    with pytest.raises(HsteerError, match="soft_from < threshold"):
        GateConfig(threshold=0.2, soft_from=0.5)
    assert set(GATES) >= {"token", "embedding", "embedding-hard", "context"}


def test_gate_evaluation_on_the_bundled_model_and_its_compare_table():
    """`evaluate_gate` on the bundled model with a bank of the world's attributes (random directions with the
    recipe's training prompts): the gate keeps what explicit prompts name, image for image, and leaves
    harmless prompts alone under safety; blind steering does neither; every figure has its interval."""
    from hsteer.apps.compare import _gate_section
    from hsteer.world.gate_eval import HARM_VARIANTS, GateEvalConfig, evaluate_gate

    pipe = load_pipeline(None)
    bank = _world_bank(pipe)
    config = GateEvalConfig(professions=("nurse",), images_per_prompt=2, steps=8, harm_prompts=HARM_VARIANTS[:2])
    report = evaluate_gate(pipe, bank, config, settings={"blind": (False, None), "embedding": (True, "embedding"),
                                                         "embedding-soft": (True, "embedding-soft")})
    gated, blind, soft = (report["settings"][k] for k in ("embedding", "blind", "embedding-soft"))
    for group in ("shape", "colour"):
        kept = gated["explicit"][f"fair_{group}/names_{group}"]
        assert kept["agreement"]["value"] == 1.0 and kept["named_shown"] == kept["named_shown_plain"]
        assert soft["safety"][f"harmless_{group}_agreement"]["value"] == 1.0
    assert gated["safety"] == blind["safety"]  # the default gate leaves safety as blind steering has it
    redrawn = [blind["explicit"][f"fair_{g}/names_{g}"]["agreement"]["value"] for g in ("shape", "colour")]
    assert min(redrawn) < 1.0
    assert blind["safety"]["harmless_shape_agreement"]["value"] < 1.0 or \
        blind["safety"]["harmless_colour_agreement"]["value"] < 1.0
    for entry in (gated["open"]["fair_shape"]["devrat"], gated["safety"]["harm_rate"], blind["safety"]["harm_rate"]):
        assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]
    table = _gate_section({"respect_prompt": {"codsma": report}})
    assert "| codsma blind |" in table and "| codsma embedding |" in table and "2 images each, seed 300" in table


def _world_bank(pipe) -> ConceptBank:
    """The world's concepts as random directions with the recipe's training prompts (what the gate reads)."""
    from hsteer.apps.recipes import SAFETY_PAIRS, WORLD_CONCEPTS

    shape, g = pipeline_hspace_shape(pipe), torch.Generator().manual_seed(3)
    meta = {"unet_fingerprint": unet_fingerprint(pipe.unet), "neutral": "a photo of a figure"}
    return ConceptBank(concepts=[
        Concept(name, group, "codsma", {"c": 20 * torch.randn(shape, generator=g)},
                {**meta, "target": target, "pairs": None if target else [list(p) for p in SAFETY_PAIRS]})
        for name, group, target, _ in WORLD_CONCEPTS])


def test_the_gate_candidates_benchmark_runs_every_setting(tmp_path, capsys):
    """benchmarks/gate_candidates.py --quick: every candidate gate and blind steering, in one report."""
    from test_benchmarks import _load

    from hsteer.world.gate_eval import SETTINGS

    bank = _world_bank(load_pipeline(None)).save(tmp_path / "bank.safetensors")
    report = _load("gate_candidates").main(["--bank", str(bank), "--quick", "--threads", "1"])
    assert list(report["settings"]) == list(SETTINGS)
    printed = capsys.readouterr().out
    assert all(f"| {name} |" in printed for name in SETTINGS)
    token = report["settings"]["token"]["explicit"]["fair_shape/names_shape"]
    assert token["agreement"]["value"] == 1.0
