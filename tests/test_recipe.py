"""The leakage recipe's mechanics: conditioned prompt pairs and step windows, in training and at use."""

import pytest
import torch

from hsteer import ConceptBank, FairPolicy, SteeringConfig, TrainConfig, generate, steer, train_concept
from hsteer.errors import HsteerError
from hsteer.model import pipeline_hspace_shape
from hsteer.training.steered import Conditions


def _config(**kw):
    base = dict(concept="square", group="shape", neutral="a photo of a figure", target="a photo of a square",
                iterations=3, batch_size=4, steps=5, lr=0.05, seed=0)
    base.update(kw)
    return TrainConfig.for_objective(base.pop("objective", "codsma"), **base)


def test_pairs_fill_the_batch_row_by_row(sd_pipe):
    pairs = (("a red figure", "a red square"), ("a blue figure", "a blue square"), ("a figure", "a square"))
    conds = Conditions.encode(sd_pipe, _config(pairs=pairs, batch_size=5), 64, 64)
    from hsteer.model.diffusion import encode_text

    for row, (neutral, target) in zip(range(5), pairs * 2):
        assert torch.equal(conds.neutral.embeds[row], encode_text(sd_pipe, [neutral]).embeds[0])
        assert torch.equal(conds.positive.embeds[row], encode_text(sd_pipe, [target]).embeds[0])


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_a_window_is_learned_and_stored_with_the_concept(sd_pipe, mode):
    result = train_concept(sd_pipe, _config(window=(0.4, 1.0), mode=mode), progress=False)
    assert result.concept.window == (0.4, 1.0)
    assert tuple(result.concept.meta["window"]) == (0.4, 1.0)
    assert result.concept.delta().abs().sum() > 0
    plain = train_concept(sd_pipe, _config(mode=mode), progress=False)
    assert "window" not in plain.concept.meta and plain.concept.window is None


def test_a_concept_whose_window_misses_every_step_is_refused(sd_pipe):
    """A concept whose window holds no step of the run is an error (it would silently leave the images
    plain while the manifest says it was applied); inside its window it acts."""
    from hsteer.steering.bank import Concept

    shape = pipeline_hspace_shape(sd_pipe)
    c = 30 * torch.randn(shape, generator=torch.Generator().manual_seed(0))
    kwargs = dict(num_images_per_prompt=2, seed=0, steps=4, guidance=3.0, progress=False)
    plain = generate(sd_pipe, "a person", **kwargs)
    late = ConceptBank(concepts=[Concept("x", "g", "codsma", {"c": c}, {"window": [0.99, 1.0]}),
                                 Concept("y", "g2", "codsma", {"c": c}, {"window": [0.0, 1.0]})])
    with pytest.raises(HsteerError, match="concept 'x'.*covers none of the 4 denoising steps"):
        generate(sd_pipe, "a person", bank=late, policy=FairPolicy(("g",)), **kwargs)
    inside = generate(sd_pipe, "a person", bank=late, policy=FairPolicy(("g2",)), **kwargs)
    assert any(list(a.getdata()) != list(b.getdata()) for a, b in zip(plain.images, inside.images))


def test_each_concept_acts_in_its_own_window(sd_pipe):
    """Two groups with different windows in one fair batch = each concept steered in its own steps."""
    from hsteer.steering.bank import Concept

    shape = pipeline_hspace_shape(sd_pipe)
    g = torch.Generator().manual_seed(1)
    early, late = 20 * torch.randn(shape, generator=g), 20 * torch.randn(shape, generator=g)
    bank = ConceptBank(concepts=[Concept("e", "early", "codsma", {"c": early}, {"window": [0.0, 0.5]}),
                                 Concept("l", "late", "codsma", {"c": late}, {"window": [0.5, 1.0]})])
    out = generate(sd_pipe, "a person", num_images_per_prompt=1, seed=0, steps=4, guidance=3.0, bank=bank,
                   policy=FairPolicy(("early", "late")), progress=False)
    generator = [torch.Generator().manual_seed(0)]
    with steer(sd_pipe, SteeringConfig(early.unsqueeze(0), start=0.0, end=0.5), name="a"), \
            steer(sd_pipe, SteeringConfig(late.unsqueeze(0), start=0.5, end=1.0), name="b"):
        by_hand = sd_pipe(["a person"], num_inference_steps=4, guidance_scale=3.0, generator=generator).images[0]
    assert list(out.images[0].getdata()) == list(by_hand.getdata())


def test_bad_pairs_and_windows_are_refused():
    with pytest.raises(HsteerError, match="pairs"):
        _config(pairs=(("a figure",),)).validate()
    with pytest.raises(HsteerError, match="window"):
        _config(window=(0.6, 0.2)).validate()


@pytest.mark.parametrize("objective", ["codsma", "respodiff"])
def test_stored_scale_shortens_what_the_bank_keeps_and_not_the_training(sd_pipe, tmp_path, objective):
    """The run trains as before and stores its tensors at the fraction asked for (recorded in the meta);
    a checkpoint of the full-length run resumes into the short one, since training is the same."""
    from hsteer.training import train_into_bank

    full = train_concept(sd_pipe, _config(objective=objective), progress=False)
    short = train_concept(sd_pipe, _config(objective=objective, stored_scale=0.5), progress=False)
    assert short.losses == full.losses
    for name, tensor in full.concept.tensors.items():
        assert tensor.abs().sum() > 0
        assert torch.equal(short.concept.tensors[name], tensor * 0.5), name
    assert short.concept.meta["stored_scale"] == 0.5 and "stored_scale" not in full.concept.meta
    bank = tmp_path / "b.safetensors"
    train_into_bank(sd_pipe, _config(objective=objective), bank, checkpoint_every=3, progress=False)
    resumed = train_into_bank(sd_pipe, _config(objective=objective, stored_scale=0.5), bank, resume=True,
                              progress=False)
    assert resumed.resumed_from == 3
    assert torch.equal(ConceptBank.load(bank)["square"].delta(), short.concept.delta())
    with pytest.raises(HsteerError, match="stored_scale"):
        _config(stored_scale=-1.0).validate()


