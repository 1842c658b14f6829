"""`train --resume` over a damaged checkpoint or loss log: one line naming the file, nothing trained on a
negative or impossible iteration, nothing restored from tensors of the wrong shape."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hsteer.errors import HsteerError
from hsteer.training import TrainConfig, train_concept


def _config(**kw):
    base = dict(concept="woman", group="gender", neutral="a photo of a person", target="a woman", iterations=2,
                batch_size=1, steps=3, lr=0.05, seed=0)
    base.update(kw)
    return TrainConfig.for_objective("codsma", **base)


@pytest.fixture(scope="module")
def pipe(sd_dir):
    from hsteer.model import load_pipeline

    return load_pipeline(sd_dir)


@pytest.fixture(scope="module")
def checkpoint(pipe, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train_concept(pipe, _config(), run_dir=run, checkpoint_every=2, progress=False)
    with safe_open(str(run / "checkpoint.safetensors"), framework="pt") as handle:
        meta = json.loads(handle.metadata()["hsteer_checkpoint"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    return meta, tensors, (run / "losses.jsonl").read_text()


def _damaged(tmp_path, checkpoint, meta_change=None, tensor_change=None, metadata_text=None, log=None):
    meta, tensors, losses = checkpoint
    meta = {**meta, **(meta_change or {})}
    tensors = {**tensors, **(tensor_change or {})}
    save_file(tensors, str(tmp_path / "checkpoint.safetensors"),
              metadata={"hsteer_checkpoint": metadata_text if metadata_text is not None else json.dumps(meta)})
    (tmp_path / "losses.jsonl").write_bytes(log if log is not None else losses.encode())
    return tmp_path


@pytest.mark.parametrize("case", [
    {"meta_change": {"iteration": -10}}, {"meta_change": {"iteration": "1"}}, {"meta_change": {"iteration": True}},
    {"meta_change": {"iteration": 99}}, {"meta_change": {"adam_steps": []}}, {"meta_change": {"config": "x"}},
    {"meta_change": {"adam_steps": {"c": "x"}}}, {"meta_change": {"adam_steps": {"nope": 1}}},
    {"metadata_text": "[" * 100_000}, {"metadata_text": "not json"}, {"metadata_text": "[]"},
    {"tensor_change": {"param/c": torch.zeros(2, 2)}}, {"tensor_change": {"adam/c/exp_avg": torch.zeros(3)}},
    {"tensor_change": {"param/c": torch.zeros(64, 4, 4, dtype=torch.int32)}},
    {"log": b"\xff\xfe\n"}, {"log": b'{"iteration": 0}\n[1]\n{"iteration": 1}\n'},
    {"log": b'{"iteration": "x"}\n{"iteration": 1}\n'}, {"log": b"[" * 100_000 + b"\n{}\n"},
])
def test_damaged_resume_files_are_one_line(pipe, tmp_path, checkpoint, case):
    run = _damaged(tmp_path, checkpoint, **case)
    with pytest.raises(HsteerError, match="checkpoint|loss log"):
        train_concept(pipe, _config(iterations=3), run_dir=run, resume=True, progress=False)


def test_a_torn_last_loss_line_is_dropped(pipe, tmp_path, checkpoint):
    run = _damaged(tmp_path, checkpoint, log=checkpoint[2].encode() + b'{"iteration": 2, "lo')
    result = train_concept(pipe, _config(iterations=3), run_dir=run, resume=True, progress=False)
    assert result.resumed_from == 2 and [r["iteration"] for r in result.losses][-1] == 2
