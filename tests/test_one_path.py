"""One steering path: `generate`, `attach` + a plain `pipe()` call and `with steer(...)` arm the same hook the
same way, so the same seeds give pixel-identical images; the hook lives in diffusers' own registry."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from bank_helpers import random_bank

from hsteer import FairPolicy, SteeringConfig, attach, detach, generate, steer
from hsteer.generation import delta_for
from hsteer.steering.bank import Concept, ConceptBank
from hsteer.steering.hook import HOOK_NAME, has_hook
from hsteer.model import pipeline_hspace_shape, unet_fingerprint

STEPS, GUIDANCE, SEEDS = 4, 3.0, (20, 21, 22, 23)
SRC = Path(__file__).resolve().parent.parent / "src" / "hsteer"


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _arrays(images):
    return [np.asarray(i) for i in images]


def _plain_call(pipe):
    return pipe("a doctor", num_images_per_prompt=len(SEEDS), num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                generator=_gens(SEEDS)).images


def _windowed_bank(pipe) -> ConceptBank:
    """Two groups learned in different step windows (colour early, shape late), as the demo's bank."""
    shape, g = pipeline_hspace_shape(pipe), torch.Generator().manual_seed(5)
    meta = {"unet_fingerprint": unet_fingerprint(pipe.unet)}
    concepts = [Concept(n, group, "codsma", {"c": torch.randn(shape, generator=g) * 3}, {**meta, "window": window})
                for names, group, window in ((("red", "blue"), "colour", [0.0, 0.5]),
                                             (("circle", "square"), "shape", [0.5, 1.0])) for n in names]
    return ConceptBank(concepts=concepts)


def test_generate_attach_and_steer_give_pixel_identical_images(sd_pipe):
    bank, policy = random_bank(sd_pipe), FairPolicy(("gender",))
    ref = generate(sd_pipe, "a doctor", num_images_per_prompt=len(SEEDS), seed=SEEDS[0], bank=bank, policy=policy,
                   steps=STEPS, guidance=GUIDANCE, progress=False)
    attach(sd_pipe, bank, policy)
    attached = _plain_call(sd_pipe)
    detach(sd_pipe)
    shape = pipeline_hspace_shape(sd_pipe)
    deltas = torch.stack([delta_for(bank, policy.assign(bank, s), shape) for s in SEEDS])
    with steer(sd_pipe, SteeringConfig(deltas)):
        steered = _plain_call(sd_pipe)
    plain = _plain_call(sd_pipe)
    assert {r.concepts[0]["name"] for r in ref.records} == {"woman", "man"}
    for a, b, c, p in zip(_arrays(ref.images), _arrays(attached), _arrays(steered), _arrays(plain)):
        assert np.array_equal(a, b) and np.array_equal(a, c)
        assert np.abs(a.astype(int) - p.astype(int)).max() > 5


def test_attach_puts_each_concept_in_its_own_window_as_generate_does(sd_pipe):
    bank, policy = _windowed_bank(sd_pipe), FairPolicy(("colour", "shape"))
    ref = generate(sd_pipe, "a doctor", num_images_per_prompt=len(SEEDS), seed=SEEDS[0], bank=bank, policy=policy,
                   steps=STEPS, guidance=GUIDANCE, progress=False)
    attach(sd_pipe, bank, policy)
    attached = _plain_call(sd_pipe)
    attach(sd_pipe, bank, policy, window=(0.0, 1.0))  # one explicit window for every concept: other images
    everywhere = _plain_call(sd_pipe)
    detach(sd_pipe)
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(ref.images), _arrays(attached)))
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(_arrays(attached),
                                                                          _arrays(everywhere))) > 5


def test_composes_with_diffusers_group_offloading(sd_dir):
    """hsteer's hook sits in the registry beside diffusers' own hooks and steers the same."""
    from hsteer.model import load_pipeline

    pipe = load_pipeline(sd_dir)
    bank, policy = random_bank(pipe), FairPolicy(("gender",))
    kwargs = dict(num_images_per_prompt=2, seed=3, bank=bank, policy=policy, steps=STEPS, guidance=GUIDANCE,
                  progress=False)
    ref = generate(pipe, "a doctor", **kwargs)
    pipe.unet.enable_group_offload(onload_device=torch.device("cpu"), offload_type="block_level",
                                   num_blocks_per_group=1)
    registries = [m._diffusers_hook for m in pipe.unet.modules() if getattr(m, "_diffusers_hook", None) is not None]
    theirs = [name for registry in registries for name in registry.hooks]
    assert theirs and HOOK_NAME not in theirs  # diffusers' offloading hooks, before hsteer's
    offloaded = generate(pipe, "a doctor", **kwargs)
    assert not has_hook(pipe.unet)  # released after the run
    attach(pipe, bank, policy)
    assert has_hook(pipe.unet)
    attached = pipe("a doctor", num_images_per_prompt=2, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                    generator=_gens((3, 4))).images
    detach(pipe)
    for a, b, c in zip(_arrays(ref.images), _arrays(offloaded.images), _arrays(attached)):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    assert not has_hook(pipe.unet)


def test_exactly_one_class_subclasses_the_hook_base():
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases}
                if "ModelHook" in bases or "SteeringHook" in bases:
                    found.append(f"{path.relative_to(SRC)}:{node.name}")
    assert found == ["steering/hook.py:SteeringHook"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "big", None])
def test_attach_refuses_a_scale_that_is_not_a_finite_number(sd_pipe, bad):
    from hsteer.errors import HsteerError

    with pytest.raises(HsteerError, match="scale must be a"):
        attach(sd_pipe, random_bank(sd_pipe), FairPolicy(("gender",)), scale=bad)
    assert not has_hook(sd_pipe.unet)
