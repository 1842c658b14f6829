"""The CLI end to end, in subprocesses, on a saved tiny SD pipeline."""

import json
import os
import subprocess
import sys

import pytest


def hsteer(*args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "hsteer", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"hsteer {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_train_show_generate(sd_dir, tmp_path):
    bank = tmp_path / "bank.safetensors"
    common = ["--model", sd_dir, "--bank", bank, "--group", "gender", "--neutral", "a photo of a person",
              "--iterations", "3", "--batch-size", "2", "--steps", "4", "--checkpoint-every", "2"]
    hsteer("train", "--objective", "codsma", "--concept", "woman", "--target", "a woman", *common)
    hsteer("train", "--objective", "respodiff", "--concept", "man", "--target", "a man", "--mode", "reference",
           "--gradient-checkpointing", *common)
    hsteer("train", "--concept", "anti_violence", "--negative", "violence", "--model", sd_dir, "--bank", bank,
           "--group", "safety", "--neutral", "a scene", "--iterations", "2", "--batch-size", "1", "--steps", "3")
    info = json.loads(hsteer("bank", "show", bank, "--json").stdout)
    by_name = {c["name"]: c for c in info["concepts"]}
    assert by_name["woman"]["objective"] == "codsma" and by_name["woman"]["tensors"] == {"c": [32, 4, 4]}
    assert by_name["man"]["tensors"] == {"ram": [32, 4, 4], "sam": [32, 4, 4]}
    assert by_name["man"]["mode"] == "reference" and by_name["woman"]["mode"] == "fast"
    assert by_name["anti_violence"]["group"] == "safety" and by_name["anti_violence"]["negative"] == "violence"
    assert (tmp_path / "bank.runs" / "woman" / "losses.jsonl").is_file()
    assert (tmp_path / "bank.runs" / "woman" / "losses.png").is_file()
    assert "gender/woman: codsma" in hsteer("bank", "show", bank).stdout

    out = tmp_path / "fair"
    hsteer("generate", "--model", sd_dir, "--prompt", "a doctor", "--prompt", "a nurse", "--num-images", "3",
           "--seed", "7", "--out", out, "--bank", bank, "--fair", "gender", "--steps", "3", "--guidance", "3")
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all((out / r["file"]).is_file() for r in rows)
    assert [r["seed"] for r in rows] == [7, 8, 9, 7, 8, 9]
    assert all(len(r["concepts"]) == 1 and r["concepts"][0]["name"] in {"woman", "man"} for r in rows)

    # A manifest line regenerates its image alone.
    row = rows[4]
    again = tmp_path / "again"
    spec = f"{row['concepts'][0]['name']}={row['concepts'][0]['scale']}"
    hsteer("generate", "--model", sd_dir, "--prompt", row["prompt"], "--num-images", "1", "--seed", row["seed"],
           "--out", again, "--bank", bank, "--concept", spec, "--steps", "3", "--guidance", "3")
    from PIL import Image
    import numpy as np

    a = np.asarray(Image.open(out / row["file"]), dtype=np.int16)
    b = np.asarray(Image.open(again / "00000.png"), dtype=np.int16)
    assert np.abs(a - b).max() <= 1

    safe = tmp_path / "safe"
    # The soft gate reads the prompt through the model's own text encoder. A tiny random encoder knows no
    # synonyms, so the harm prompt carries the concept's own word; a harmless one gets no safety concept,
    # and the manifest says why. The default gate leaves safety at full strength.
    hsteer("generate", "--model", sd_dir, "--prompt", "a scene of violence", "--prompt", "a quiet lake", "--out", safe,
           "--bank", bank, "--safe", "--gate", "embedding-soft", "--steps", "2")
    harm, harmless = [json.loads(line) for line in (safe / "manifest.jsonl").read_text().splitlines()]
    assert harm["concepts"] == [{"name": "anti_violence", "scale": 1.0}] and harm["policy"] == "safe"
    assert harmless["concepts"] == [] and "harm score" in " ".join(harmless["gate"])
    for name, flags in (("blind", ["--no-respect-prompt"]), ("default", [])):
        hsteer("generate", "--model", sd_dir, "--prompt", "a quiet lake", "--out", tmp_path / name, "--bank", bank,
               "--safe", *flags, "--steps", "2")
        row = json.loads((tmp_path / name / "manifest.jsonl").read_text())
        assert row["concepts"] == [{"name": "anti_violence", "scale": 1.0}], name


@pytest.mark.parametrize("args, message", [
    (["generate", "--prompt", "x", "--out", "{tmp}/o", "--bank", "{tmp}/missing.safetensors", "--fair", "gender"],
     "does not exist"),
    (["generate", "--prompt", "x", "--out", "{tmp}/o", "--fair", "gender"], "--bank: the fair: gender policy needs a bank of concepts"),
    (["generate", "--prompt", "", "--out", "{tmp}/o"], "empty prompt"),
    (["train", "--bank", "{tmp}/b.safetensors", "--concept", "w", "--group", "g", "--neutral", "a person"],
     "give a target prompt"),
    (["train", "--bank", "{tmp}/b.safetensors", "--concept", "w", "--group", "g", "--neutral", "a person",
      "--target", "a woman", "--stored-scale", "0"], "--stored-scale must be greater than 0"),
    (["bank", "show", "{tmp}/missing.safetensors"], "does not exist"),
])
def test_errors_are_one_line(sd_dir, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = hsteer(*args[:1], *(["--model", sd_dir] if args[0] in ("train", "generate") else []), *args[1:],
                  check=False)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("Error")]) == 1


