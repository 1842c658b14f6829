"""Banks on the Hub, offline: a local Hub cache in the real snapshot layout, so that the real
`huggingface_hub.hf_hub_download` path runs with HF_HUB_OFFLINE=1; the card; the push folder and a
push that cannot reach any Hub (an unreachable local address: nothing touches the network)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bank_helpers import hub_snapshot

from hsteer import BankError, ConceptBank
from hsteer.steering.bank import Concept
from hsteer.steering.hub import DEFAULT_WEIGHT_NAME, parse_bank_spec

MAIN, TAGGED = "a" * 40, "b" * 40


def _bank(names=("woman", "man"), value=1.0):
    meta = {"model": "CompVis/stable-diffusion-v1-4", "neutral": "a person", "iterations": 1000, "lr": 0.05,
            "batch_size": 8, "steps": 50, "mode": "fast"}
    return ConceptBank(concepts=[Concept(n, "gender", "codsma", {"c": torch.full((4, 2, 2), value + i)},
                                         {**meta, "target": f"a {n}"}) for i, n in enumerate(names)])


def populate_cache(cache: Path, repo_id: str = "user/banks") -> Path:
    """main: the default bank (save_pretrained, with its card) and sub/nurses.safetensors; tag v1: another bank."""
    hub_snapshot(cache, repo_id, {"sub/nurses.safetensors": _bank(("nurse",), 5.0)}, commit=MAIN)
    _bank().save_pretrained(cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / MAIN)  # + README.md
    return hub_snapshot(cache, repo_id, {DEFAULT_WEIGHT_NAME: _bank(("white", "black"), 9.0)}, commit=TAGGED,
                        ref="v1")


def test_specs_parse_paths_and_repos(tmp_path):
    assert parse_bank_spec("user/repo").repo_id == "user/repo"
    spec = parse_bank_spec("user/repo:sub/x.safetensors@v1")
    assert (spec.repo_id, spec.weight_name, spec.revision) == ("user/repo", "sub/x.safetensors", "v1")
    assert parse_bank_spec("gender.safetensors").path == Path("gender.safetensors")
    assert parse_bank_spec("dir/gender.safetensors").path is not None  # a file name, not a repo
    (tmp_path / "user").mkdir()
    assert parse_bank_spec(str(tmp_path / "user")).path == tmp_path / "user"


def test_load_from_the_hub_cache_offline(tmp_path):
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE, "the suite runs with HF_HUB_OFFLINE=1"
    cache = populate_cache(tmp_path / "hub")
    bank = ConceptBank.load("user/banks", cache_dir=cache)
    assert bank.names == ["woman", "man"] and torch.equal(bank["man"].delta(), torch.full((4, 2, 2), 2.0))
    assert ConceptBank.load("user/banks", revision="v1", cache_dir=cache).names == ["white", "black"]
    assert ConceptBank.load("user/banks@v1", cache_dir=cache).names == ["white", "black"]
    assert ConceptBank.load("user/banks", weight_name="nurses.safetensors", subfolder="sub",
                            cache_dir=cache).names == ["nurse"]
    assert ConceptBank.load("user/banks:sub/nurses.safetensors", cache_dir=cache).names == ["nurse"]
    with pytest.raises(BankError, match=r"could not get bank user/missing:hsteer_bank.safetensors@main"):
        ConceptBank.load("user/missing", cache_dir=cache)
    with pytest.raises(BankError, match="could not get bank"):
        ConceptBank.load("user/banks@v2", cache_dir=cache)
    # a file part that climbs out of the repo's snapshot: refused before the Hub client is asked (current
    # huggingface_hub refuses '..' too, blaming the repo's owner; older releases and absolute paths vary)
    (cache / "stray.safetensors").write_bytes((cache / "models--user--banks" / "snapshots" / TAGGED
                                               / DEFAULT_WEIGHT_NAME).read_bytes())
    for spec in ("user/banks:../../../stray.safetensors", "user/banks:sub/../../../../stray.safetensors"):
        with pytest.raises(BankError, match="leaves the repository"):
            ConceptBank.load(spec, cache_dir=cache)
    with pytest.raises(BankError, match="leaves the repository"):
        ConceptBank.load("user/banks", weight_name="/etc/passwd", cache_dir=cache)


def test_local_files_and_folders_still_load(tmp_path):
    _bank().save(tmp_path / "b.safetensors")
    assert ConceptBank.load(tmp_path / "b.safetensors").names == ["woman", "man"]
    assert ConceptBank.load(str(tmp_path)).names == ["woman", "man"]  # a folder's only .safetensors
    _bank(("x",)).save_pretrained(tmp_path / "pretrained")
    assert ConceptBank.load(tmp_path / "pretrained").names == ["x"]
    with pytest.raises(BankError, match="does not exist"):
        ConceptBank.load(tmp_path / "missing.safetensors")


def test_save_pretrained_writes_the_bank_and_its_card(tmp_path):
    from huggingface_hub import ModelCard

    summary = {"deviation_ratio": {"mean": 0.12}, "fidelity": 0.98}
    folder = _bank().save_pretrained(tmp_path / "out", eval_summary=summary, repo_id="user/gender")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", DEFAULT_WEIGHT_NAME]
    text = (folder / "README.md").read_text()
    card = ModelCard(text)
    assert card.data.library_name == "hsteer" and card.data.license == "other"
    assert card.data.base_model == ["CompVis/stable-diffusion-v1-4"] and "hsteer" in card.data.tags
    assert "| woman | gender | codsma | (4, 2, 2) | c | neutral: 'a person'; target: 'a woman' |" in text
    assert "iterations=1000" in text and "lr=0.05" in text
    assert "hsteer.ConceptBank.load('user/gender')" in text and "--bank user/gender --fair gender" in text
    assert '"mean": 0.12' in text
    assert "Evaluation" not in _bank().model_card()
    assert ConceptBank.load(folder).names == ["woman", "man"]


def test_local_model_paths_are_not_a_base_model(tmp_path):
    bank = ConceptBank(concepts=[Concept("w", "g", "codsma", {"c": torch.zeros(4, 2, 2)}, {"model": "/tmp/x/model"})])
    assert "base_model" not in bank.model_card()


@pytest.mark.parametrize("offline", [True, False])
def test_push_without_a_reachable_hub_fails_with_one_clear_error(monkeypatch, offline):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    with pytest.raises(BankError, match=r"could not push bank to user/gender on http://127\.0\.0\.1:9") as info:
        _bank().push_to_hub("user/gender", token="hf_not_a_token", endpoint="http://127.0.0.1:9")
    assert "\n" not in str(info.value)


def _hsteer(*args, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "hsteer", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_reads_hub_repos_and_previews_and_saves_the_push_folder(tmp_path):
    cache = populate_cache(tmp_path / "hub")
    proc = _hsteer("bank", "show", "user/banks:sub/nurses.safetensors", "--json", env={"HF_HUB_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    assert [c["name"] for c in json.loads(proc.stdout)["concepts"]] == ["nurse"]
    proc = _hsteer("bank", "show", "user/banks@v1", env={"HF_HUB_CACHE": str(cache)})
    assert "gender/white" in proc.stdout
    _bank().save(tmp_path / "b.safetensors")
    card = _hsteer("bank", "card", tmp_path / "b.safetensors", "--repo-id", "me/gender")
    assert card.returncode == 0 and card.stdout.startswith("---\nlibrary_name: hsteer\n")
    saved = _hsteer("bank", "push", tmp_path / "b.safetensors", "me/gender", "--save-dir", tmp_path / "push")
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "push" / "README.md").read_text().strip() == card.stdout.strip()
    assert ConceptBank.load(tmp_path / "push").names == ["woman", "man"]
    failed = _hsteer("bank", "push", tmp_path / "b.safetensors", "me/gender", "--token", "hf_x")
    assert failed.returncode == 2 and "could not push bank to me/gender" in failed.stderr
    assert "Traceback" not in failed.stderr
