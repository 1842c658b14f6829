"""The web page's Bank tab through gradio_client: uploads, command-line banks, files under --allow-dir only,
and Hub repo ids that never read a server path (fixtures: `ui_helpers`; nothing may leave the machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ui_helpers import OUTSIDE_ATTEMPTS, client, gen, network_guard, page_server

from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image


@pytest.fixture(scope="module", autouse=True)
def no_network():
    yield from network_guard()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from page_server(tmp_path_factory)


def test_bad_bank_uploads_give_messages_not_crashes(server, tmp_path):
    c = client(server, tmp_path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all")
    out = c.predict(bank_file=handle_file(str(junk)), api_name="/upload_bank")
    assert out[0].startswith("**Error:** bank file junk.safetensors is corrupt or not a safetensors file"), out[0]
    assert "/" not in out[0] and out[-1] is None  # the user's file by name; the refused upload leaves the box
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    out = c.predict(bank_file=handle_file(str(plain)), api_name="/upload_bank")
    assert "not an hsteer bank" in out[0]
    # the session's bank is what it was, and the server still works
    _, steered, _, _ = gen(c, groups=["shape"], n=1)
    assert steered[0]["caption"] in ("seed 0: circle", "seed 0: square")
    # a good upload replaces the bank
    out = c.predict(bank_file=handle_file(str(server["allowed"] / "colours.safetensors")), api_name="/upload_bank")
    assert out[0] == "Loaded **colours.safetensors**: 1 concept(s)."
    assert [row[0] for row in out[2]["data"]] == ["red"]


def test_paths_outside_the_allowed_folders_are_refused(server, tmp_path):
    c = client(server, tmp_path)
    outside = server["outside"]
    for path in (str(outside / "secret.safetensors"), "/etc/passwd", "../outside/secret.safetensors",
                 "escape.safetensors", "escape-dir/secret.safetensors", str(server["allowed"] / "escape.safetensors")):
        out = c.predict(path=path, api_name="/load_bank_path")
        assert out[0].startswith("**Error:**") and "outside the folders this server may read" in out[0], (path, out[0])
    out = c.predict(path="/etc/does-not-exist", api_name="/load_bank_path")
    assert "outside the folders" in out[0]  # the same answer whether it exists or not
    # the server itself serves no file by path: not the allowed folders' files, not the session's own folder
    import httpx

    for path in (server["allowed"] / "colours.safetensors", outside / "secret.safetensors", "/etc/passwd"):
        assert httpx.get(f"{server['url']}gradio_api/file={path}").status_code == 403, path
    out = c.predict(path="colours.safetensors", api_name="/load_bank_path")  # relative to the allowed folder
    assert out[0] == "Loaded **colours.safetensors**: 1 concept(s)."

    for folder in (str(outside), "escape-dir", "../outside", "/"):
        with pytest.raises(AppError, match="outside the folders"):
            c.predict(found_folder=None, run_folder=folder, api_name="/open_report")
    body, figures = c.predict(found_folder=None, run_folder="runs/wino", api_name="/open_report")
    assert "| doctor | 0.12 |" in body and "secret" not in body
    assert [f["caption"] for f in figures] == ["gender"]  # the image outside the run folder is not read
    assert "not shown" in body
    assert Image.open(figures[0]["image"]).getpixel((0, 0))[:3] == (255, 0, 0)


def test_banks_by_hub_repo_id_never_read_server_paths(server, tmp_path, monkeypatch):
    """The Hub box loads `user/repo[:FILE][@REV]` from the Hub cache (offline here) and nothing else."""
    from bank_helpers import hub_snapshot, random_bank
    from huggingface_hub import constants

    cache = hub_snapshot(tmp_path / "hub", "user/ui-banks",
                         {"hsteer_bank.safetensors": random_bank(server["pipe"], ("hub_a", "hub_b"), "hubg")})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    c = client(server, tmp_path)
    out = c.predict(repo_id="user/ui-banks", api_name="/load_bank_hub")
    assert out[0] == "Loaded **user/ui-banks**: 2 concept(s)." and [r[0] for r in out[2]["data"]] == ["hub_a", "hub_b"]
    _, steered, _, _ = gen(c, groups=["hubg"], n=2)
    assert {i["caption"].split(": ")[1] for i in steered} == {"hub_a", "hub_b"}  # fair: each drawn once
    refused = {"user/ui-banks:../../../outside/secret.safetensors": "leaves the repository",
               "/etc/passwd": "not a Hub repo id", str(server["outside"] / "secret.safetensors"): "not a Hub repo id",
               "allowed/colours.safetensors": "not a Hub repo id", "user/missing": "could not get bank",
               # an existing folder of the server that reads like a repo id is looked up on the Hub, not read
               "tests/data": "could not get bank tests/data"}
    assert Path("tests/data").is_dir()
    for text, message in refused.items():
        out = c.predict(repo_id=text, api_name="/load_bank_hub")
        assert out[0].startswith("**Error:**") and message in out[0], (text, out[0])
    assert [r[0] for r in c.predict(api_name="/new_bank")[2]["data"]] == [""]  # the session still answers
    # `hsteer ui --bank user/repo`: a command-line bank may be a Hub repo id too
    from hsteer.ui.server import HsteerUI

    ui = HsteerUI(server["pipe"], banks=["user/ui-banks"])
    sess = ui.new_session()
    assert list(ui.cli_banks) == ["user/ui-banks"] and sess.bank_label == "user/ui-banks"
    assert sess.snapshot().names == ["hub_a", "hub_b"]
    sess.close()



def test_allowed_dirs_unit(tmp_path):
    from hsteer.ui.paths import AllowedDirs, PathRefused

    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.txt").write_text("a")
    (tmp_path / "no").mkdir()
    (tmp_path / "no" / "b.txt").write_text("b")
    (tmp_path / "ok" / "link").symlink_to(tmp_path / "no" / "b.txt")
    allowed = AllowedDirs([tmp_path / "ok"])
    assert allowed.resolve("a.txt") == (tmp_path / "ok" / "a.txt").resolve()
    assert allowed.resolve(str(tmp_path / "ok"), kind="dir") == (tmp_path / "ok").resolve()
    for bad in ("link", "../no/b.txt", str(tmp_path / "no" / "b.txt"), "", "a\x00b"):
        with pytest.raises(PathRefused):
            allowed.resolve(bad)
    with pytest.raises(PathRefused, match="allows no folders"):
        AllowedDirs([]).resolve("a.txt")


def test_nothing_reached_the_network():
    assert OUTSIDE_ATTEMPTS == []