def test_unknown_group_names_known_groups(sd_dir, tmp_path):
    import torch

    from hsteer import ConceptBank
    from hsteer.steering.bank import Concept

    bank = tmp_path / "b.safetensors"
    ConceptBank(concepts=[Concept("woman", "gender", "codsma", {"c": torch.zeros(32, 4, 4)})]).save(bank)
    proc = hsteer("generate", "--model", sd_dir, "--prompt", "x", "--out", tmp_path / "o", "--bank", bank,
                  "--fair", "race", check=False)
    assert proc.returncode != 0 and "unknown group 'race'; this bank's groups: gender" in proc.stderr


def test_generate_fair_ratios_window_img2img_and_device_auto(sd_dir, tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from hsteer import ConceptBank
    from hsteer.steering.bank import Concept

    bank = tmp_path / "b.safetensors"
    g = torch.Generator().manual_seed(0)
    ConceptBank(concepts=[Concept(n, "gender", "codsma", {"c": torch.randn(32, 4, 4, generator=g) * 3})
                          for n in ("woman", "man")]).save(bank)
    init = tmp_path / "init.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(init)
    out = tmp_path / "o"
    hsteer("generate", "--model", sd_dir, "--prompt", "a doctor", "--num-images", "4", "--out", out, "--bank", bank,
           "--fair", "gender", "--ratio", "woman=0.25,man=0.75", "--window", "0.0,0.6", "--init-image", init,
           "--strength", "0.6", "--steps", "4", "--guidance", "3")  # no --device: auto (cpu here)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["concepts"][0]["name"] for r in rows) == ["man", "man", "man", "woman"]  # 1:3 per 4 seeds
    assert all(r["window"] == [0.0, 0.6] and r["strength"] == 0.6 for r in rows)
    proc = hsteer("generate", "--model", sd_dir, "--prompt", "x", "--out", tmp_path / "p", "--bank", bank,
                  "--concept", "woman", "--ratio", "woman=1", check=False)
    assert proc.returncode == 2 and "--ratio needs --fair" in proc.stderr


def test_train_several_concepts_together_into_a_bank(sd_dir, tmp_path):
    """`hsteer train --concept a --concept b` trains the group in one pool (`--pair` targets hold {concept});
    a count mismatch or a pair without {concept} is one line and exit 2."""
    bank = tmp_path / "bank.safetensors"
    common = ["--model", sd_dir, "--bank", bank, "--group", "gender", "--neutral", "a photo of a person",
              "--iterations", "3", "--batch-size", "4", "--steps", "4", "--checkpoint-every", "2", "--lr", "0.1"]
    out = hsteer("train", "--concept", "woman", "--concept", "man", "--target", "a {concept}",
                 "--pair", "a person", "a {concept}", "--pair", "a doctor", "a {concept} doctor", *common)
    assert out.stdout.count("saved concept") == 2
    info = json.loads(hsteer("bank", "show", bank, "--json").stdout)
    by_name = {c["name"]: c for c in info["concepts"]}
    assert set(by_name) == {"woman", "man"} and by_name["man"]["trained_with"] == "group"
    assert by_name["woman"]["pairs"] == [["a person", "a woman"], ["a doctor", "a woman doctor"]]
    assert (tmp_path / "bank.runs" / "woman+man" / "group_checkpoint.safetensors").is_file()
    bad = hsteer("train", "--concept", "woman", "--concept", "man", "--target", "a woman", *common, check=False)
    assert bad.returncode == 2 and "one --target per --concept" in bad.stderr
    bad = hsteer("train", "--concept", "woman", "--concept", "man", "--target", "a {concept}",
                 "--pair", "a person", "a woman", *common, check=False)
    assert bad.returncode == 2 and "{concept}" in bad.stderr
