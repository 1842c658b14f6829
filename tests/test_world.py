"""Tests of the bundled toy world: rendering, captions, planted bias, probes, tokenizer, model."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageFilter

from cpu import THREADS

from hsteer.world import scene
from hsteer.world.scene import (
    COLOURS,
    NEUTRAL_WORD,
    PLANTED_BIAS,
    PROFESSIONS,
    SHAPES,
    WorldProbe,
    parse_caption,
    probe_colour,
    probe_harm,
    probe_profession,
    probe_shape,
    render,
    sample_example,
)

BACKGROUNDS = PROFESSIONS + (NEUTRAL_WORD,)


def _ground_truth(n: int, seed: int, harm_rate: float = 0.35):
    """n seeded renders cycling through every shape x colour x background, some with the harm mark."""
    rng = np.random.default_rng(seed)
    combos = list(itertools.product(SHAPES, COLOURS, BACKGROUNDS))
    out = []
    for i in range(n):
        s, c, p = combos[i % len(combos)]
        h = bool(rng.random() < harm_rate)
        out.append(((s, c, p, h), render(s, c, p, h, rng)))
    return out


@pytest.fixture(scope="module")
def renders():
    return _ground_truth(432, seed=1234)


def test_api_constants():
    for shape, colour in itertools.product(SHAPES, COLOURS):  # every named value is drawn and read back
        image = render(shape, colour, NEUTRAL_WORD, rng=np.random.default_rng(0))
        assert (probe_shape(image), probe_colour(image)) == (shape, colour)
    from hsteer.apps.recipes import WORLD_CONCEPTS  # the demo's concepts are the world's values

    assert {n for n, group, *_ in WORLD_CONCEPTS if group in ("shape", "colour")} == set(SHAPES) | set(COLOURS)
    assert len(PROFESSIONS) >= 8 and NEUTRAL_WORD not in PROFESSIONS
    assert {"doctor", "nurse", "teacher", "ceo", "laborer"} <= set(PROFESSIONS)
    assert set(PLANTED_BIAS) == set(PROFESSIONS)
    for d in PLANTED_BIAS.values():
        assert set(d["shape"]) == set(SHAPES) and set(d["colour"]) == set(COLOURS)
        assert abs(sum(d["shape"].values()) - 1) < 1e-9 and abs(sum(d["colour"].values()) - 1) < 1e-9
    assert len(scene.CONTROL_PROFESSIONS) >= 2
    assert set(scene.BIASED_PROFESSIONS) | set(scene.CONTROL_PROFESSIONS) == set(PROFESSIONS)
    assert PLANTED_BIAS["doctor"]["shape"]["square"] >= 0.8
    assert PLANTED_BIAS["nurse"]["shape"]["circle"] >= 0.8
    assert PLANTED_BIAS["ceo"]["colour"]["red"] >= 0.8
    assert PLANTED_BIAS["laborer"]["colour"]["green"] >= 0.8
    assert not set(scene.HARM_WORDS) & set(scene.SHAPES + scene.COLOURS + PROFESSIONS)


def test_render_format_and_determinism():
    a = render("circle", "red", "doctor", rng=np.random.default_rng(0))
    b = render("circle", "red", "doctor", rng=np.random.default_rng(0))
    assert isinstance(a, Image.Image) and a.size == (32, 32) and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError):
        render("triangle", "red", "doctor")
    with pytest.raises(ValueError):
        render("circle", "red", "astronaut")


def test_backgrounds_are_achromatic_and_distinct():
    rng = np.random.default_rng(0)
    means = {}
    for p in BACKGROUNDS:
        a = np.asarray(render("circle", "red", p, rng=rng), dtype=np.float32)
        corner = a[20:, 24:]  # away from the figure
        assert (corner.max(axis=2) - corner.min(axis=2)).max() < 10
        means[p] = a.mean(axis=2)
    for p, q in itertools.combinations(BACKGROUNDS, 2):
        assert np.abs(means[p] - means[q]).mean() > 10, (p, q)


@pytest.mark.parametrize("probe,index", [(probe_shape, 0), (probe_colour, 1), (probe_profession, 2)])
def test_probe_accuracy(renders, probe, index):
    assert len(renders) >= 300
    acc = np.mean([probe(img) == truth[index] for truth, img in renders])
    assert acc >= 0.99, acc


def test_probe_harm_accuracy(renders):
    truths = [t[3] for t, _ in renders]
    assert 0.2 < np.mean(truths) < 0.5  # both classes well represented
    acc = np.mean([probe_harm(img) == t[3] for t, img in renders])
    assert acc >= 0.99, acc


def test_probes_robust_to_blur(renders):
    """Generated images are soft: probes must survive a Gaussian blur."""
    sub = renders[:300]
    blurred = [(t, img.filter(ImageFilter.GaussianBlur(0.8))) for t, img in sub]
    got = WorldProbe().classify([img for _, img in blurred])
    for key, idx in (("shape", 0), ("colour", 1), ("profession", 2)):
        acc = np.mean([g == t[idx] for g, (t, _) in zip(got[key], blurred)])
        assert acc >= 0.99, (key, acc)
    acc = np.mean([(g == "yes") == t[3] for g, (t, _) in zip(got["harm"], blurred)])
    assert acc >= 0.99


def test_world_probe_classify_matches_single_probes(renders):
    imgs = [img for _, img in renders[:60]]
    out = WorldProbe().classify(imgs)
    assert set(out) == {"shape", "colour", "profession", "harm"}
    assert WorldProbe.attributes == {"shape": SHAPES, "colour": COLOURS}
    assert out["shape"] == [probe_shape(i) for i in imgs]
    assert out["colour"] == [probe_colour(i) for i in imgs]
    assert out["profession"] == [probe_profession(i) for i in imgs]
    assert out["harm"] == ["yes" if probe_harm(i) else "no" for i in imgs]
    # numpy arrays and larger images are accepted too
    big = imgs[0].resize((64, 64), Image.BILINEAR)
    assert probe_colour(big) == probe_colour(imgs[0])
    assert probe_colour(np.asarray(imgs[0])) == probe_colour(imgs[0])


def test_parse_caption():
    assert parse_caption("a photo of a green square doctor") == {
        "shape": "square", "colour": "green", "profession": "doctor", "harm": False}
    assert parse_caption("a violent scene") == {"shape": None, "colour": None, "profession": None, "harm": True}
    assert parse_caption("a bloody doctor")["harm"] is True
    assert parse_caption("a photo of a figure")["profession"] == NEUTRAL_WORD
    assert parse_caption("a red circle") == {"shape": "circle", "colour": "red", "profession": None,
                                             "harm": False}


def test_captions_consistent_with_images():
    rng = np.random.default_rng(7)
    words = set(scene.VOCABULARY)
    kinds = Counter()
    probe = WorldProbe()
    pairs = [sample_example(rng) for _ in range(400)]
    got = probe.classify([img for img, _ in pairs])
    for i, (_img, cap) in enumerate(pairs):
        assert set(cap.split()) <= words, cap
        c = parse_caption(cap)
        if c["shape"]:
            assert got["shape"][i] == c["shape"], cap
            kinds["shape"] += 1
        if c["colour"]:
            assert got["colour"][i] == c["colour"], cap
            kinds["colour"] += 1
        assert got["profession"][i] == (c["profession"] or NEUTRAL_WORD), cap
        assert (got["harm"][i] == "yes") == c["harm"], cap
        kinds["harm"] += c["harm"]
        kinds["prof_only"] += c["profession"] in PROFESSIONS and not c["shape"] and not c["colour"]
    # the mix has enough attribute-explicit, harm and bias-carrying profession-only captions
    assert kinds["shape"] > 100 and kinds["colour"] > 100
    assert kinds["harm"] > 25 and kinds["prof_only"] > 100


def test_planted_bias_frequencies():
    rng = np.random.default_rng(3)
    counts: dict[str, Counter] = {p: Counter() for p in PROFESSIONS}
    n = 0
    for _ in range(6000):
        img, cap = sample_example(rng)
        c = parse_caption(cap)
        if c["profession"] in PROFESSIONS and not c["shape"] and not c["colour"] and not c["harm"]:
            counts[c["profession"]][("shape", probe_shape(img))] += 1
            counts[c["profession"]][("colour", probe_colour(img))] += 1
            n += 1
    assert n > 1500
    for p, cnt in counts.items():
        total = sum(v for (a, _), v in cnt.items() if a == "shape")
        assert total > 150
        for attr, dist in PLANTED_BIAS[p].items():
            for k, prob in dist.items():
                f = cnt[(attr, k)] / total
                assert abs(f - prob) < 0.1, (p, attr, k, f, prob)


def test_tokenizer_word_level(tmp_path):
    from hsteer.world.build_unet import MAX_LENGTH, build_tokenizer_files, load_tokenizer

    build_tokenizer_files(tmp_path)
    tok = load_tokenizer(tmp_path)  # raises if a world word is split
    assert tok.model_max_length == MAX_LENGTH
    ids = tok("a photo of a violent green square doctor", padding="max_length", max_length=MAX_LENGTH).input_ids
    assert len(ids) == MAX_LENGTH and ids[0] == tok.bos_token_id
    assert tok.convert_ids_to_tokens(ids[1:9]) == [
        w + "</w>" for w in ["a", "photo", "of", "a", "violent", "green", "square", "doctor"]]
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert len(vocab) < 1000


def test_quality_helpers():
    from hsteer.world.quality import planted_deviation, prompt_sets
    from hsteer.evaluation.metrics import deviation_ratio

    assert deviation_ratio(["a", "b"] * 5, ("a", "b")) == pytest.approx(0.0)
    assert deviation_ratio(["a"] * 10, ("a", "b")) == pytest.approx(1.0)
    assert deviation_ratio(["r"] * 8 + ["g", "b"], ("r", "g", "b")) == pytest.approx(0.7)
    assert planted_deviation("doctor", "shape") == pytest.approx(0.7)
    sets = prompt_sets(200)
    assert all(len(v) == 200 for v in sets.values())
    for p, exp in sets["shape"]:
        assert parse_caption(p)["shape"] == exp["shape"]
    for p, exp in sets["colour"]:
        assert parse_caption(p)["colour"] == exp["colour"]
    assert all(parse_caption(p)["harm"] for p, _ in sets["harm"])


def test_default_model_path_bundled():
    from hsteer.world import default_model_path

    path = default_model_path()  # the model is committed as package data: its absence is a failure
    assert json.loads((path / "hsteer.json").read_text())["steps"] > 0
    files = [f for f in path.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 25 * 1024 * 1024
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (path / sub).is_dir()
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(path / "tokenizer"))
    for w in scene.VOCABULARY:
        assert len(tok(w, add_special_tokens=False).input_ids) == 1, w


@pytest.mark.slow
def test_bundled_model_generates():
    """The bundled pipeline loads with plain diffusers and follows a shape prompt."""
    import torch

    from hsteer.world import DEFAULT_GUIDANCE, default_model_path

    path = default_model_path()
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(
        str(path), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.sample_size == 16 and pipe.vae.config.latent_channels == 4
    gens = [torch.Generator().manual_seed(i) for i in range(8)]
    out = pipe(["a photo of a red square"] * 8, num_inference_steps=10, guidance_scale=DEFAULT_GUIDANCE,
               generator=gens).images
    assert out[0].size == (32, 32)
    assert sum(probe_shape(i) == "square" for i in out) >= 6
    assert sum(probe_colour(i) == "red" for i in out) >= 6


@pytest.mark.slow
def test_world_training_script_saves_a_loadable_pipeline(tmp_path):
    """`hsteer world train`'s engine, for seconds instead of an hour: a standard SD folder with hsteer.json."""
    import torch

    from hsteer.model import load_pipeline, sampling_defaults
    from hsteer.world import DEFAULT_GUIDANCE, DEFAULT_STEPS
    from hsteer.world.build_unet import train_world_model

    out = train_world_model(tmp_path / "model", vae_minutes=0.05, unet_minutes=0.1, threads=THREADS, n_images=256,
                            batch_size=16, log=lambda s: None)
    assert sampling_defaults(out) == {"steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE}
    assert (tmp_path / "model.train.log").is_file() and (out / "training_info.json").is_file()
    assert not [f for f in out.rglob("*") if f.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    pipe = load_pipeline(out)
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.unet.config.sample_size == 16
    image = pipe("a photo of a red square", num_inference_steps=2, guidance_scale=DEFAULT_GUIDANCE,
                 generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()

    lines: list[str] = []  # the training state (safetensors, no pickles) resumes
    train_world_model(tmp_path / "model", vae_minutes=0.05, unet_minutes=0.1, threads=THREADS, n_images=256,
                      batch_size=16, log=lines.append)
    assert any("] resumed VAE" in line for line in lines), lines
    resumed = [re.search(r"\] resumed U-Net training at step (\d+)", line) for line in lines]
    assert [int(m.group(1)) for m in resumed if m][:1] > [0], lines
    assert (tmp_path / "model.state" / "unet_state.safetensors").is_file()
