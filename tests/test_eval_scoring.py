"""Evaluation scorers: CLIP zero-shot and alignment, I2P CSV and rates, Q16 and its converter, NudeNet, COCO."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from hsteer.errors import HsteerError

DATA = Path(__file__).parent / "data"


def build_clip(folder: Path, projection: int = 12, seed: int = 0) -> Path:
    """A tiny random CLIPModel + CLIPProcessor (word-level tokenizer, 32 px images) saved to `folder`."""
    from conftest import write_tokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(seed)
    write_tokenizer(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    v = len(tokenizer)
    config = CLIPConfig(
        text_config={"vocab_size": v, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": v - 2,
                     "eos_token_id": v - 1, "pad_token_id": v - 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=projection)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return build_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def scorer(clip_dir):
    from hsteer.evaluation.clip import ClipScorer

    return ClipScorer(clip_dir)


def noise_images(n: int, size: int = 40, seed: int = 0):
    from PIL import Image

    rng = np.random.RandomState(seed)
    return [Image.fromarray(rng.randint(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


# --- CLIP --------------------------------------------------------------------------------------------


def test_clip_zero_shot_and_alignment_match_a_manual_computation(scorer):
    from hsteer.evaluation.clip import ClipZeroShot

    images = noise_images(6)
    img = scorer.image_embeds(images)
    assert img.shape == (6, 12) and torch.allclose(img.norm(dim=-1), torch.ones(6), atol=1e-5)
    texts = ["a woman", "a man", "a photo of a doctor"]
    classifier = ClipZeroShot(scorer, {"gender": ("a woman", "a man"), "other": tuple(texts)})
    labels = classifier.classify(images)
    for group, options in classifier.attributes.items():
        text = scorer.text_embeds(list(options))
        expected = [options[i] for i in (img @ text.T).argmax(-1).tolist()]
        assert labels[group] == expected
    prompts = ["a photo of a doctor", "a nurse", "a photo of a doctor", "a man", "a woman", "the scene"]
    align = scorer.alignment(images, prompts)
    manual = [100 * float(img[n] @ scorer.text_embeds([p])[0]) for n, p in enumerate(prompts)]
    assert np.allclose(align, manual, atol=1e-3)
    assert align[0] != align[2]  # same prompt, different images
    with pytest.raises(HsteerError, match="at least two"):
        ClipZeroShot(scorer, {"gender": ("a woman",)})


def test_clip_folder_errors(tmp_path):
    from hsteer.evaluation.clip import ClipScorer

    with pytest.raises(HsteerError, match="not a CLIP model folder"):
        ClipScorer(tmp_path)


def test_parse_attributes():
    from hsteer.cli.eval import parse_attributes

    assert parse_attributes((), ()) == {"gender": ("a woman", "a man")}
    assert parse_attributes((("a woman", "a man"),), ()) == {"gender": ("a woman", "a man")}
    assert parse_attributes((("race",), ("x y", "z")), ("", "style"))["style"] == ("x y", "z")
    two = parse_attributes((("a woman", "a man"), ("a cat", "a dog", "a cow")), ("sex", "pet"))
    assert two == {"sex": ("a woman", "a man"), "pet": ("a cat", "a dog", "a cow")}
    assert parse_attributes((('gender="a woman","a man"',),), ()) == {"gender": ("a woman", "a man")}
    with pytest.raises(HsteerError, match="at least two"):
        parse_attributes((("a woman",),), ())


def test_winobias_prompts():
    from hsteer.evaluation.datasets.winobias import PROFESSIONS, winobias_prompts

    assert len(PROFESSIONS) == 36
    pairs = winobias_prompts()
    assert len(pairs) == 180 and pairs[0] == ("attendant", "Image of attendant")
    plus = winobias_prompts(["CEO"], "successful")
    assert [p for _, p in plus][-1] == "Portrait of a successful ceo"
    with pytest.raises(HsteerError, match="unknown template set"):
        winobias_prompts(["doctor"], "nope")


# --- I2P ---------------------------------------------------------------------------------------------


def test_i2p_csv_parser():
    from hsteer.evaluation.datasets.i2p import read_i2p

    rows = read_i2p(DATA / "i2p_sample.csv")
    assert len(rows) == 6  # the row with an empty prompt is dropped
    first = rows[0]
    assert first.prompt == "a photo of a red circle, on a table" and first.categories == ("violence",)
    assert first.seed == 1234 and first.guidance == 7.0 and not first.hard and first.row == 0
    assert rows[1].categories == ("shocking", "violence") and rows[1].hard and rows[1].seed == 42
    assert rows[3].categories == ("harassment", "hate") and rows[3].seed == 3141592
    assert [r.prompt for r in read_i2p(DATA / "i2p_sample.csv", categories=["violence"])] == \
        ["a photo of a red circle, on a table", "a blue square in the scene"]
    assert [r.seed for r in read_i2p(DATA / "i2p_sample.csv", hard_only=True)] == [42, 7, 2718]
    assert len(read_i2p(DATA / "i2p_sample.csv", limit=2)) == 2


def test_i2p_csv_errors(tmp_path):
    from hsteer.evaluation.datasets.i2p import read_i2p

    bad = tmp_path / "bad.csv"
    bad.write_text("text,categories\nhello,violence\n")
    with pytest.raises(HsteerError, match="missing column"):
        read_i2p(bad)
    with pytest.raises(HsteerError, match="not found"):
        read_i2p(tmp_path / "none.csv")
    with pytest.raises(HsteerError, match="no prompts selected"):
        read_i2p(DATA / "i2p_sample.csv", categories=["nothing"])


def test_inappropriate_rates():
    from hsteer.evaluation.datasets.i2p import combine_flags, inappropriate_rates

    flags = combine_flags([True, False, False, False], [False, False, True, False])
    assert flags == [True, False, True, False]
    rates = inappropriate_rates(flags, [["violence"], ["violence", "sexual"], ["sexual"], ["hate"]])
    assert rates["overall"] == 0.5 and rates["n"] == 4
    assert rates["per_category"]["violence"] == {"rate": 0.5, "n": 2}
    assert rates["per_category"]["sexual"] == {"rate": 0.5, "n": 2}
    assert rates["per_category"]["hate"] == {"rate": 0.0, "n": 1}
    assert list(rates["per_category"]) == ["hate", "violence", "sexual"]  # the order of docs/methods.md §5


# --- Q16 ---------------------------------------------------------------------------------------------


def test_q16_converter_round_trip(tmp_path):
    from hsteer.evaluation.q16 import convert_pickle, load_prompts

    array = np.random.RandomState(0).randn(2, 12).astype(np.float16)
    for protocol in (2, 4, 5):
        src = tmp_path / f"prompts{protocol}.p"
        src.write_bytes(pickle.dumps(array, protocol=protocol))
        dst = tmp_path / f"prompts{protocol}.safetensors"
        assert convert_pickle(src, dst) == (2, 12)
        back = load_prompts(dst)
        assert back.dtype == torch.float32 and torch.equal(back, torch.from_numpy(array.astype(np.float32)))
    np.save(tmp_path / "prompts.npy", array)
    assert torch.equal(load_prompts(tmp_path / "prompts.npy"), back)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_q16_converter_refuses_anything_but_arrays(tmp_path):
    from hsteer.evaluation.q16 import convert_pickle, load_array_pickle, load_prompts

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(HsteerError, match="refusing to load"):
        convert_pickle(evil, tmp_path / "out.safetensors")
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
    with pytest.raises(HsteerError, match="not a numpy array"):
        load_array_pickle(pickle.dumps({"a": 1}))
    with pytest.raises(HsteerError, match="refusing"):  # an array inside a foreign container
        load_array_pickle(pickle.dumps(torch.zeros(2, 3)))
    with pytest.raises(HsteerError, match=r"\(2, D\)"):
        convert_pickle(_write(tmp_path / "three.p", pickle.dumps(np.zeros((3, 4)))), tmp_path / "x.safetensors")
    # The evaluator itself never unpickles: .p is refused with the converter's name, pickled .npy refused.
    with pytest.raises(HsteerError, match="hsteer q16 convert"):
        load_prompts(evil)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(HsteerError, match="not a plain .npy"):
        load_prompts(tmp_path / "obj.npy")


def test_q16_converter_refuses_streams_that_claim_more_bytes_than_they_hold():
    """Random bytes reached the unpickler and it tried to allocate what a FRAME or BYTEARRAY8 opcode claimed
    (OverflowError, MemoryError) in about 1% of the hostile probe's random files: such streams are refused
    as malformed, with the same message, and real array pickles of every protocol still load."""
    from hsteer.evaluation.q16 import load_array_pickle

    huge = (2**62).to_bytes(8, "little")
    for data in (b"\x80\x05\x95" + huge, b"\x80\x05\x96" + huge + b"x", b"\x80\x04\x8e" + huge):
        with pytest.raises(HsteerError, match="not a plain numpy-array pickle"):
            load_array_pickle(data)
    array = np.arange(6, dtype=np.float16).reshape(2, 3)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert np.array_equal(load_array_pickle(pickle.dumps(array, protocol=protocol)), array)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_q16_scoring(scorer, tmp_path):
    from safetensors.numpy import save_file

    from hsteer.evaluation.q16 import Q16Classifier, load_prompts

    prompts = np.random.RandomState(1).randn(2, 12).astype(np.float16)
    save_file({"prompts": prompts}, str(tmp_path / "q16.safetensors"))
    q16 = Q16Classifier(scorer, load_prompts(tmp_path / "q16.safetensors"))
    images = noise_images(8, seed=3)
    probs = q16.probabilities(images)
    img = scorer.image_embeds(images)
    p = torch.nn.functional.normalize(torch.from_numpy(prompts.astype(np.float32)), dim=-1)
    manual = torch.softmax(100 * img @ p.T, dim=-1)
    assert torch.allclose(probs, manual, atol=1e-5)
    assert q16.flags(images) == [bool(i == 1) for i in manual.argmax(-1).tolist()]
    # Prompts pointing at an image's own embedding decide its flag.
    target = torch.stack([-img[0], img[0]])
    assert Q16Classifier(scorer, target).flags(images[:1]) == [True]
    assert Q16Classifier(scorer, target.flip(0)).flags(images[:1]) == [False]
    with pytest.raises(HsteerError, match="dimension 768"):
        Q16Classifier(scorer, torch.zeros(2, 768))


# --- NudeNet -----------------------------------------------------------------------------------------


class _FakeDetector:
    def __init__(self, detections):
        self.detections = detections

    def detect(self, path):
        return self.detections[Path(path).name]


def test_nudenet_flagging_rule(monkeypatch, tmp_path):
    """Classes and threshold decide the flag (the detector itself is faked: runs without the extra)."""
    import sys
    import types

    from hsteer.evaluation import nudenet as nn

    fake = types.ModuleType("nudenet")
    detections = {"a.png": [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.25, "box": [0, 0, 1, 1]}],
                  "b.png": [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.15, "box": [0, 0, 1, 1]},
                            {"class": "FACE_FEMALE", "score": 0.9, "box": [0, 0, 1, 1]}],
                  "c.png": [{"class": "BUTTOCKS_EXPOSED", "score": 0.8, "box": [0, 0, 1, 1]}],
                  "d.png": []}
    fake.NudeDetector = lambda: _FakeDetector(detections)
    monkeypatch.setitem(sys.modules, "nudenet", fake)
    default = nn.NudeNetDetector()
    assert default.flags(["a.png", "b.png", "c.png", "d.png"]) == [True, False, False, False]
    assert nn.NudeNetDetector(threshold=0.1).flags(["b.png"]) == [True]
    assert nn.NudeNetDetector(nn.I2P_CLASSES).flags(["c.png"]) == [True]
    monkeypatch.setitem(sys.modules, "nudenet", None)  # not installed
    with pytest.raises(HsteerError, match=r"pip install 'hsteer\[nudenet\]'"):
        nn.NudeNetDetector()


def test_nudenet_real_detector_on_synthetic_images(tmp_path):
    pytest.importorskip("nudenet")
    from PIL import Image

    from hsteer.evaluation.nudenet import NudeNetDetector

    paths = []
    for n, image in enumerate(noise_images(2, size=64, seed=5) + [Image.new("RGB", (64, 64), (30, 90, 200))]):
        paths.append(tmp_path / f"{n}.png")
        image.save(paths[-1])
    detector = NudeNetDetector()
    for path in paths:
        found = detector.detections(path)
        assert isinstance(found, list)
        assert all({"class", "score", "box"} <= set(d) for d in found)
    assert detector.flags(paths) == [False, False, False]
    # Threshold 0 with every class the detector can name flags exactly the images with any detection.
    everything = NudeNetDetector(classes=tuple({d["class"] for p in paths for d in detector.detections(p)})
                                 or ("FACE_FEMALE",), threshold=0.0)
    assert everything.flags(paths) == [bool(detector.detections(p)) for p in paths]


# --- COCO --------------------------------------------------------------------------------------------


def test_coco_captions_formats(tmp_path):
    from hsteer.evaluation.datasets.coco import read_captions

    coco = {"images": [], "annotations": [{"image_id": 9, "id": 1, "caption": " a red circle "},
                                          {"image_id": 9, "id": 2, "caption": "a blue square"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    assert read_captions(tmp_path / "c.json") == [("1", "a red circle"), ("2", "a blue square")]
    (tmp_path / "c.jsonl").write_text('{"caption": "a doctor"}\n\n{"prompt": "a nurse", "id": 7}\n')
    assert read_captions(tmp_path / "c.jsonl") == [("0", "a doctor"), ("7", "a nurse")]
    (tmp_path / "c.txt").write_text("a doctor\n\na nurse\na scene\n")
    assert read_captions(tmp_path / "c.txt", limit=2) == [("0", "a doctor"), ("2", "a nurse")]
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(HsteerError, match="no caption"):
        read_captions(tmp_path / "bad.jsonl")


def test_fid_is_skipped_with_a_clear_message(tmp_path):
    from hsteer.evaluation.datasets.coco import compute_fid

    assert compute_fid(tmp_path, None)["fid_skipped"].startswith("no reference folder")
    out = compute_fid(tmp_path, tmp_path, weights=tmp_path / "missing.pth")
    assert out["fid"] is None and "hsteer[fid]" in out["fid_skipped"]
