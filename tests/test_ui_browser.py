"""`hsteer ui` in a real browser: Playwright drives Debian's chromium against the page served in this process.

Playwright never downloads a browser: it launches the system chromium (`apt-get install chromium`; CI's
.ci/run installs it). Without chromium or Playwright this test FAILS with the reason; it never skips.
Every request the page makes to another host is blocked and recorded, and the test asserts there was none.

The README's screenshot is made by the same code, once, with properly learned concepts:

    python tests/test_ui_browser.py --bank world.safetensors --out docs/ui.png
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

CHROMIUM = os.environ.get("HSTEER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STEPS = 4
TIMEOUT_MS = 180_000  # an upper bound for a busy machine; on an idle one each step takes seconds


def require_browser():
    """Playwright's module and the system chromium, or a loud failure that says what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"Playwright is not installed ({exc}); `make install` installs it (pip install playwright)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        found = shutil.which("chromium")
        pytest.fail(f"no chromium at {CHROMIUM} (on PATH: {found}); install Debian's: apt-get install -y chromium "
                    "(.ci/run does it), or point HSTEER_CHROMIUM at a chromium binary")
    return sync_playwright


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shapes_bank(pipe, path: Path) -> Path:
    """circle and square, one training step each at a large learning rate: crude, fast, visibly steering."""
    from hsteer import ConceptBank, TrainConfig, train_concept

    bank = ConceptBank()
    for name in ("circle", "square"):
        config = TrainConfig.for_objective("codsma", concept=name, group="shape", neutral="a photo of a figure",
                                           target=f"a photo of a {name} figure", iterations=1, batch_size=2,
                                           steps=STEPS, lr=1.0)
        bank.add(train_concept(pipe, config, progress=False).concept)
    bank.save(path)
    return path


def serve(bank: Path | None = None, pipe=None):
    from hsteer.ui.app import launch

    return launch(model=pipe, bank=[bank] if bank else None, port=free_port(), prevent_thread_lock=True, quiet=True)


def open_page(browser, url: str, width: int = 1280, height: int = 900, group: str | None = "shape"):
    """A page on `url` whose requests to any other host are blocked and recorded in `page.external`; once
    open, the page shows `group` of the session's starting bank (None: the page was started without one)."""
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    page.external, page.errors = [], []
    origin = url.rstrip("/")

    def route(r):
        if r.request.url.startswith(origin) or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            page.external.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("#generate-btn", timeout=TIMEOUT_MS)
    if group is not None:  # the session's starting bank is shown once the page's load event has run
        page.locator("#fair-groups").get_by_text(group).first.wait_for(timeout=TIMEOUT_MS)
    return page


def set_number(page, selector: str, value) -> None:
    box = page.locator(selector).first
    box.fill(str(value))
    box.press("Tab")


def generate(page, prompt: str, images: int, steps: int) -> None:
    page.get_by_role("tab", name="Generate").click()
    page.locator("#prompt textarea").fill(prompt)
    set_number(page, "#num-images input[type=number]", images)
    set_number(page, "#steps input[type=number]", steps)
    page.locator("#generate-btn").click()
    try:
        page.wait_for_function("document.querySelector('#gen-status').innerText.includes('image(s) per column')",
                               timeout=TIMEOUT_MS)
        page.wait_for_function("[...document.querySelectorAll('#steered-gallery img, #plain-gallery img')]"
                               ".every(img => img.complete && img.naturalWidth > 0)", timeout=TIMEOUT_MS)
    except Exception:
        page.screenshot(path=str(Path(os.environ.get("TMPDIR", "/tmp")) / "hsteer-ui-generate-failed.png"),
                        full_page=True)
        raise


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from hsteer import load_pipeline

    pipe = load_pipeline(None)
    app = serve(shapes_bank(pipe, tmp_path_factory.mktemp("browser") / "shapes.safetensors"), pipe)
    yield {"url": app.local_url, "pipe": pipe}
    app.close()
    torch.set_num_threads(threads)


