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


def test_sampling_defaults_come_from_the_argument_the_card_or_the_library(tmp_path):
    from hsteer.model.loading import sampling_for

    (tmp_path / "hsteer.json").write_text(json.dumps({"steps": 20}), encoding="utf-8")
    pipe = SimpleNamespace(name_or_path=str(tmp_path))
    assert sampling_for(pipe) == (20, 7.5, {"steps": "model card", "guidance": "library default"})
    assert sampling_for(pipe, 3, 2.0) == (3, 2.0, {"steps": "argument", "guidance": "argument"})
    assert sampling_for(SimpleNamespace()) == (50, 7.5, {"steps": "library default", "guidance": "library default"})


def test_generate_attach_and_the_command_line_sample_with_the_bundled_models_card(tmp_path):
    import torch
    from click.testing import CliRunner

    import hsteer
    from hsteer.cli import main
    from hsteer.policies import PlainPolicy

    pipe = hsteer.load_pipeline()
    row = hsteer.generate(pipe, "a photo of a doctor", steps=2, progress=False).records[0].to_dict()
    assert (row["steps"], row["guidance"]) == (2, 4.0)
    assert row["defaults"] == {"steps": "argument", "guidance": "model card"}
    seen = []
    set_timesteps = pipe.scheduler.set_timesteps
    pipe.scheduler.set_timesteps = lambda n, *a, **k: (seen.append(n), set_timesteps(n, *a, **k))[1]
    hsteer.attach(pipe, None, PlainPolicy())
    pipe("a photo of a doctor", generator=torch.Generator().manual_seed(0), output_type="np")
    pipe("a photo of a doctor", num_inference_steps=2, output_type="np")
    hsteer.detach(pipe)
    assert seen == [20, 2]
    result = CliRunner().invoke(main, ["generate", "--prompt", "a photo of a doctor", "--guidance", "3",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "out" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert (row["steps"], row["guidance"]) == (20, 3.0)
    assert row["defaults"] == {"steps": "model card", "guidance": "argument"}
