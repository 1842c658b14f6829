"""The image-aware guard on the bundled model: the learned detector's storage and refusal, per-image
decisions in a mixed batch, unflagged images equal to plain and flagged ones equal to the blind safety
setting (the redraw design), the other designs, callable detectors, and the checks at the API edge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsteer import generate
from hsteer.errors import BankError, HsteerError
from hsteer.generation.guard import CallableDetector, GuardConfig
from hsteer.generation.guard_fit import DetectorFitConfig, fit_detector, prompts_of_group
from hsteer.steering.bank import ConceptBank
from hsteer.steering.detectors import LinearDetector
from hsteer.steering.randombank import random_bank
from hsteer.model.loading import load_pipeline
from hsteer.policies import FairPolicy, SafePolicy

HARMFUL = ["a photo of a violent figure", "a gory scene"]
HARMLESS = ["a photo of a figure", "a scene", "a photo of a red circle figure"]
MIXED = ["a photo of a nurse", "a photo of a bloody figure"]
SAMPLING = dict(steps=20, guidance=4.0, progress=False, seed=0)


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    return load_pipeline()


@pytest.fixture(scope="module")
def guarded_bank(world, tmp_path_factory):
    """A random 'safety' concept (what it draws does not matter here) and a detector learned on x0-hat."""
    bank = random_bank(world, {"safety": ["anti_harm"], "shape": ["circle", "square"]}, scale=3.0)
    bank.detectors["safety"] = fit_detector(world, HARMFUL, HARMLESS, DetectorFitConfig(step=4, images_per_prompt=4))
    path = tmp_path_factory.mktemp("guard") / "bank.safetensors"
    bank.save(path)
    return ConceptBank.load(path)


def _same(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_detector_learns_and_round_trips(guarded_bank):
    detector = guarded_bank.detectors["safety"]
    assert detector.step == 4 and detector.features == "latent"
    assert detector.meta["harmful_prompts"] == HARMFUL and detector.meta["harmless_prompts"] == HARMLESS
    assert detector.meta["false_positive_rate"] <= 0.01 and detector.meta["false_negative_rate"] <= 0.01
    assert guarded_bank.describe()["concepts"]  # the concepts are untouched by the detector's tensors


def test_bank_show_lists_the_detector_under_its_group(guarded_bank, tmp_path):
    """`hsteer bank show` (and --json) lists the stored detector: kind, feature, step, threshold, error rates."""
    import json

    from click.testing import CliRunner

    from hsteer.cli.main import main

    path = tmp_path / "bank.safetensors"
    guarded_bank.save(path)
    detector = guarded_bank.detectors["safety"]
    result = CliRunner().invoke(main, ["bank", "show", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    shown = [i for i, line in enumerate(lines) if "harm detector" in line]
    assert len(shown) == 1, result.output
    line = lines[shown[0]]
    assert line.startswith("  safety harm detector: learned-latent reads x0-hat latent")
    assert f"at step 4 of {detector.steps}" in line and "threshold 0.5" in line
    assert f"false positives {detector.meta['false_positive_rate']:.3f}" in line
    assert f"false negatives {detector.meta['false_negative_rate']:.3f}" in line
    safety = [i for i, text in enumerate(lines) if text.startswith("  safety/")]
    shape = [i for i, text in enumerate(lines) if text.startswith("  shape/")]
    assert max(safety) < shown[0] and all(i < max(safety) or i > shown[0] for i in shape)  # under its group
    result = CliRunner().invoke(main, ["bank", "show", "--json", str(path)])
    assert result.exit_code == 0, result.output
    stored = json.loads(result.output)["detectors"]
    assert list(stored) == ["safety"]
    assert stored["safety"] == {"kind": "learned-latent", "step": 4, "steps": detector.steps, "threshold": 0.5,
                                "features": "latent", "feature_shape": list(detector.feature_shape),
                                "false_positive_rate": detector.meta["false_positive_rate"],
                                "false_negative_rate": detector.meta["false_negative_rate"]}


def test_mixed_batch_decides_per_image(world, guarded_bank):
    kwargs = dict(num_images_per_prompt=4, batch_size=8, **SAMPLING)
    plain = generate(world, MIXED, **kwargs)
    blind = generate(world, MIXED, bank=guarded_bank, policy=SafePolicy(), respect_prompt=False, **kwargs)
    guarded = generate(world, MIXED, bank=guarded_bank, policy=SafePolicy(), guard=GuardConfig(), **kwargs)
    flagged = [r.extra["guard"]["flagged"] for r in guarded.records]
    assert flagged == [False] * 4 + [True] * 4  # one batch: the nurse plain, the bloody figure redrawn
    for image, record, plain_image, blind_image in zip(guarded.images, guarded.records, plain.images, blind.images):
        entry = record.extra["guard"]
        assert entry["detector"] == "learned-latent" and entry["step"] == 4 and entry["redrawn"] == entry["flagged"]
        assert _same(image, blind_image if entry["flagged"] else plain_image)
        assert [c["name"] for c in record.concepts] == (["anti_harm"] if entry["flagged"] else [])
    assert not _same(plain.images[4], blind.images[4])  # the redraw is a real change


def test_fair_concepts_stay_and_safety_joins_flagged(world, guarded_bank):
    out = generate(world, MIXED, num_images_per_prompt=2, bank=guarded_bank, policy=FairPolicy(("shape",)),
                   guard=GuardConfig(), **SAMPLING)
    names = [[c["name"] for c in r.concepts] for r in out.records]
    assert all(n[0] in ("circle", "square") for n in names)
    assert [("anti_harm" in n) for n in names] == [r.extra["guard"]["flagged"] for r in out.records]
    flagged = [r.extra["guard"]["flagged"] for r in out.records]
    assert flagged[:2] == [False, False] and any(flagged[2:])  # decided on the fair-steered prediction


@pytest.mark.parametrize("design", ["switch", "soft"])
def test_other_designs(world, guarded_bank, design):
    out = generate(world, MIXED, num_images_per_prompt=2, bank=guarded_bank, policy=SafePolicy(),
                   guard=GuardConfig(design=design), **SAMPLING)
    plain = generate(world, MIXED, num_images_per_prompt=2, **SAMPLING)
    rows = [r.extra["guard"] for r in out.records]
    assert [r["design"] for r in rows] == [design] * 4 and [r["flagged"] for r in rows] == [False, False, True, True]
    assert _same(out.images[0], plain.images[0]) and not _same(out.images[2], plain.images[2])


def test_callable_detector_and_threshold(world, guarded_bank):
    seen = []

    def brightness(images, step):
        seen.append((tuple(images.shape), step))
        assert float(images.min()) >= 0 and float(images.max()) <= 1
        return images.mean(dim=(1, 2, 3))

    out = generate(world, MIXED, num_images_per_prompt=1, bank=guarded_bank, policy=SafePolicy(),
                   guard=GuardConfig(detector=CallableDetector(brightness, threshold=0.0001, step=3)), **SAMPLING)
    assert seen == [((2, 3, 32, 32), 3)]
    assert all(r.extra["guard"]["flagged"] for r in out.records)
    with pytest.raises(HsteerError, match="2 scores for"):
        generate(world, MIXED[:1], num_images_per_prompt=1, bank=guarded_bank, policy=SafePolicy(),
                 guard=GuardConfig(detector=CallableDetector(lambda x, s: [0.0, 1.0])), **SAMPLING)


def test_refusals(world, guarded_bank, tmp_path):
    bare = random_bank(world, {"safety": ["anti_harm"]})
    with pytest.raises(HsteerError, match="no harm detector for group 'safety'.*hsteer guard fit"):
        generate(world, "a scene", bank=bare, policy=SafePolicy(), guard=GuardConfig(), **SAMPLING)
    with pytest.raises(HsteerError, match="pass a bank"):
        generate(world, "a scene", guard=GuardConfig(), **SAMPLING)
    with pytest.raises(HsteerError, match="decision step 30 is not one of the run's 20 steps"):
        generate(world, "a scene", bank=guarded_bank, policy=SafePolicy(), guard=GuardConfig(step=30), **SAMPLING)
    with pytest.raises(HsteerError, match="unknown guard design"):
        GuardConfig(design="maybe")
    with pytest.raises(HsteerError, match="threshold"):
        GuardConfig(threshold=float("nan"))
    stored = guarded_bank.detectors["safety"]
    other = LinearDetector(torch.ones(100), torch.zeros(1), torch.zeros(100), torch.ones(100), step=4, steps=20)
    assert stored.size == 1024
    with pytest.raises(BankError, match="reads 100 latent values.*gives 1024.*hsteer guard fit"):
        generate(world, "a scene", bank=guarded_bank, policy=SafePolicy(), guard=GuardConfig(detector=other),
                 **SAMPLING)


def test_damaged_detector_is_refused_on_load(guarded_bank, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = tmp_path / "bank.safetensors"
    guarded_bank.save(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    tensors["detector:safety/std"] = -tensors["detector:safety/std"]
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(BankError, match="std must be positive"):
        ConceptBank.load(path)
    del tensors["detector:safety/weight"]
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(BankError, match="tensor 'weight' is missing"):
        ConceptBank.load(path)


def test_prompts_of_group_reads_pairs():
    bank = ConceptBank()
    from hsteer.steering.bank import Concept

    bank.add(Concept("anti_harm", "safety", "respodiff", {"ram": torch.zeros(2, 2)},
                     {"pairs": [["a violent scene", "a scene"], ["a scene", "a scene"], ["a cat", "a cat"]]}))
    assert prompts_of_group(bank, "safety") == (["a violent scene"], ["a scene", "a cat"])
    bank["anti_harm"].meta["pairs"] = [["a", "a"]]
    with pytest.raises(HsteerError, match="record no prompts to fit from"):
        prompts_of_group(bank, "safety")


def test_the_world_detector_also_learns_the_prompts_found_against_the_guard():
    """The world recipe's detector prompts: the pairs' own, the adaptive attack's found prompts as harmful and
    their harm-free forms as harmless (no harm word among the harmless)."""
    from hsteer.apps.recipes import GUARD_FOUND_PROMPTS, guard_fit_prompts
    from hsteer.steering.bank import Concept
    from hsteer.world.scene import HARM_WORDS

    bank = ConceptBank()
    bank.add(Concept("anti_harm", "safety", "respodiff", {"ram": torch.zeros(2, 2)},
                     {"pairs": [["a violent scene", "a scene"], ["a scene", "a scene"]]}))
    harmful, harmless = guard_fit_prompts(bank)
    assert harmful == ["a violent scene", *GUARD_FOUND_PROMPTS]
    assert harmless[0] == "a scene" and len(harmless) == 1 + len(GUARD_FOUND_PROMPTS)
    assert not any(word in prompt.split() for prompt in harmless for word in HARM_WORDS)
    assert all(any(w in p.split() for w in HARM_WORDS) for p in GUARD_FOUND_PROMPTS)



def test_each_family_recipe_says_which_found_prompts_its_detector_learns():
    """The DiT's demo detector learns the prompts found against it (and the U-Net's), each beside its harm-free
    form; the U-Net's learns the pairs alone (its hardened detector flags harmless images of the demo)."""
    from hsteer.apps.recipes import DIT_GUARD_FOUND_PROMPTS, GUARD_FOUND_PROMPTS, family_recipe, guard_fit_prompts
    from hsteer.generation.guard_fit import prompts_of_group
    from hsteer.steering.bank import Concept
    from hsteer.world.scene import HARM_WORDS

    bank = ConceptBank()
    bank.add(Concept("anti_harm", "safety", "respodiff", {"ram": torch.zeros(2, 2)},
                     {"pairs": [["a violent scene", "a scene"], ["a scene", "a scene"]]}))
    assert family_recipe("unet").guard_found == ()
    assert guard_fit_prompts(bank, family_recipe("unet").guard_found) == prompts_of_group(bank, "safety")
    found = family_recipe("sd3").guard_found
    assert found == GUARD_FOUND_PROMPTS + DIT_GUARD_FOUND_PROMPTS and family_recipe("flux").guard_found == found
    harmful, harmless = guard_fit_prompts(bank, found)
    assert harmful == ["a violent scene", *found] and len(harmless) == 1 + len(found)
    assert all(any(w in p.split() for w in HARM_WORDS) for p in DIT_GUARD_FOUND_PROMPTS)
    assert not any(word in prompt.split() for prompt in harmless for word in HARM_WORDS)

def test_attached_pipeline_is_guarded_per_call(world, guarded_bank):
    from hsteer import attach, detach
    from hsteer.generation.attached import guard_decisions

    kwargs = dict(num_images_per_prompt=2, batch_size=4, **SAMPLING)
    made = generate(world, MIXED, bank=guarded_bank, policy=SafePolicy(), guard=GuardConfig(), **kwargs)
    attach(world, guarded_bank, SafePolicy(), guard=GuardConfig())
    try:
        generators = [torch.Generator().manual_seed(s) for s in (0, 1, 0, 1)]
        called = world(prompt=[MIXED[0]] * 2 + [MIXED[1]] * 2, generator=generators, output_type="pil").images
        decisions = guard_decisions(world)
        with pytest.raises(HsteerError, match="pass generator="):
            world(prompt=MIXED[0])
    finally:
        detach(world)
    assert [d["flagged"] for d in decisions] == [False, False, True, True]
    assert all(_same(a, b) for a, b in zip(called, made.images))
