"""`hsteer ui` through gradio_client: the page's server in this process, on a free port, on the bundled model.

Every client is its own browser session. Nothing may leave the machine: a guard on socket.connect records
any connection to a non-loopback address, and the last test asserts there was none.
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ui_helpers import (LEARN_DEFAULTS, NEUTRAL, OUTSIDE_ATTEMPTS, STEPS, client, free_port, gen, learn,
                        network_guard, page_server)

from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from hsteer import ConceptBank, generate


@pytest.fixture(scope="module", autouse=True)
def no_network():
    yield from network_guard()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from page_server(tmp_path_factory)


# --- generation --------------------------------------------------------------------------------------


def test_generate_shows_plain_and_steered_with_captions_and_download(server, tmp_path):
    c = client(server, tmp_path)
    plain, steered, archive, status = gen(c, policy="fair", groups=["shape"], seed=0, n=2)
    assert len(plain) == 2 and len(steered) == 2
    assert [g["caption"] for g in plain] == ["seed 0: plain", "seed 1: plain"]
    # fair over {circle, square}: two consecutive seeds draw each concept once
    assert [g["caption"] for g in steered] in (["seed 0: circle", "seed 1: square"],
                                               ["seed 0: square", "seed 1: circle"])
    assert "fair: shape" in status and "seeds 0–1" in status  # the policy's own describe()
    for item in plain + steered:
        assert Image.open(item["image"]).size[0] >= 128  # the 32 px images are shown enlarged

    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        assert {"plain/manifest.jsonl", "steered/manifest.jsonl", "plain/00000.png", "steered/00001.png"} <= names
        rows = [json.loads(line) for line in zf.read("steered/manifest.jsonl").decode().splitlines()]
        plain_png = np.asarray(Image.open(zf.open("plain/00000.png")), dtype=np.int16)
        steered_pngs = [np.asarray(Image.open(zf.open(f"steered/0000{i}.png")), dtype=np.int16) for i in range(2)]
    # captions are the manifest's concepts, image by image
    for row, item in zip(rows, steered):
        assert row["concepts"][0]["scale"] == 1.0 and len(row["concepts"]) == 1
        assert item["caption"] == f"seed {row['seed']}: {row['concepts'][0]['name']}"
    assert all(r["steps"] == STEPS and r["policy"] == "fair" for r in rows)
    # the plain column is the library's plain image for that seed; steering changes the images
    direct = generate(server["pipe"], "a photo of a doctor", seed=0, steps=STEPS, guidance=4.0, progress=False)
    assert np.abs(np.asarray(direct.images[0], dtype=np.int16) - plain_png).max() <= 1
    assert any(np.abs(s - plain_png).max() > 10 for s in steered_pngs[:1])


def test_concept_sliders_allow_negative_scales(server, tmp_path):
    c = client(server, tmp_path)
    _, steered, _, status = gen(c, policy="concepts", scales=[-1.5], n=1)  # slider 1: the bank's first concept
    assert steered[0]["caption"] == "seed 0: circle ×-1.5"
    assert "circle=-1.5" in status


def test_bad_input_gives_messages_and_the_server_lives_on(server, tmp_path):
    c = client(server, tmp_path)
    with pytest.raises(AppError, match="prompt is empty"):
        gen(c, prompt="   ")
    with pytest.raises(AppError, match="(between 1 and 16|greater than maximum value 16)"):
        gen(c, n=1000)
    with pytest.raises(AppError, match="unknown group 'gender'"):
        gen(c, groups=["gender"])
    with pytest.raises(AppError, match="every concept slider is at 0"):
        gen(c, policy="concepts")
    with pytest.raises(AppError, match="invalid concept name"):
        learn(c, "not a name!", "shape", "a photo of a circle figure")
    with pytest.raises(AppError, match="target prompt.*or a negative prompt"):
        learn(c, "x", "shape", "")
    plain, steered, _, _ = gen(c, policy="plain", n=1)
    assert len(plain) == 1 and steered == []


def _policy_radio(app):
    return next(b for b in app.blocks.values() if getattr(b, "label", None) == "Policy")


def test_without_a_bank_the_policy_the_page_shows_is_the_one_that_runs(server, tmp_path):
    """`hsteer ui` with no bank: the page opens on plain (its first value and the load event's agree), and
    Generate with it gives plain images; a policy that needs concepts is refused with a readable message."""
    from hsteer.ui.app import launch

    app = launch(model=server["pipe"], port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        radio = _policy_radio(app)
        on_load = next(d.fn for d in app.fns.values() if d.fn.__name__ == "on_load")
        loaded = on_load(None)
        assert radio.value == loaded[radio] == "plain"
        next(v for v in loaded.values() if type(v).__name__ == "Session").close()
        c = Client(app.local_url, verbose=False, analytics_enabled=False, download_files=str(tmp_path))
        plain, steered, archive, status = gen(c, policy=radio.value, groups=[], n=2)
        assert [g["caption"] for g in plain] == ["seed 0: plain", "seed 1: plain"] and steered == []
        assert "plain only" in status and "Error" not in status
        with zipfile.ZipFile(archive) as zf:
            assert {"plain/00000.png", "plain/00001.png", "plain/manifest.jsonl"} <= set(zf.namelist())
        with pytest.raises(AppError, match="the fair policy needs concepts, and this session's bank is empty"):
            gen(c, policy="fair", groups=[], n=1)
    finally:
        app.close()
    assert _policy_radio(server["app"]).value == "fair"  # a bank with groups opens on fair


def test_default_policy_suits_the_bank(server):
    """Fair when the bank has groups besides safety, safe when it has only that one, plain when it is empty."""
    from bank_helpers import random_bank

    from hsteer.ui.handlers_generate import POLICY_CHOICES, default_policy

    assert POLICY_CHOICES == ("plain", "fair", "safe", "concepts")
    assert default_policy(None) == default_policy(ConceptBank()) == "plain"
    assert default_policy(random_bank(server["pipe"], ("violence",), "safety")) == "safe"
    assert default_policy(random_bank(server["pipe"])) == "fair"


def test_handled_errors_are_kept_for_the_status_line():
    """`guard` keeps a handled error's own text for its tab's status line (the `.failure` handler), which
    shows it once, as plain text; no pop-up is asked for."""
    import gradio as gr

    from hsteer import HsteerError
    from hsteer.ui.session import Session
    from hsteer.ui.wiring import UNSEEN_FAILURE, failure_text, guard

    @guard
    def handler(sess):
        raise HsteerError("use ASCII letters, digits, '_', '-' and '.'")

    sess = Session()
    try:
        with pytest.raises(gr.Error) as raised:
            handler(sess)
        assert raised.value.message == "use ASCII letters, digits, '_', '-' and '.'" and not raised.value.visible
        assert failure_text(sess, "handler") == r"**Error:** use ASCII letters, digits, '\_', '-' and '.'"
        # shown once: a later failure that no handler saw (Gradio refused an input) never repeats it
        assert failure_text(sess, "handler") == f"**Error:** {UNSEEN_FAILURE}"
        assert failure_text(None, "handler").startswith("**Error:** ")
    finally:
        sess.close()


def test_forms_use_the_library_checks():
    from hsteer import HsteerError
    from hsteer.ui.forms import LEARN_FIELDS, train_config, whole

    assert whole(2.0, "steps", 1, 4) == 2
    for bad, message in ((2.5, "whole number"), (None, "must be a number"), (9, "at most 4"), (0, "at least 1"),
                         (float("nan"), "finite")):
        with pytest.raises(HsteerError, match=message):
            whole(bad, "steps", 1, 4)
    values = dict(zip(LEARN_FIELDS, ("red", "colour", NEUTRAL, "a photo of a red figure", "", "codsma", 3, 0.05,
                                     2, STEPS, 4.0, 0, "not a number", None, "", "", 1.0)))
    config = train_config(values)  # the SDisc boxes are not read for another objective
    assert type(config).__name__ == "CodsmaConfig" and config.iterations == 3 and config.target_guidance == 4.0
    with pytest.raises(HsteerError, match="SDisc images must be a number"):
        train_config({**values, "objective": "sdisc"})
    sdisc = train_config({**values, "objective": "sdisc", "sdisc_images": 4.0, "sdisc_epochs": 2})
    assert (sdisc.sdisc_images, sdisc.sdisc_epochs) == (4, 2)
    with pytest.raises(HsteerError, match="unknown objective 'x'; choose one of codsma, respodiff, sdisc"):
        train_config({**values, "objective": "x"})
    with pytest.raises(HsteerError, match="invalid group name"):
        train_config({**values, "group": "../up"})


def test_the_page_imports_the_library_only_through_lib():
    """Every module of hsteer.ui but _lib imports hsteer only as hsteer.ui.*: a move in the library is fixed
    in _lib alone."""
    import ast

    ui = Path(__file__).resolve().parents[1] / "src" / "hsteer" / "ui"
    offenders = []
    for path in sorted(ui.glob("*.py")):
        if path.name == "_lib.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {m}" for m in modules
                          if (m == "hsteer" or m.startswith("hsteer.")) and not m.startswith("hsteer.ui")]
    assert offenders == []


# --- learning and sessions --------------------------------------------------------------------------


def test_learn_adds_the_concept_to_the_session_bank(server, tmp_path):
    c = client(server, tmp_path)
    out = learn(c, "green", "colour", "a photo of a green figure", iterations=2)
    status, plot, summary, table, _json, bank_file = out[:6]
    assert "Learned **colour/green (codsma)**" in status
    assert [row[0] for row in plot["data"]] == [1, 2]  # the loss curve: one point per iteration
    assert "3 concept(s)" in summary  # circle, square (the starting bank) + green
    assert ["green", "colour", "codsma"] == table["data"][-1][:3]
    row = dict(zip(table["headers"], table["data"][-1]))
    assert row["iterations"] == 2 and row["step window"] == "every step" and row["prompt pairs"] == ""
    bank = ConceptBank.load(bank_file)
    assert set(bank.names) == {"circle", "square", "green"}
    assert bank["green"].meta["iterations"] == 2 and bank["green"].meta["target"] == "a photo of a green figure"
    # the new concept steers this session's images
    _, steered, _, _ = gen(c, policy="fair", groups=["colour"], n=1)
    assert steered[0]["caption"] == "seed 0: green"


def test_two_sessions_have_separate_banks_and_training_does_not_block_the_other(server, tmp_path):
    a, b = client(server, tmp_path / "a"), client(server, tmp_path / "b")
    learn(a, "only_a", "mine", "a photo of a red figure", iterations=1)
    # b does not see a's concept ...
    with pytest.raises(AppError, match="unknown group 'mine'"):
        gen(b, groups=["mine"], n=1)
    # ... and a long training in b leaves a responsive, and is cancelled without touching b's bank
    job = b.submit(name="slow", group="mine", target="a photo of a blue figure",
                   **{**LEARN_DEFAULTS, "iterations": 5000, "batch_size": 1, "denoising_steps": 2}, api_name="/learn")
    deadline = time.monotonic() + 60
    while not any("iteration" in str(o[0]) for o in job.outputs() if o):
        assert time.monotonic() < deadline and not job.done(), job.outputs()
        time.sleep(0.1)
    started = time.perf_counter()
    _, steered, _, _ = gen(a, groups=["mine"], n=1)
    assert steered[0]["caption"] == "seed 0: only_a"
    assert not job.done(), "the other session's training ended before the generation came back"
    assert time.perf_counter() - started < 30
    assert "Cancelling" in b.predict(api_name="/cancel")
    final = job.result(timeout=60)
    assert final[0].startswith("Cancelled mine/slow") and "bank is unchanged" in final[0]
    assert "No training run" in a.predict(api_name="/cancel")  # a's session had nothing to cancel
    with pytest.raises(AppError, match="unknown group 'mine'"):
        gen(b, groups=["mine"], n=1)


def test_step_windows_and_prompt_pairs_in_learn_and_generate(server, tmp_path):
    """A concept learned for a step window acts in it ("as learned"); the page can override it for a batch."""
    c = client(server, tmp_path)
    pairs = "a photo of a red figure => a photo of a red square figure\n\na photo of a blue figure => a photo of a blue square figure"
    out = learn(c, "late", "timing", "", pairs=pairs, window="0.5,1.0", iterations=1, lr=1.0)
    assert out[0].startswith("Learned **timing/late (codsma)**"), out[0]
    row = dict(zip(out[3]["headers"], out[3]["data"][-1]))
    assert row["concept"] == "late" and row["step window"] == "50%–100%"
    assert row["prompt pairs"] == ("a photo of a red figure => a photo of a red square figure; "
                                   "a photo of a blue figure => a photo of a blue square figure")
    late = ConceptBank.load(out[5])["late"]
    assert late.window == (0.5, 1.0) and late.meta["pairs"] == [list(p) for p in (
        ("a photo of a red figure", "a photo of a red square figure"),
        ("a photo of a blue figure", "a photo of a blue square figure"))]

    def image(archive, name="steered/00000.png"):
        with zipfile.ZipFile(archive) as zf:
            return np.asarray(Image.open(zf.open(name)), dtype=np.int16), [
                json.loads(line) for line in zf.read("steered/manifest.jsonl").decode().splitlines()]

    _, steered, learned_zip, status = gen(c, groups=["timing"], n=1)
    assert steered[0]["caption"] == "seed 0: late"  # captions stay short; the status names the windows
    assert "in each concept's learned step window (late: steps 50%–100%)" in status
    learned, rows = image(learned_zip)
    assert "window" not in rows[0]  # the concept's own window: recorded with the concept in the bank
    _, steered, early_zip, status = gen(c, groups=["timing"], n=1, window=("custom", 0.0, 0.25))
    assert steered[0]["caption"] == "seed 0: late; steps 0%–25%" and "in steps 0%–25%" in status
    early, rows = image(early_zip)
    assert rows[0]["window"] == [0.0, 0.25]
    assert np.abs(early - learned).max() > 2  # a different window, a different image
    _, steered, every_zip, _ = gen(c, groups=["timing"], n=1, window=("every step", 0.3, 0.1))  # sliders unused
    assert steered[0]["caption"] == "seed 0: late" and image(every_zip)[1][0]["window"] == [0.0, 1.0]

    with pytest.raises(AppError, match=r"bad steering window \(0\.8, 0\.2\)"):
        gen(c, groups=["timing"], n=1, window=("custom", 0.8, 0.2))
    with pytest.raises(AppError, match="bad window 'soon'"):
        learn(c, "x", "timing", "a photo of a square figure", window="soon")
    with pytest.raises(AppError, match="prompt pair on line 2 must read 'NEUTRAL => TARGET'"):
        learn(c, "x", "timing", "", pairs="a => b\na photo of a figure")


def test_the_learn_tab_starts_on_the_demo_recipe(server):
    """The bundled model's Learn tab is filled with `hsteer demo`'s recipe for the circle (apps.recipes)."""
    from hsteer.apps.recipes import world_train_config

    recipe = world_train_config("circle", 150)
    values = {b.elem_id: b.value for b in server["app"].blocks.values() if getattr(b, "elem_id", None)}
    assert values["c-pairs"].splitlines() == [f"{n} => {t}" for n, t in recipe.pairs]
    assert values["c-window"] == "0.4,1" and recipe.window == (0.4, 1.0)
    assert values["c-batch"] == recipe.batch_size and values["c-iterations"] == 150


def test_the_evaluate_table_is_headed_before_a_run(server):
    from hsteer.ui.handlers_evaluate import EVAL_HEADERS

    table = next(b for b in server["app"].blocks.values() if getattr(b, "elem_id", None) == "eval-table")
    assert table.headers == EVAL_HEADERS and EVAL_HEADERS[0] == "profession"


def test_evaluate_world_for_the_session_bank(server, tmp_path):
    c = client(server, tmp_path)
    summary, table, untargeted, plot = c.predict(groups=["shape"], professions=["doctor", "nurse"],
                                                 images_per_prompt=2, steps=STEPS, with_safety=False,
                                                 api_name="/evaluate")
    assert "Plain vs fair over **shape**" in summary and "mean deviation ratio of shape (targeted)" in summary
    assert "95% intervals" in summary and re.search(r"\| profession fidelity \| [01]\.\d{3} \[", summary)
    assert table["headers"][:3] == ["profession", "shape DR plain", "shape DR fair"]
    rows = {r[0]: r for r in table["data"]}
    assert set(rows) == {"doctor", "nurse", "mean"}
    for row in rows.values():
        assert all(0.0 <= v <= 1.0 for v in row[1:])
    # the plain column is the library's world evaluation with the same settings
    from hsteer.world.evaluate import WorldEvalConfig, evaluate_world

    direct = evaluate_world(server["pipe"], WorldEvalConfig(professions=("doctor",), images_per_prompt=2,
                                                            harm_prompts=(), steps=STEPS, guidance=4.0), progress=False)
    assert rows["doctor"][1] == round(direct.summary["deviation_ratio"]["per_profession"]["doctor"]["shape"], 3)
    assert plot is not None and plot["type"] == "matplotlib"
    # the leakage figures: what fair-over-shape did to colour and profession, against the same seeds' plain
    # images, with intervals; the same numbers as the library's own measurement of the session's bank
    from hsteer import FairPolicy
    from hsteer.evaluation.leakage import fmt_ci

    config = WorldEvalConfig(professions=("doctor", "nurse"), images_per_prompt=2, harm_prompts=(), steps=STEPS,
                             guidance=4.0)
    plain = evaluate_world(server["pipe"], config, progress=False)
    fair = evaluate_world(server["pipe"], config, bank=ConceptBank.load(server["root"] / "shapes.safetensors"),
                          policy=FairPolicy(("shape",)), baseline=plain, progress=False).summary["untargeted"]
    rows = {r[0]: r for r in untargeted["data"]}
    assert set(rows) == {"colour (deviation ratio)", "profession (fidelity)"}
    colour = fair["colour"]
    assert rows["colour (deviation ratio)"][1:] == [
        fmt_ci(colour["agreement"], colour["agreement_ci"]), fmt_ci(colour["deviation_ratio_plain"],
                                                                    colour["deviation_ratio_plain_ci"]),
        fmt_ci(colour["deviation_ratio"], colour["deviation_ratio_ci"]),
        fmt_ci(colour["deviation_ratio_change"], colour["deviation_ratio_change_ci"])]
    assert rows["profession (fidelity)"][1] == fmt_ci(fair["profession"]["agreement"],
                                                      fair["profession"]["agreement_ci"])
    with pytest.raises(AppError, match="choose at least one group"):
        c.predict(groups=[], professions=["doctor"], images_per_prompt=1, steps=STEPS, with_safety=False,
                  api_name="/evaluate")


def test_server_binds_loopback_without_share_link(server):
    app = server["app"]
    assert app.server_name == "127.0.0.1"
    assert not app.share and app.share_url is None


def test_library_does_not_import_the_ui():
    """Only the command line (the layer above the page) may import it: `hsteer ui`, lazily."""
    src = Path(__file__).resolve().parents[1] / "src" / "hsteer"
    for path in src.rglob("*.py"):
        parts = path.relative_to(src).parts
        if parts[0] == "ui" or parts == ("cli", "ui.py"):
            continue
        text = path.read_text()
        assert "hsteer.ui" not in text and "import gradio" not in text, path


def test_nothing_reached_the_network():
    assert OUTSIDE_ATTEMPTS == []


def test_hsteer_ui_without_gradio_is_a_handled_error(monkeypatch):
    """`hsteer ui` where the ui extra is missing: one line, exit status 2; its help shows its real defaults."""
    import sys

    from click.testing import CliRunner

    from hsteer.cli.main import main

    monkeypatch.setitem(sys.modules, "hsteer.ui.app", None)  # `from hsteer.ui.app import launch` fails
    result = CliRunner().invoke(main, ["ui", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "Error: the web page needs the ui extra: pip install 'hsteer[ui]'" in result.output
    help_text = " ".join(CliRunner().invoke(main, ["ui", "--help"]).output.split())
    assert "[default: auto]" in help_text and "[default: cpu]" not in help_text
