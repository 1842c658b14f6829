"""The model card (`hsteer.json`) is parsed once per file version, not at every prompt encoding."""

import json
import os
from pathlib import Path
from types import SimpleNamespace

from hsteer.model.card import max_sequence_length, model_card


def test_the_card_is_parsed_once_and_read_again_when_the_file_changes(tmp_path, monkeypatch):
    card = tmp_path / "hsteer.json"
    card.write_text(json.dumps({"max_sequence_length": 4}), encoding="utf-8")
    pipe = SimpleNamespace(name_or_path=str(tmp_path))
    reads = []
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self) or real(self, *a, **k))
    assert max_sequence_length(pipe) == {"max_sequence_length": 4}
    assert max_sequence_length(pipe) == {"max_sequence_length": 4}
    assert len(reads) == 1
    model_card(pipe)["max_sequence_length"] = 99  # a caller's change does not reach the kept card
    assert max_sequence_length(pipe) == {"max_sequence_length": 4}
    card.write_text(json.dumps({"max_sequence_length": 8}), encoding="utf-8")
    stat = card.stat()
    os.utime(card, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a rewrite (hsteer sites --set-default)
    assert max_sequence_length(pipe) == {"max_sequence_length": 8}
    assert len(reads) == 2
    card.unlink()
    assert model_card(pipe) == {}


def test_an_object_without_a_folder_or_that_takes_no_attributes_gets_no_card(tmp_path):
    (tmp_path / "hsteer.json").write_text(json.dumps({"steps": 7}), encoding="utf-8")

    class Frozen:
        __slots__ = ("name_or_path",)

    frozen = Frozen()
    frozen.name_or_path = str(tmp_path)
    assert model_card(frozen) == {"steps": 7} and model_card(frozen) == {"steps": 7}
    assert model_card(SimpleNamespace(name_or_path="")) == {}
    assert model_card(object()) == {}
