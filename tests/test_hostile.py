"""Hostile input, part 1: every argument is checked before anything loads or is written.

Each case runs the CLI in-process in an empty folder and asserts: exit status 2, one `Error:` line
naming the problem (and only options that exist), no traceback, and the folder still empty.
See docs/hostile-input.md for the table of cases.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
from hostile_helpers import assert_handled, cli, listing

#: FIFOs and /dev/zero, which several cases below use, are POSIX.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and /dev/zero are POSIX")

TRAIN = {"--bank": "b.safetensors", "--concept": "square", "--group": "shape", "--neutral": "a shape",
         "--target": "a square", "--iterations": "2", "--batch-size": "2", "--steps": "3"}
GENERATE = {"--prompt": "a red square", "--out": "out", "--num-images": "2", "--steps": "3"}


def args(base: dict, changes: dict, extra=()) -> list[str]:
    merged = {**base, **changes}
    out = []
    for key, value in merged.items():
        if value is None:
            continue
        out += [key] if value is True else [key, str(value)]
    return out + list(extra)


def run_in_empty(tmp_path, *argv, fragments=()):
    before = listing(tmp_path)
    result = cli(*argv, cwd=tmp_path)
    line = assert_handled(result, *fragments)
    assert listing(tmp_path) == before, "something was written"
    return line


NO_CUDA = not torch.cuda.is_available()

TRAIN_CASES = [
    ({"--concept": "/some/dir/x"}, ["invalid concept name"]),
    ({"--concept": ".."}, ["invalid concept name"]),
    ({"--concept": "."}, ["invalid concept name"]),
    ({"--concept": "a/b"}, ["invalid concept name"]),
    ({"--concept": "a\\b"}, ["invalid concept name"]),
    ({"--concept": "x\x01y"}, ["invalid concept name"]),
    ({"--concept": ".hidden"}, ["invalid concept name"]),
    ({"--concept": "-x"}, ["invalid concept name"]),
    ({"--concept": "x" * 101}, ["at most 100"]),
    ({"--concept": "caf\u00e9"}, ["invalid concept name"]),
    ({"--group": "../g"}, ["invalid group name"]),
    ({"--group": ""}, ["invalid group name"]),
    ({"--group": "g h"}, ["invalid group name"]),
    ({"--bank": "X.runs"}, ["collide with the run folder"]),
    ({"--bank": "file.txt/sub.safetensors"}, ["is a file, not a folder"]),
    ({"--batch-size": "0"}, ["--batch-size", "got 0"]),
    ({"--batch-size": "-1"}, ["--batch-size", "got -1"]),
    ({"--steps": "0"}, ["--steps", "got 0"]),
    ({"--steps": "-3"}, ["--steps", "got -3"]),
    ({"--iterations": "0"}, ["--iterations"]),
    ({"--seed": str(2**63)}, ["--seed", "between 0 and"]),
    ({"--seed": "-1"}, ["--seed"]),
    ({"--height": "33"}, ["--height", "multiple of 8"]),
    ({"--width": "0"}, ["--width"]),
    ({"--height": "100000"}, ["--height"]),
    ({"--checkpoint-every": "0"}, ["--checkpoint-every", "got 0"]),
    ({"--lr": "nan"}, ["--lr", "finite"]),
    ({"--lr": "inf"}, ["--lr", "finite"]),
    ({"--lr": "-1"}, ["--lr", "greater than 0"]),
    ({"--target-guidance": "nan"}, ["--target-guidance", "finite"]),
    ({"--sampling-guidance": "-inf"}, ["--sampling-guidance"]),
    ({"--init-std": "-1"}, ["--init-std"]),
    ({"--objective": "respodiff", "--lam": "nan"}, ["--lam", "finite"]),
    ({"--objective": "respodiff", "--lr-sam": "0"}, ["--lr-sam"]),
    ({"--lam": "3"}, ["--lam", "--objective respodiff"]),
    ({"--sdisc-epochs": "3"}, ["--sdisc-epochs", "--objective sdisc"]),
    ({"--objective": "sdisc", "--sdisc-epochs": "0"}, ["--sdisc-epochs", "got 0"]),
    ({"--objective": "sdisc", "--sdisc-images": "-2"}, ["--sdisc-images"]),
    ({"--neutral": "  "}, ["neutral prompt is empty"]),
    ({"--target": None}, ["--target", "--negative"]),
    ({"--device": "potato"}, ["--device", "potato"]),
    ({"--device": "cuda:99"}, ["--device", "cuda:99"]),
    ({"--batch-size": "abc"}, ["--batch-size", "abc"]),
    ({"--objective": "esd"}, ["--objective"]),
]
if NO_CUDA:
    TRAIN_CASES.append(({"--device": "cuda"}, ["CUDA is not available", "--device cpu"]))


@pytest.mark.parametrize("changes, fragments", TRAIN_CASES, ids=[repr(c)[:50] for c, _ in TRAIN_CASES])
def test_train_refuses_before_anything(tmp_path, changes, fragments):
    (tmp_path / "file.txt").write_text("x")
    run_in_empty(tmp_path, "train", *args(TRAIN, changes), fragments=fragments)


def test_train_bank_is_a_folder(tmp_path):
    (tmp_path / "b.safetensors").mkdir()
    run_in_empty(tmp_path, "train", *args(TRAIN, {}), fragments=["--bank", "is a directory"])


GENERATE_CASES = [
    ({"--num-images": "0"}, ["--num-images", "got 0"]),
    ({"--num-images": "-1"}, ["--num-images", "got -1"]),
    ({"--num-images": str(10**13)}, ["--num-images"]),
    ({"--seed": str(2**63 - 1)}, ["--seed", "between 0 and"]),
    ({"--seed": str(2**63)}, ["--seed"]),
    ({"--seed": "-5"}, ["--seed"]),
    ({"--height": "33"}, ["--height", "multiple of 8"]),
    ({"--width": "-8"}, ["--width"]),
    ({"--steps": "0"}, ["--steps", "got 0"]),
    ({"--steps": "-3"}, ["--steps"]),
    ({"--guidance": "nan"}, ["--guidance", "finite"]),
    ({"--guidance": "inf"}, ["--guidance", "finite"]),
    ({"--guidance": "1e30"}, ["--guidance"]),
    ({"--batch-size": "0"}, ["--batch-size", "got 0"]),
    ({"--batch-size": "-1"}, ["--batch-size"]),
    ({"--prompt": ""}, ["empty prompt", "--prompt"]),
    ({"--prompt": "a\x00b"}, ["NUL"]),
    ({"--fair": "shape,shape"}, ["--fair", "twice"]),
    ({"--fair": "shape,,colour"}, ["invalid group name"]),
    ({"--fair": "../x"}, ["invalid group name"]),
    ({"--fair": "shape", "--group-scale": "colour=1.2"}, ["--group-scale", "not steered"]),
    ({"--fair": "shape", "--group-scale": "shape=nan"}, ["--group-scale", "finite"]),
    ({"--fair": "shape", "--group-scale": "shape"}, ["--group-scale", "GROUP=SCALE"]),
    ({"--safe": True, "--group-scale": "shape=1"}, ["--group-scale", "safety"]),
    ({"--concept": "square", "--group-scale": "shape=1"}, ["--group-scale"]),
    ({"--concept": "square=1e30"}, ["--concept", "square"]),
    ({"--concept": "square=nan"}, ["--concept", "finite"]),
    ({"--concept": "square=x"}, ["NAME=SCALE"]),
    ({"--concept": "../x=1"}, ["invalid concept name"]),
    ({"--fair": "shape", "--safe": True}, ["one of --fair, --safe or --concept"]),
    ({"--fair": "shape"}, ["needs a bank", "--bank"]),
    ({"--out": "file.txt/sub"}, ["is a file, not a folder"]),
    ({"--out": "file.txt"}, ["--out", "is a file"]),
    ({"--out": "full"}, ["not empty", "--overwrite", "--resume", "new folder"]),
    ({"--overwrite": True, "--resume": True, "--out": "full"}, ["--overwrite or --resume"]),
    ({"--device": "potato"}, ["--device"]),
    ({"--bank": "nope.safetensors", "--concept": "square"}, ["does not exist"]),
    ({"--bank": "fifo", "--concept": "square"}, ["not a regular file"]),
    ({"--bank": "/dev/zero", "--concept": "square"}, ["not a regular file"]),
    ({"--bank": "full", "--concept": "square"}, ["--bank", "is a directory"]),
    ({"--bank": "file.txt", "--concept": "square"}, ["corrupt"]),
]


@pytest.mark.parametrize("changes, fragments", GENERATE_CASES, ids=[repr(c)[:50] for c, _ in GENERATE_CASES])
def test_generate_refuses_before_anything(tmp_path, changes, fragments):
    (tmp_path / "file.txt").write_text("not a bank")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "00000.png").write_bytes(b"old")
    os.mkfifo(tmp_path / "fifo")
    run_in_empty(tmp_path, "generate", *args(GENERATE, changes), fragments=fragments)


def test_large_counts_are_streamed():
    import time

    from hsteer.generation import image_jobs

    began = time.perf_counter()
    jobs = image_jobs(["a", "b"], 10**9, 0)
    assert next(iter(jobs)) == ("a", 0, 0)
    assert time.perf_counter() - began < 1.0 and not isinstance(jobs, list)


EVAL_CASES = [
    (["eval", "i2p", "--prompts", "i2p.csv", "--limit", "0"], ["--limit", "got 0"]),
    (["eval", "i2p", "--prompts", "i2p.csv", "--limit", "-1"], ["--limit", "got -1"]),
    (["eval", "i2p", "--prompts", "latin1.csv"], ["not UTF-8"]),
    (["eval", "i2p", "--prompts", "nocols.csv"], ["missing column"]),
    (["eval", "i2p", "--prompts", "badseed.csv"], ["row 2", "sd_seed"]),
    (["eval", "i2p", "--prompts", "nanscale.csv"], ["row 2", "sd_guidance_scale"]),
    (["eval", "i2p", "--prompts", "hugefield.csv"], ["not a readable CSV"]),
    (["eval", "i2p", "--prompts", "fifo"], ["not a regular file"]),
    (["eval", "i2p", "--prompts", "sub"], ["--prompts", "is a directory"]),
    (["eval", "i2p", "--prompts", "i2p.csv", "--no-score", "--steps", "0"], ["--steps"]),
    (["eval", "i2p", "--prompts", "i2p.csv", "--no-score", "--device", "potato"], ["--device"]),
    (["eval", "i2p", "--prompts", "i2p.csv", "--q16-prompts", "random.safetensors", "--detectors", "q16"],
     ["not a valid safetensors"]),
    (["eval", "i2p", "--prompts", "i2p.csv", "--q16-prompts", "random.npy", "--detectors", "q16"],
     ["not a plain .npy"]),
    (["eval", "coco", "--captions", "coco.json", "--limit", "0"], ["--limit", "got 0"]),
    (["eval", "coco", "--captions", "coco.json", "--limit", "-1"], ["--limit"]),
    (["eval", "coco", "--captions", "latin1.csv"], ["not UTF-8"]),
    (["eval", "coco", "--captions", "annlist.json"], ["'annotations' is not a list"]),
    (["eval", "coco", "--captions", "ints.json"], ["neither a caption"]),
    (["eval", "coco", "--captions", "nocap.json"], ["no caption"]),
    (["eval", "coco", "--captions", "/dev/zero"], ["not a regular file"]),
    (["eval", "winobias", "--max-templates", "0"], ["--max-templates", "got 0"]),
    (["eval", "winobias", "--max-templates", "-1"], ["--max-templates"]),
    (["eval", "winobias", "--images-per-prompt", "0"], ["--images-per-prompt"]),
    (["eval", "winobias", "--batch-size", "0"], ["--batch-size"]),
    (["eval", "winobias", "--seed", str(2**63)], ["--seed"]),
    (["eval", "winobias", "--height", "33"], ["--height"]),
    (["score", "damaged"], ["not valid UTF-8 JSON"]),
    (["score", "listcfg"], ["layout"]),
    (["score", "sub"], ["no config.json"]),
    (["q16", "convert", "random.bin", "q.safetensors"], ["not a plain numpy-array pickle"]),
    (["q16", "convert", "bomb.pkl", "q.safetensors"], ["refusing"]),
    (["q16", "convert", "good.pkl", "q.txt"], [".safetensors"]),
    (["q16", "convert", "fifo", "q.safetensors"], ["not a regular file"]),
    (["q16", "convert", "good.pkl", "file.txt/q.safetensors"], ["is a file, not a folder"]),
    (["demo", "--threads", "-3"], ["--threads"]),
    (["demo", "--images-per-prompt", "0"], ["--images-per-prompt"]),
    (["demo", "--iterations", "0"], ["--iterations"]),
    (["demo", "--out", "file.txt"], ["--out"]),
    (["compare", "--images-per-prompt", "0"], ["--images-per-prompt"]),
    (["world", "quality", "--images", "0"], ["--images must be at least 1, got 0"]),
    (["world", "quality", "--batch-size", "0"], ["--batch-size must be at least 1, got 0"]),
    (["bank", "show", "fifo"], ["not a regular file"]),
    (["bank", "show", "/dev/zero"], ["not a regular file"]),
    (["bank", "show", "random.bin"], ["corrupt"]),
    (["bank", "merge", "nope.safetensors", "--out", "m.safetensors"], ["does not exist"]),
    (["nonsense-command"], ["No such command"]),
]


def _eval_inputs(tmp_path):
    import pickle

    import numpy as np

    header = "prompt,categories,hard,sd_seed,sd_guidance_scale\n"
    (tmp_path / "i2p.csv").write_text(header + "a red square,violence,1,3,7\n")
    (tmp_path / "latin1.csv").write_bytes((header + "caf\xe9,violence,1,3,7\n").encode("latin-1"))
    (tmp_path / "nocols.csv").write_text("text,label\na,b\n")
    (tmp_path / "badseed.csv").write_text(header + "a square,violence,1,notaseed,7\n")
    (tmp_path / "nanscale.csv").write_text(header + "a square,violence,1,3,nan\n")
    (tmp_path / "hugefield.csv").write_text(header + '"' + "x" * 200_000 + '",violence,1,3,7\n')
    (tmp_path / "coco.json").write_text('{"annotations": [{"image_id": 1, "caption": "a red square"}]}')
    (tmp_path / "annlist.json").write_text('{"annotations": 5}')
    (tmp_path / "ints.json").write_text("[1, 2, 3]")
    (tmp_path / "nocap.json").write_text('[{"id": 1}]')
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "config.json").write_bytes(b"\xff\xfe{not json")
    (tmp_path / "listcfg").mkdir()
    (tmp_path / "listcfg" / "config.json").write_text("[1, 2]")
    (tmp_path / "random.bin").write_bytes(os.urandom(512))
    (tmp_path / "random.safetensors").write_bytes(os.urandom(512))
    (tmp_path / "random.npy").write_bytes(os.urandom(512))
    (tmp_path / "good.pkl").write_bytes(pickle.dumps(np.zeros((2, 8), dtype=np.float16)))
    # 69-byte class of attack: an array header asking for 2 x 2^25 values with no data behind it
    (tmp_path / "bomb.pkl").write_bytes(
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x02J\x00\x00\x00\x02\x86U\x01b\x87R.")


@pytest.mark.parametrize("argv, fragments", EVAL_CASES, ids=[" ".join(a)[:50] for a, _ in EVAL_CASES])
def test_other_commands_refuse_before_anything(tmp_path, argv, fragments):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "fifo")
    _eval_inputs(tmp_path)
    extra = ["--out", "run"] if argv[0] == "eval" else []
    run_in_empty(tmp_path, *argv, *extra, fragments=fragments)


def test_python_api_shares_the_checks(tmp_path):
    from hsteer.errors import BankError, HsteerError
    from hsteer.policies import ConceptPolicy, FairPolicy
    from hsteer.steering.bank import Concept
    from hsteer.training import TrainConfig

    with pytest.raises(HsteerError, match="invalid concept name"):
        TrainConfig.for_objective("codsma", concept="..", group="g", neutral="a", target="b").validate()
    with pytest.raises(HsteerError, match="batch_size"):
        TrainConfig.for_objective("codsma", concept="x", group="g", neutral="a", target="b", batch_size=0).validate()
    with pytest.raises(BankError, match="invalid concept name"):
        Concept("../x", "g", "codsma", {"c": torch.zeros(2)})
    with pytest.raises(HsteerError, match="twice"):
        FairPolicy(("shape", "shape"))
    with pytest.raises(HsteerError, match="finite"):
        ConceptPolicy((("square", float("inf")),))


def test_manifest_lines_are_strict_json():
    from hsteer.errors import HsteerError
    from hsteer.outputs import manifest_line

    with pytest.raises(HsteerError, match="non-finite"):
        manifest_line({"guidance": float("nan")})


def test_documented_exit_status_matches():
    from hsteer.cli.common import EXIT_ERROR
    from hsteer.cli.main import main

    assert EXIT_ERROR == 2 and "2 on any handled error" in main.help
