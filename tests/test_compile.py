"""Steering survives torch.compile: attach, then compile; swaps, scales and windows recompile nothing.

On CPU with a counting backend that runs the captured graphs eagerly (dynamo's tracing and guards are
what decide recompilation; inductor would only make each compilation slower here).
"""

import numpy as np
import pytest
import torch

from hsteer import ConceptBank, ConceptPolicy, FairPolicy, SteeringConfig, attach, detach, generate, steer
from hsteer.errors import HsteerError
from hsteer.steering.bank import Concept
from hsteer.steering.hook import has_hook
from hsteer.model import load_pipeline, pipeline_hspace_shape, unet_fingerprint

STEPS, GUIDANCE = 3, 3.0


class CountingBackend:
    """A torch.compile backend that counts compilations (one per graph dynamo captures)."""

    def __init__(self) -> None:
        self.compilations = 0

    def __call__(self, gm, example_inputs):
        self.compilations += 1
        return gm.forward


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _bank(pipe):
    shape = pipeline_hspace_shape(pipe)
    g = torch.Generator().manual_seed(3)
    meta = {"unet_fingerprint": unet_fingerprint(pipe.unet)}
    return ConceptBank(concepts=[Concept(n, "gender", "codsma", {"c": torch.randn(shape, generator=g) * 3}, meta)
                                 for n in ("woman", "man")])


def _call(pipe, seeds=(0, 1)):
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe("a doctor", num_images_per_prompt=len(seeds), num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                generator=gens).images


def _max_diff(a, b):
    return max(int(np.abs(np.asarray(x, dtype=np.int16) - np.asarray(y, dtype=np.int16)).max()) for x, y in zip(a, b))


def test_attached_then_compiled_stays_steered_and_swaps_without_recompiling(sd_dir):
    eager = load_pipeline(sd_dir)
    bank = _bank(eager)
    expected = {}
    for name, policy, scale, window in (("woman", ConceptPolicy((("woman", 1.0),)), 1.0, None),
                                        ("man", ConceptPolicy((("man", 1.0),)), 1.0, None),
                                        ("man_half", ConceptPolicy((("man", 1.0),)), 0.5, None),
                                        ("fair_early", FairPolicy(("gender",)), 1.0, (0.0, 0.5))):
        attach(eager, bank, policy, scale=scale, window=window)
        expected[name] = _call(eager)
    detach(eager)
    plain = _call(eager)

    pipe = load_pipeline(sd_dir)
    attach(pipe, bank, ConceptPolicy((("woman", 1.0),)))
    backend = CountingBackend()
    pipe.unet = torch.compile(pipe.unet, backend=backend)
    assert _max_diff(_call(pipe), expected["woman"]) <= 2
    warm = backend.compilations
    assert warm >= 1
    attach(pipe, bank, ConceptPolicy((("man", 1.0),)))
    assert _max_diff(_call(pipe), expected["man"]) <= 2
    attach(pipe, bank, ConceptPolicy((("man", 1.0),)), scale=0.5)
    assert _max_diff(_call(pipe), expected["man_half"]) <= 2
    attach(pipe, bank, FairPolicy(("gender",)), window=(0.0, 0.5))  # per-image draws and a window: same graph
    assert _max_diff(_call(pipe), expected["fair_early"]) <= 2
    assert backend.compilations == warm, "a concept swap recompiled the U-Net"
    assert _max_diff(expected["woman"], expected["man"]) > 5

    detach(pipe)  # compiled code would not see a removed hook: it stays registered, disarmed
    assert _max_diff(_call(pipe), plain) == 0
    after_detach = backend.compilations
    attach(pipe, bank, ConceptPolicy((("woman", 1.0),)))  # re-attach: the armed graph is still cached
    assert _max_diff(_call(pipe), expected["woman"]) <= 2
    assert backend.compilations == after_detach


def test_attaching_first_after_compile_is_refused_clearly(sd_pipe):
    bank = _bank(sd_pipe)
    sd_pipe.unet = torch.compile(sd_pipe.unet, backend=CountingBackend())
    with pytest.raises(HsteerError, match="Attach first, then compile"):
        attach(sd_pipe, bank, ConceptPolicy((("woman", 1.0),)))
    assert not has_hook(sd_pipe.unet)


def test_compile_repeated_blocks_keeps_steering_working(sd_dir):
    """diffusers' `compile_repeated_blocks()` compiles the U-Net's transformer blocks, not the mid-block's
    own call, so both `steer()` and `attach()` work on such a U-Net, attached before or after."""
    eager = load_pipeline(sd_dir)
    bank = _bank(eager)
    expected = generate(eager, "a doctor", num_images_per_prompt=2, bank=bank, policy=FairPolicy(("gender",)),
                        steps=STEPS, guidance=GUIDANCE, progress=False).images
    pipe = load_pipeline(sd_dir)
    backend = CountingBackend()
    pipe.unet.compile_repeated_blocks(backend=backend)
    attach(pipe, bank, FairPolicy(("gender",)))
    assert _max_diff(_call(pipe), expected) <= 2
    assert backend.compilations >= 1  # the transformer blocks really were compiled
    detach(pipe)
    with steer(pipe, SteeringConfig(bank["woman"].delta())):
        steered = _call(pipe, seeds=(0,))
    assert _max_diff(steered, _call(pipe, seeds=(0,))) > 5
