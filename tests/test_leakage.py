"""Leakage on untargeted attributes (docs/methods.md §8): pairing, agreement, change against plain, intervals."""

import pytest

from hsteer.errors import HsteerError
from hsteer.evaluation.leakage import (concept_names, fmt_ci, pair_items, strata, targeted_groups,
                                       untargeted_summary)
from hsteer.policies import ConceptPolicy, FairPolicy, PlainPolicy, SafePolicy


def _items(colours, concepts, profession="nurse", prompt="a photo of a nurse"):
    return [{"prompt": prompt, "seed": n, "profession": profession, "colour": c, "profession_read": profession,
             "concepts": [k] if k else []} for n, (c, k) in enumerate(zip(colours, concepts))]


def test_untargeted_colour_by_hand():
    # plain: 2 red, 1 green, 1 blue; fair shape redraws two of them green: agreement 2/4.
    plain = _items(["red", "red", "green", "blue"], [None] * 4)
    steered = _items(["red", "green", "green", "green"], ["circle", "square", "circle", "square"])
    out = untargeted_summary(steered[::-1], plain, {"colour": ("red", "green", "blue"),
                                                    "profession": ("profession_read", None)}, "profession")
    colour = out["colour"]
    assert colour["agreement"] == 0.5 and colour["n"] == 4
    # plain 1/2 red: |0.5 - 1/3| / (2/3) = 0.25; steered 3/4 green: (0.75 - 1/3) / (2/3) = 0.625
    assert colour["deviation_ratio_plain"] == pytest.approx(0.25)
    assert colour["deviation_ratio"] == pytest.approx(0.625)
    assert colour["deviation_ratio_change"] == pytest.approx(0.375)
    for key in ("agreement", "deviation_ratio", "deviation_ratio_plain", "deviation_ratio_change"):
        lo, hi = colour[key + "_ci"]
        assert lo <= colour[key] <= hi, key
    assert out["profession"]["agreement"] == 1 and out["profession"]["fidelity_change"] == 0
    # a Wilson interval: the estimate 1.0 is its upper end, and two images cannot pin it down
    lo, hi = out["profession"]["fidelity_ci"]
    assert hi == 1.0 and 0.3 < lo < 1.0


def test_pairing_needs_the_same_prompts_and_seeds():
    plain = _items(["red"] * 2, [None] * 2)
    steered = _items(["red"] * 3, [None] * 3)
    with pytest.raises(HsteerError, match="lacks 1 of the run's 3"):
        pair_items(steered, plain)
    assert pair_items(steered[:2][::-1], plain) == plain[::-1]


def test_strata_and_concept_names():
    assert concept_names([{"name": "b", "scale": 1}, {"name": "a", "scale": 1}]) == ("a", "b")
    assert concept_names([("square", 1.0)]) == ("square",) and concept_names(None) == ()
    assert strata(_items(["red"], ["circle"]), "profession") == [("nurse", ("circle",))]


def test_targeted_groups():
    assert targeted_groups(PlainPolicy()) == set()
    assert targeted_groups(FairPolicy(("shape",))) == {"shape"}
    assert targeted_groups(SafePolicy()) == {"safety"}

    class Bank(dict):
        pass

    bank = Bank(square=type("C", (), {"group": "shape"})())
    assert targeted_groups(ConceptPolicy((("square", 1.0),)), bank) == {"shape"}
    with pytest.raises(HsteerError):
        targeted_groups(ConceptPolicy((("square", 1.0),)))


def test_fmt_ci():
    assert fmt_ci(0.5, [0.25, 0.75]) == "0.500 [0.250, 0.750]"
    assert fmt_ci(None, None) == "-" and fmt_ci(0.5, None, 2) == "0.50"
