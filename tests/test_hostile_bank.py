"""Hostile banks and bank commands: metadata of wrong types, what `bank show` reports, shapes a bank could
not load, `bank push --save-dir` over files that are not hsteer's, `sites --set-default` on the installed
package or a U-Net."""

from __future__ import annotations

import json
import os

import pytest
import torch
from hostile_helpers import HSPACE, assert_handled, cli, good_header, make_bank, raw_bank
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsteer.errors import BankError, HsteerError
from hsteer.steering.bank import Concept, ConceptBank


@pytest.mark.parametrize("meta", [{"pairs": {"ab": 1}}, {"pairs": ["ab"]}, {"pairs": [[None, "x"]]},
                                  {"pairs": [["a", "b", "c"]]}, {"pairs": "a,b"}, {"neutral": {"x": 1}},
                                  {"target": 5}, {"negative": ["a"]}])
def test_bank_metadata_of_wrong_types_is_refused_on_load(tmp_path, meta):
    header = good_header()
    header["concepts"]["square"]["meta"] = meta
    path = raw_bank(tmp_path / "b.safetensors", header)
    with pytest.raises(BankError, match="bank file .*square"):
        ConceptBank.load(path)
    assert_handled(cli("bank", "show", path), "square")


def test_bank_show_reports_the_tensors_not_what_meta_claims(tmp_path):
    header = good_header()
    header["concepts"]["square"]["meta"] = {"name": "liar", "tensors": {"c": [1]}, "nonfinite": ["c"],
                                            "group": "other", "objective": "x"}
    path = raw_bank(tmp_path / "b.safetensors", header)
    info = json.loads(cli("bank", "show", "--json", path).stdout)
    concept = info["concepts"][0]
    assert (concept["name"], concept["group"], concept["objective"]) == ("square", "shape", "codsma")
    assert concept["tensors"] == {"c": list(HSPACE)} and "nonfinite" not in concept
    text = cli("bank", "show", path).stdout
    assert "shape/square" in text and "NON-FINITE" not in text


@pytest.mark.parametrize("tensor", [torch.tensor(1.0), torch.zeros(4), torch.zeros(0, 4), torch.zeros(1, 1, 1, 1)])
def test_concepts_a_bank_could_not_load_are_refused_when_made(tensor):
    with pytest.raises(BankError, match="shape"):
        Concept("c", "g", "codsma", {"c": tensor})


@pytest.mark.parametrize("shape", [(-1, 4, 4), (0, 4), (4,), "abc", (1.5, 2), (True, 2), 5])
def test_bank_shapes_of_every_wrong_kind(shape):
    with pytest.raises(BankError, match="shape"):
        ConceptBank(hspace_shape=shape)


@pytest.mark.parametrize("other", [None, "bank.safetensors", object(), [1]])
def test_merge_takes_a_bank(other):
    with pytest.raises(BankError, match="ConceptBank"):
        ConceptBank().merge(other)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["pairs", "neutral", "target", "negative", "window", "site", "x"]),
                       st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3)),
                                    lambda inner: st.lists(inner, max_size=3), max_leaves=6)))
def test_any_concept_meta_loads_or_is_refused_in_one_line(tmp_path, meta):
    header = good_header()
    header["concepts"]["square"]["meta"] = meta
    try:
        path = raw_bank(tmp_path / "b.safetensors", header)
    except ValueError:  # NaN in the header: json.dumps writes it, safetensors takes it
        return
    try:
        bank = ConceptBank.load(path)
    except HsteerError:
        return
    from hsteer.gate import training_pairs
    from hsteer.steering.bankcheck import flag_nonfinite

    flag_nonfinite(bank)
    training_pairs(bank["square"])


# --- bank push --save-dir, bank card --eval-summary ---------------------------------------------------------


