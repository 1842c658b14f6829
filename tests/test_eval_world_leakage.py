"""evaluate_world measures what a steered policy does to the attributes it is not for (docs/methods.md §8)."""

import pytest
import torch

from hsteer.world.evaluate import WorldEvalConfig, evaluate_world
from hsteer.policies import ConceptPolicy, FairPolicy, PlainPolicy, SafePolicy


@pytest.fixture(scope="module")
def world():
    """The bundled model and a bank of strong random concepts (they leak, which is what is measured here)."""
    from hsteer.steering.bank import Concept, ConceptBank
    from hsteer.model import load_pipeline, pipeline_hspace_shape, unet_fingerprint

    pipe = load_pipeline(None)
    shape, fp = pipeline_hspace_shape(pipe), unet_fingerprint(pipe.unet)
    torch.manual_seed(0)
    bank = ConceptBank(concepts=[Concept(n, g, "codsma", {"c": 20 * torch.randn(shape)}, {"unet_fingerprint": fp})
                                 for n, g in (("circle", "shape"), ("square", "shape"), ("anti_harm", "safety"))])
    config = WorldEvalConfig(professions=("doctor", "nurse"), templates=("a photo of a {}",), images_per_prompt=4,
                             harm_prompts=(), steps=10)
    plain = evaluate_world(pipe, config, progress=False)
    return pipe, bank, config, plain


def test_plain_has_intervals_and_no_untargeted(world):
    _, _, _, plain = world
    s = plain.summary
    assert "untargeted" not in s and "targeted" not in s
    lo, hi = s["fidelity_ci"]
    assert lo <= s["fidelity"]["mean"] <= hi
    for group, value in s["deviation_ratio"]["mean_all"].items():
        lo, hi = s["deviation_ratio_ci"]["mean_all"][group]
        assert lo <= value <= hi
    assert set(s["deviation_ratio_ci"]["per_profession"]) == {"doctor", "nurse"}


def test_fair_shape_against_plain_by_hand(world):
    pipe, bank, config, plain = world
    given = evaluate_world(pipe, config, bank=bank, policy=FairPolicy(("shape",)), progress=False, baseline=plain)
    made = evaluate_world(pipe, config, bank=bank, policy=FairPolicy(("shape",)), progress=False)
    assert given.summary["untargeted"] == made.summary["untargeted"]  # the plain run is the same either way
    s = given.summary
    assert s["targeted"] == ["shape"] and set(s["untargeted"]) == {"colour", "profession"}
    same = [a == b for prompt in given.labels
            for a, b in zip(given.labels[prompt]["colour"], plain.labels[prompt]["colour"])]
    colour = s["untargeted"]["colour"]
    assert colour["agreement"] == pytest.approx(sum(same) / len(same)) and colour["n"] == 8
    assert colour["deviation_ratio_plain"] == pytest.approx(plain.summary["deviation_ratio"]["mean_all"]["colour"])
    assert colour["deviation_ratio"] == pytest.approx(s["deviation_ratio"]["mean_all"]["colour"])
    prof = s["untargeted"]["profession"]
    assert prof["fidelity"] == pytest.approx(s["fidelity"]["mean"])
    assert prof["fidelity_plain"] == pytest.approx(plain.summary["fidelity"]["mean"])
    for entry in s["untargeted"].values():
        for key, value in entry.items():
            if key + "_ci" in entry:
                lo, hi = entry[key + "_ci"]
                assert lo - 1e-9 <= value <= hi + 1e-9, key
    skipped = evaluate_world(pipe, config, bank=bank, policy=FairPolicy(("shape",)), progress=False,
                             untargeted=False)
    assert "untargeted" not in skipped.summary


def test_safe_and_explicit_concepts(world):
    pipe, bank, config, plain = world
    safe = evaluate_world(pipe, config, bank=bank, policy=SafePolicy(), progress=False, baseline=plain).summary
    assert safe["targeted"] == ["safety"] and set(safe["untargeted"]) == {"shape", "colour", "profession"}
    square = evaluate_world(pipe, config, bank=bank, policy=ConceptPolicy((("square", 1.0),)), progress=False,
                            baseline=plain).summary
    assert square["targeted"] == ["shape"] and set(square["untargeted"]) == {"colour", "profession"}
    other = WorldEvalConfig(professions=("doctor",), templates=("a photo of a {}",), images_per_prompt=4,
                            harm_prompts=(), steps=10, seed=50)
    with pytest.raises(Exception, match="lacks"):
        evaluate_world(pipe, other, bank=bank, policy=SafePolicy(), progress=False, baseline=plain)
    assert PlainPolicy().name == plain.summary["policy"]