def test_page_generates_side_by_side_and_learns(server, tmp_path):
    sync_playwright = require_browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = open_page(browser, server["url"])

            # Generate: the plain and the steered images of the same seeds, captioned with their concepts
            generate(page, "a photo of a nurse", images=2, steps=STEPS)
            plain = page.locator("#plain-gallery .caption-label").all_inner_texts()
            steered = page.locator("#steered-gallery .caption-label").all_inner_texts()
            assert plain == ["seed 0: plain", "seed 1: plain"]
            assert steered in (["seed 0: circle", "seed 1: square"], ["seed 0: square", "seed 1: circle"])
            assert page.locator("#plain-gallery img").count() == 2
            assert page.locator("#steered-gallery img").count() == 2
            status = page.locator("#gen-status").inner_text()
            assert "a photo of a nurse" in status and "fair: shape" in status and f"{STEPS} steps" in status
            with page.expect_download(timeout=TIMEOUT_MS) as download:  # the zip of PNGs and manifests
                page.locator("#gen-file a[data-testid=download-link]").click()
            assert download.value.suggested_filename == "hsteer-a-photo-of-a-nurse-seed0.zip"
            with zipfile.ZipFile(download.value.path()) as zf:
                rows = [json.loads(line) for line in zf.read("steered/manifest.jsonl").decode().splitlines()]
            assert [f"seed {r['seed']}: {r['concepts'][0]['name']}" for r in rows] == steered
            page.screenshot(path=str(tmp_path / "generate.png"), full_page=True)

            # Learn: the demo's recipe for red (the preset fills prompts, pairs and step window), cut to a tiny
            # run; its loss curve; it lands in the session's bank
            page.get_by_role("tab", name="Learn").click()
            page.locator("#c-preset input").first.click()
            page.get_by_role("option", name="red (colour)").click()
            page.wait_for_function("document.querySelector('#c-name textarea, #c-name input').value === 'red'",
                                   timeout=TIMEOUT_MS)
            pairs = page.locator("#c-pairs textarea").input_value()
            assert pairs.splitlines() == ["a photo of a circle figure => a photo of a red circle figure",
                                          "a photo of a square figure => a photo of a red square figure"]
            assert page.locator("#c-window input, #c-window textarea").first.input_value() == "0,0.45"
            set_number(page, "#c-iterations input", 2)
            page.get_by_text("Training settings").click()
            set_number(page, "#c-batch input", 2)
            set_number(page, "#c-steps input", STEPS)
            page.locator("#learn-btn").click()
            page.wait_for_function("document.querySelector('#learn-status').innerText.includes('Learned ')",
                                   timeout=TIMEOUT_MS)
            learned = page.locator("#learn-status").inner_text()
            assert "Learned colour/red (codsma)" in learned and "(3 concept(s))" in learned
            page.locator("#loss-plot canvas, #loss-plot svg").first.wait_for(timeout=TIMEOUT_MS)  # the loss curve
            page.screenshot(path=str(tmp_path / "learn.png"), full_page=True)

            # Bank: the new concept is listed with its settings; Generate can now be fair over colour too
            page.get_by_role("tab", name="Bank").click()
            table = page.locator("#bank-table").inner_text()
            for word in ("circle", "square", "red", "colour", "a photo of a red figure",
                         "a photo of a square figure => a photo of a red square figure", "0%–45%"):
                assert word in table, word
            page.screenshot(path=str(tmp_path / "bank.png"), full_page=True)
            page.get_by_role("tab", name="Generate").click()
            page.locator("#fair-groups").get_by_text("colour").first.wait_for(timeout=TIMEOUT_MS)

            assert page.external == [], f"the page asked other hosts for {page.external}"
            assert page.errors == [], page.errors
        finally:
            browser.close()
    for name in ("generate.png", "learn.png", "bank.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_page_without_a_bank_generates_plain_images(server, tmp_path):
    """`hsteer ui` with no bank, as the README's first UI line starts it: Generate with the policy the page
    shows (plain) gives plain images; a policy that needs concepts says why in the page, not a bare "Error"."""
    sync_playwright = require_browser()
    app = serve(None, server["pipe"])
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = open_page(browser, app.local_url, group=None)
                checked = "[...document.querySelectorAll('#policy input:checked')].map(i => i.value)"
                assert page.evaluate(checked) == ["plain"]
                generate(page, "a photo of a doctor", images=2, steps=STEPS)
                assert page.evaluate(checked) == ["plain"]
                plain = page.locator("#plain-gallery .caption-label").all_inner_texts()
                assert plain == ["seed 0: plain", "seed 1: plain"]
                assert page.locator("#plain-gallery img").count() == 2
                assert page.locator("#steered-gallery img").count() == 0
                status = page.locator("#gen-status").inner_text()
                assert "plain only" in status and "Error" not in status
                for gallery in ("#plain-gallery", "#steered-gallery", "#gen-file"):
                    assert "Error" not in page.locator(gallery).inner_text(), gallery
                page.screenshot(path=str(tmp_path / "plain.png"), full_page=True)

                # fair needs concepts: the reason stays in the status line; the galleries show no bare "Error"
                page.get_by_label("fair", exact=True).check()
                page.locator("#generate-btn").click()
                page.wait_for_function("document.querySelector('#gen-status').innerText.includes('Error: ')",
                                       timeout=TIMEOUT_MS)
                status = page.locator("#gen-status").inner_text()
                assert "the fair policy needs concepts, and this session's bank is empty" in status, status
                page.wait_for_function("!document.querySelector('#plain-gallery').innerText.includes('Error')",
                                       timeout=TIMEOUT_MS)
                for gallery in ("#plain-gallery", "#steered-gallery", "#gen-file"):
                    assert "Error" not in page.locator(gallery).inner_text(), gallery
                page.screenshot(path=str(tmp_path / "refused.png"), full_page=True)
                assert page.external == [], f"the page asked other hosts for {page.external}"
                assert page.errors == [], page.errors
            finally:
                browser.close()
    finally:
        app.close()


def docs_screenshot(bank: Path, out: Path, prompt: str = "a photo of a nurse", images: int = 6) -> Path:
    """The README's screenshot: the Generate tab, 1000 px wide, with the concepts of `bank`."""
    from playwright.sync_api import sync_playwright

    app = serve(bank)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = open_page(browser, app.local_url, width=1000, height=820)
            page.locator("#fair-groups").get_by_text("colour").first.wait_for(timeout=TIMEOUT_MS)
            generate(page, prompt, images=images, steps=20)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.evaluate("window.scrollTo(0, 0)")
            page.mouse.move(0, 0)
            page.screenshot(path=str(out))
            assert page.external == [], page.external
            browser.close()
    finally:
        app.close()
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Make the README's screenshot of `hsteer ui`.")
    parser.add_argument("--bank", required=True, type=Path, help="a bank with shape and colour concepts")
    parser.add_argument("--out", default=Path("docs/ui.png"), type=Path)
    args = parser.parse_args()
    print(docs_screenshot(args.bank, args.out))
