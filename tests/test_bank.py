"""Concept banks: round trip, validation, atomic saves, merges."""

import json

import pytest
import torch

from hsteer import ConceptBank
from hsteer.steering.bank import Concept
from hsteer.errors import BankError, HsteerError, ModelMismatchError, ShapeMismatchError, UnknownConceptError
from hsteer.model import pipeline_hspace_shape, unet_fingerprint


def _concept(name, group="gender", shape=(32, 4, 4), objective="codsma", fp="abc", **tensors):
    tensors = tensors or {"c": torch.randn(shape)}
    return Concept(name, group, objective, tensors, {"neutral": "a person", "target": f"a {name}",
                                                     "unet_fingerprint": fp, "lr": 0.05})


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    bank = ConceptBank(concepts=[_concept("woman"), _concept("man"),
                                 _concept("anti_violence", "safety", objective="respodiff",
                                          ram=torch.randn(32, 4, 4), sam=torch.randn(32, 4, 4))])
    path = bank.save(tmp_path / "bank.safetensors")
    back = ConceptBank.load(path)
    assert back.names == ["woman", "man", "anti_violence"]
    assert back.hspace_shape == (32, 4, 4) and back.unet_fingerprint == "abc"
    assert back.groups() == {"gender": ["woman", "man"], "safety": ["anti_violence"]}
    for concept in bank:
        other = back[concept.name]
        assert other.objective == concept.objective and other.meta == concept.meta
        for key, tensor in concept.tensors.items():
            assert torch.equal(other.tensors[key], tensor)
    rd = back["anti_violence"]
    assert torch.allclose(rd.delta(), rd.tensors["ram"] + rd.tensors["sam"])


def test_unknown_concept_and_group(tmp_path):
    bank = ConceptBank(concepts=[_concept("woman")])
    with pytest.raises(UnknownConceptError, match="unknown concept 'girl'; this bank holds: woman"):
        bank["girl"]
    with pytest.raises(UnknownConceptError, match="unknown group 'race'"):
        bank.group("race")


def test_wrong_shape_and_other_model(sd_pipe):
    bank = ConceptBank(concepts=[_concept("woman")])
    with pytest.raises(ShapeMismatchError, match="has shape"):
        bank.add(_concept("man", shape=(32, 8, 8)))
    shape = pipeline_hspace_shape(sd_pipe)
    with pytest.raises(ModelMismatchError, match="another U-Net"):
        bank.check_compatible(sd_pipe.unet, shape)
    bank.check_compatible(sd_pipe.unet, shape, allow_other_model=True)
    wrong = ConceptBank(concepts=[_concept("woman", shape=(16, 4, 4), fp=unet_fingerprint(sd_pipe.unet))])
    with pytest.raises(ShapeMismatchError, match="h-space"):
        wrong.check_compatible(sd_pipe.unet, shape, allow_other_model=True)  # shape is never overridable


def test_a_random_bank_fits_its_pipeline_and_repeats(sd_pipe):
    """The benchmarks' and tests' random concepts: the pipeline's shape and U-Net, the same for the same seed."""
    from hsteer.steering.randombank import random_bank

    shape = pipeline_hspace_shape(sd_pipe)
    bank = random_bank(sd_pipe, {"gender": ["woman", "man"], "safety": ["calm"]}, scale=2.0, seed=5)
    assert bank.names == ["woman", "man", "calm"] and bank.groups() == {"gender": ["woman", "man"], "safety": ["calm"]}
    bank.check_compatible(sd_pipe.unet, shape)  # right shape, right U-Net: no error
    again = random_bank(sd_pipe, {"gender": ["woman", "man"], "safety": ["calm"]}, scale=2.0, seed=5)
    assert all(torch.equal(bank[n].tensors["c"], again[n].tensors["c"]) for n in bank.names)
    other = random_bank(sd_pipe, {"gender": ["woman"]}, scale=2.0, seed=6)
    assert not torch.equal(bank["woman"].tensors["c"], other["woman"].tensors["c"])
    assert not torch.equal(bank["woman"].tensors["c"], bank["man"].tensors["c"])


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(BankError, match="does not exist"):
        ConceptBank.load(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(BankError, match="corrupt"):
        ConceptBank.load(bad)
    path = ConceptBank(concepts=[_concept("woman")]).save(tmp_path / "ok.safetensors")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 40])
    with pytest.raises(BankError, match="corrupt"):
        ConceptBank.load(truncated)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(BankError, match="not an hsteer bank"):
        ConceptBank.load(tmp_path / "foreign.safetensors")


def test_failed_save_leaves_old_bank_intact(tmp_path, monkeypatch):
    path = ConceptBank(concepts=[_concept("woman")]).save(tmp_path / "bank.safetensors")
    before = path.read_bytes()
    bigger = ConceptBank(concepts=[_concept("woman"), _concept("man")])

    def exploding_save(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("hsteer.steering.bank.save_file", exploding_save)
    with pytest.raises(HsteerError, match="disk full"):  # one line, not a traceback
        bigger.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bank.safetensors"]  # no temp file left behind


def test_merge_and_replace(tmp_path):
    a = ConceptBank(concepts=[_concept("woman"), _concept("man")])
    b = ConceptBank(concepts=[_concept("woman"), _concept("anti_sexual", "safety")])
    with pytest.raises(BankError, match="already exists"):
        a.merge(b)
    merged = a.merge(b, replace=True)
    assert merged.names == ["woman", "man", "anti_sexual"]
    assert torch.equal(merged["woman"].tensors["c"], b["woman"].tensors["c"])
    other = ConceptBank(concepts=[_concept("x", fp="zzz")])
    with pytest.raises(ModelMismatchError):
        a.merge(other)


def test_bank_describe_is_json_serialisable():
    info = ConceptBank(concepts=[_concept("woman")]).describe()
    text = json.dumps(info)
    assert json.loads(text)["concepts"][0]["tensors"] == {"c": [32, 4, 4]}


def test_invalid_names_rejected():
    with pytest.raises(BankError, match="invalid concept name"):
        _concept("a/b")
