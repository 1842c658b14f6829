"""Policies as objects: one registry, run specs that keep every field, draws read from the definition."""

import pytest
import torch

from hsteer import ConceptBank, ConceptPolicy, FairPolicy, PlainPolicy, SafePolicy, SldPolicy
from hsteer.policies import POLICIES
from hsteer.errors import HsteerError
from hsteer.steering.bank import Concept
from hsteer.policies import check_policy_object, policy_from_spec
from hsteer.policy_forms import parse_ratios


def _bank() -> ConceptBank:
    g = torch.Generator().manual_seed(0)
    names = {"gender": ("woman", "man"), "race": ("white", "black", "asian"), "safety": ("anti_a", "anti_b")}
    return ConceptBank(concepts=[Concept(n, group, "codsma", {"c": torch.randn(4, 2, 2, generator=g)}, {})
                                 for group, members in names.items() for n in members])


POLICY_CASES = [PlainPolicy(), SldPolicy("strong"), FairPolicy(("gender",)),
                FairPolicy(("gender", "race"), {"race": 0.8}, ratios={"woman": 0.3, "man": 0.7}),
                SafePolicy(scale=1.5), ConceptPolicy((("woman", 0.5), ("man", 0.5)))]


@pytest.mark.parametrize("policy", POLICY_CASES, ids=lambda p: p.describe())
def test_run_specs_round_trip_every_field(policy):
    spec = policy.to_spec()
    assert POLICIES[spec["kind"]] is type(policy)
    again = policy_from_spec(spec)
    assert again == policy and again.to_spec() == spec
    bank = _bank()
    assert [again.assign(bank, s) for s in range(20)] == [policy.assign(bank, s) for s in range(20)]


def test_drawable_is_read_from_the_definition_and_matches_the_draws():
    bank = _bank()
    never_man = FairPolicy(("gender",), ratios={"woman": 1.0, "man": 0.0})
    assert never_man.drawable(bank) == {"woman"}
    assert {n for s in range(50) for n, _ in never_man.assign(bank, s)} == {"woman"}
    assert FairPolicy(("gender", "race")).drawable(bank) == {"woman", "man", "white", "black", "asian"}
    assert SafePolicy().drawable(bank) == {"anti_a", "anti_b"}
    assert PlainPolicy().drawable(bank) == set() and SldPolicy().drawable(None) == set()
    with pytest.raises(HsteerError, match="not a concept of the groups"):
        FairPolicy(("gender",), ratios={"womn": 1.0, "man": 1.0}).drawable(bank)


def test_descriptions_name_what_is_applied():
    assert FairPolicy(("gender",), ratios={"woman": 0.3, "man": 0.7}).describe() == "fair: gender (woman 0.3, man 0.7)"
    assert SafePolicy(scale=2.0).describe() == "safe x2"
    assert SldPolicy("max").label == "sld-max" and FairPolicy(("a", "b")).label == "fair:a,b"


@pytest.mark.parametrize("bad", ["fair", None, 3, {"kind": "fair"}])
def test_a_policy_that_is_not_a_policy_object_is_refused_clearly(bad):
    with pytest.raises(HsteerError, match="policy must be a policy object"):
        check_policy_object(bad)


@pytest.mark.parametrize("spec, message", [({"kind": "nope"}, "unknown policy kind"),
                                           ({"kind": "fair"}, "bad fair policy spec"),
                                           ({"kind": "sld", "preset": "huge"}, "unknown SLD preset")])
def test_bad_run_specs_are_refused(spec, message):
    with pytest.raises(HsteerError, match=message):
        policy_from_spec(spec)


@pytest.mark.parametrize("text", ["square=1e308,circle=1e308", "a=nan", "a=-1", "a=inf", "a=x"])
def test_ratios_are_finite_bounded_weights(text):
    with pytest.raises(HsteerError, match="bad ratio"):
        parse_ratios([text])
    assert parse_ratios(["woman=0.3, man=0.7"]) == {"woman": 0.3, "man": 0.7}


def test_generate_applies_sld_through_prepare_as_the_evaluation_harness_does(sd_dir):
    """`generate(..., policy=SldPolicy(...))` makes SLD images: not the plain model's, and pixel for pixel
    those of the safe pipeline the harness generates with (`generate_jobs` on `sld_pipeline`)."""
    import numpy as np

    from hsteer import generate
    from hsteer.generation import ImageJob, generate_jobs
    from hsteer.model import load_pipeline
    from hsteer.model.sld import sld_pipeline

    pipe = load_pipeline(sd_dir)
    settings = dict(num_images_per_prompt=2, seed=5, steps=3, guidance=7.5, progress=False)
    plain = generate(pipe, "a doctor", **settings).images
    sld = generate(pipe, "a doctor", policy=SldPolicy("max"), **settings).images
    jobs = [ImageJob("a doctor", i, 5 + i, []) for i in range(2)]
    harness = generate_jobs(sld_pipeline(pipe, "max"), jobs, None, "sld-max", steps=3, guidance=7.5,
                            progress=False).images
    pixels = [[np.asarray(image, dtype=np.int16) for image in images] for images in (plain, sld, harness)]
    assert all(np.abs(a - b).max() > 2 for a, b in zip(pixels[0], pixels[1]))
    assert all(np.array_equal(a, b) for a, b in zip(pixels[1], pixels[2]))
    for policy in (PlainPolicy(), FairPolicy(("gender",)), SafePolicy(), ConceptPolicy((("woman", 1.0),))):
        assert policy.prepare(pipe) is pipe