def test_the_world_safety_recipe_trains_against_the_found_attack_prompts():
    """The bundled world's safety concept: the recipe's pairs, plus each white-box prompt found against the
    unhardened concept mapped to its clean form (and that form to itself), one batch of all of them, learned
    with RespoDiff by default (at full length; CoDSMa's is stored at 0.8 of its length); the fair concepts
    (CoDSMa) and SDisc (which learns from images) are unchanged."""
    from hsteer.apps.recipes import (FOUND_ATTACK_PROMPTS, OBJECTIVE_SETTINGS, SAFETY_PAIRS, SAFETY_STORED_SCALE,
                                     adversarial_pairs, default_objective, world_train_config)

    assert adversarial_pairs(["a photo of a violent doctor x"]) == [
        ("a photo of a violent doctor x", "a photo of a doctor x"), ("a photo of a doctor x", "a photo of a doctor x")]
    assert adversarial_pairs(["a photo of a doctor"]) == []
    assert adversarial_pairs(["gory"]) == [("gory", "a scene"), ("a scene", "a scene")]
    assert adversarial_pairs(["3 scene q"], harm_words=("q",)) == [("3 scene q", "3 scene"), ("3 scene", "3 scene")]
    config = world_train_config("anti_harm", 150)
    assert default_objective("safety") == config.objective == "respodiff"
    assert (config.lr_sam, config.lam) == (OBJECTIVE_SETTINGS["respodiff"]["lr_sam"], 0.5) == (0.005, 0.5)
    assert config.pairs[: len(SAFETY_PAIRS)] == SAFETY_PAIRS and len(set(config.pairs)) == len(config.pairs)
    assert set(adversarial_pairs(FOUND_ATTACK_PROMPTS)) <= set(config.pairs)
    assert len(config.pairs) == len(SAFETY_PAIRS) + 2 * len(FOUND_ATTACK_PROMPTS)
    assert config.batch_size == len(config.pairs)  # row i takes pair i: every pair in every batch
    assert config.stored_scale == 1.0
    codsma = world_train_config("anti_harm", 150, objective="codsma")
    assert codsma.pairs == config.pairs and codsma.stored_scale == SAFETY_STORED_SCALE[type(codsma)] == 0.8
    assert world_train_config("anti_harm", 150, lam=0.25).lam == 0.25  # an explicit setting wins
    for other in (world_train_config("anti_harm", 150, objective="sdisc"), world_train_config("circle", 150)):
        assert other.stored_scale == 1.0 and not set(other.pairs or ()) & set(config.pairs)
    assert world_train_config("circle", 150).objective == default_objective("shape") == "codsma"
    assert world_train_config("anti_harm", 150, objective="sdisc").lr == OBJECTIVE_SETTINGS["sdisc"]["lr"]
    with pytest.raises(ValueError, match="unknown objective 'esd'"):
        world_train_config("anti_harm", 150, objective="esd")
    with pytest.raises(ValueError, match="unknown world concept 'triangle'"):
        world_train_config("triangle", 150)


def test_the_web_pages_safety_preset_fills_the_recipe_and_its_objectives_settings():
    """The Learn tab's `anti_harm` preset is `hsteer demo`'s concept: RespoDiff with its SAM learning rate
    and lambda, its pairs and batch, and the form turns it back into the same config; a CoDSMa form ignores
    whatever the RespoDiff boxes hold."""
    from hsteer.apps.recipes import world_train_config
    from hsteer.ui.forms import LEARN_FIELDS, train_config
    from hsteer.ui.handlers_learn import PRESET_FIELDS, preset_values

    recipe = world_train_config("anti_harm", 150)
    values = dict(zip(PRESET_FIELDS, preset_values("anti_harm (safety)", recipe.steps)))
    assert values["objective"] == "respodiff" and (values["lr_sam"], values["lam"]) == (0.005, 0.5)
    assert values["stored_scale"] == 1.0 and values["batch_size"] == len(recipe.pairs) == 24
    assert values["pairs"].splitlines() == [f"{n} => {t}" for n, t in recipe.pairs]
    form = {**dict.fromkeys(LEARN_FIELDS, ""), **values, "training_seed": 0, "sdisc_images": 64, "sdisc_epochs": 20}
    assert train_config(form) == recipe
    assert train_config({**form, "lam": 2.0}).lam == 2.0
    with pytest.raises(HsteerError, match="RespoDiff's SAM learning rate"):
        train_config({**form, "lr_sam": 0.0})
    circle = dict(zip(PRESET_FIELDS, preset_values("circle (shape)", 20)))
    assert circle["stored_scale"] == 1.0 and circle["objective"] == "codsma"
    codsma = train_config({**form, "objective": "codsma", "lr_sam": "not a number"})
    assert codsma.objective == "codsma" and not hasattr(codsma, "lr_sam")
    with pytest.raises(HsteerError, match="the stored length"):
        train_config({**form, "stored_scale": 0.0})