def test_save_dir_never_replaces_a_readme_hsteer_did_not_write(tmp_path):
    bank = make_bank(tmp_path / "b.safetensors")
    save = tmp_path / "out"
    save.mkdir()
    (save / "README.md").write_text("# my project\n")
    assert_handled(cli("bank", "push", bank, "user/repo", "--save-dir", save), "not a model card written by hsteer")
    assert (save / "README.md").read_text() == "# my project\n" and not (save / "hsteer_bank.safetensors").exists()
    (save / "README.md").unlink()
    assert cli("bank", "push", bank, "user/repo", "--save-dir", save).exit_code == 0
    assert cli("bank", "push", bank, "user/repo", "--save-dir", save).exit_code == 0  # its own card: replaced


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_save_dir_with_a_readme_that_is_not_a_file(tmp_path, kind):
    bank = make_bank(tmp_path / "b.safetensors")
    save = tmp_path / "out"
    save.mkdir()
    os.mkfifo(save / "README.md") if kind == "fifo" else (save / "README.md").mkdir()
    assert_handled(cli("bank", "push", bank, "user/repo", "--save-dir", save), "README.md")
    assert not (save / "hsteer_bank.safetensors").exists()


@pytest.mark.parametrize("content, fragment", [("[" * 100_000, "levels deep"), ("[1]", "not a summary"),
                                               ("nope", "not valid JSON")])
def test_eval_summary_files(tmp_path, content, fragment):
    bank = make_bank(tmp_path / "b.safetensors")
    summary = tmp_path / "summary.json"
    summary.write_text(content)
    assert_handled(cli("bank", "card", bank, "--eval-summary", summary), fragment)


# --- sites --set-default -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model, fragment", [("world-dit", "installed with hsteer"), (None, "U-Net"),
                                             ("user/some-model", "not a local model folder")])
def test_set_default_refused_before_the_scan(model, fragment):
    args = ["sites", "--device", "cpu", "--set-default"] + (["--model", model] if model else [])
    assert_handled(cli(*args), fragment)


def test_sites_json_under_a_file_is_refused_before_loading(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    assert_handled(cli("sites", "--device", "cpu", "--json", tmp_path / "file.txt" / "out.json"), "is a file")


def test_the_installed_cards_are_never_written():
    from hsteer.model.loading import write_default_site
    from hsteer.model.loading import BUNDLED_DIT_MODEL

    before = (BUNDLED_DIT_MODEL / "hsteer.json").read_bytes()
    with pytest.raises(HsteerError, match="installed with hsteer"):
        write_default_site(BUNDLED_DIT_MODEL, "transformer_blocks.0")
    assert (BUNDLED_DIT_MODEL / "hsteer.json").read_bytes() == before


@pytest.mark.parametrize("extra, fragment", [(["--height", "33"], "multiple of 8"), (["--width", "0"], "--width"),
                                             (["--lr", "inf"], "--lr"), (["--lr", "nan"], "--lr"),
                                             (["--seed", "-1"], "--seed"), (["--iterations", "0"], "--iterations")])
def test_site_scan_numbers_refused_before_loading(extra, fragment):
    assert_handled(cli("sites", "--device", "cpu", *extra), fragment)


def test_a_tensor_no_concept_owns_is_refused(tmp_path):
    """A single-site bank with an extra tensor, and a set of sites' concept with a tensor at a site its meta
    does not list: the header and the tensors disagree, so the file is refused (it never loads silently)."""
    single = raw_bank(tmp_path / "one.safetensors", good_header(),
                      {"square/c": torch.zeros(HSPACE), "square/c@transformer_blocks.9": torch.zeros(2, 4)})
    sites = {"transformer_blocks.0": [2, 4], "text": [3, 4]}
    header = good_header(hspace_shape=[20], site="transformer_blocks.0,text", site_shapes=sites)
    header["concepts"]["square"]["meta"] = {"site": "transformer_blocks.0,text", "site_shapes": sites}
    tensors = {"square/c@transformer_blocks.0": torch.zeros(2, 4), "square/c@text": torch.zeros(3, 4)}
    fine = raw_bank(tmp_path / "set.safetensors", header, tensors)
    assert ConceptBank.load(fine)["square"].tensors["c"].shape == (20,)
    stray = raw_bank(tmp_path / "stray.safetensors", header, {**tensors, "square/c@transformer_blocks.1": torch.ones(2, 4)})
    for path, key in ((single, "square/c@transformer_blocks.9"), (stray, "square/c@transformer_blocks.1")):
        with pytest.raises(BankError, match=f"tensor '{key}' belongs to no concept"):
            ConceptBank.load(path)
        assert_handled(cli("bank", "show", path), "belongs to no concept")
