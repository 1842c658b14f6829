"""`hsteer ui` in a real browser after ordinary mistakes: the page recovers from each (test_ui_browser.py
has the set-up: Debian's chromium driven by Playwright, every request to another host blocked).

Each mistake leaves its message, as plain text, in its own tab's status line only; the next action
replaces it; no control is left behind an error badge; no pop-up stacks up.
"""

from __future__ import annotations

import re

import pytest
from test_ui_browser import (CHROMIUM, CHROMIUM_ARGS, STEPS, TIMEOUT_MS, generate, open_page, require_browser, serve,
                             set_number, shapes_bank)

ERROR_BADGE = "[...document.querySelectorAll('.error, .toast-body')].filter(e => e.offsetParent !== null).length"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from hsteer import load_pipeline

    pipe = load_pipeline(None)
    app = serve(shapes_bank(pipe, tmp_path_factory.mktemp("recovery") / "shapes.safetensors"), pipe)
    yield {"url": app.local_url, "pipe": pipe}
    app.close()
    torch.set_num_threads(threads)


@pytest.fixture()
def page(server, tmp_path):
    sync_playwright = require_browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = open_page(browser, server["url"])
            yield page
            page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
            assert page.external == [], f"the page asked other hosts for {page.external}"
            assert page.errors == [], page.errors
        finally:
            browser.close()


def wait_text(page, selector: str, text: str) -> str:
    """The element's text once it contains `text`."""
    page.wait_for_function("([s, t]) => document.querySelector(s).innerText.includes(t)", arg=[selector, text],
                           timeout=TIMEOUT_MS)
    return page.locator(selector).inner_text()


def no_error_badges(page) -> None:
    assert page.evaluate(ERROR_BADGE) == 0, page.locator("body").inner_text()


def learn_form(page, name: str, iterations: int, batch: int = 1) -> None:
    page.get_by_role("tab", name="Learn").click()
    page.locator("#c-name textarea, #c-name input").first.fill(name)
    set_number(page, "#c-iterations input", iterations)
    if not page.locator("#c-batch input").first.is_visible():
        page.get_by_text("Training settings").click()
    set_number(page, "#c-batch input", batch)
    set_number(page, "#c-steps input", 2)


def test_a_bad_learn_leaves_fair_generation_working(page, tmp_path):
    """A Learn refused for its concept name: the message reads as written (the underscore too), and the
    Generate tab's group picker still works: fair generation right after."""
    learn_form(page, "bad name!", iterations=2)
    page.locator("#learn-btn").click()
    status = wait_text(page, "#learn-status", "Error: ")
    assert "invalid concept name 'bad name!'" in status and "'_'" in status, status
    no_error_badges(page)
    page.get_by_role("tab", name="Generate").click()
    picker = page.locator("#fair-groups")
    assert "Error" not in picker.inner_text() and "shape" in picker.inner_text()
    picker.locator("input").first.click()  # the picker opens: no badge lies over it
    page.keyboard.press("Escape")
    generate(page, "a photo of a nurse", images=2, steps=STEPS)
    steered = page.locator("#steered-gallery .caption-label").all_inner_texts()
    assert sorted(steered) == ["seed 0: circle", "seed 1: square"] or sorted(steered) == [
        "seed 0: square", "seed 1: circle"], steered
    assert "fair: shape" in page.locator("#gen-status").inner_text()
    no_error_badges(page)


def test_each_action_replaces_the_last_message(page):
    """An empty prompt, then seed -5, then a good generation: each status line says this action's outcome
    only, and no pop-up is left behind."""
    page.locator("#prompt textarea").fill("  ")
    page.locator("#generate-btn").click()
    assert "Error: the prompt is empty" in wait_text(page, "#gen-status", "Error: ")
    page.locator("#prompt textarea").fill("a photo of a doctor")
    set_number(page, "#seed input", -5)
    page.locator("#generate-btn").click()
    status = wait_text(page, "#gen-status", "seed")
    assert "Error: the seed must be at least 0" in status and "prompt is empty" not in status, status
    no_error_badges(page)
    set_number(page, "#seed input", 3)
    generate(page, "a photo of a doctor", images=1, steps=STEPS)
    assert "Error" not in page.locator("#gen-status").inner_text()
    assert page.locator(".toast-body").count() == 0
    no_error_badges(page)


def test_a_corrupt_upload_names_the_chosen_file_and_leaves_the_box(page, tmp_path):
    junk = tmp_path / "my_bank.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all")
    page.get_by_role("tab", name="Bank").click()
    page.locator("input[type=file]").first.set_input_files(str(junk))
    status = wait_text(page, "#bank-status", "Error: ")
    assert "bank file my_bank.safetensors is corrupt or not a safetensors file" in status, status
    assert "/tmp" not in status and "gradio" not in status and "Warning" not in page.locator("body").inner_text()
    page.wait_for_function("!document.querySelector('#bank-upload').innerText.includes('my_bank')",
                           timeout=TIMEOUT_MS)  # the bad file is no longer in the box
    assert page.locator(".toast-body").count() == 0
    table = page.locator("#bank-table").inner_text()
    assert "circle" in table and "square" in table  # the session's bank is as it was
    no_error_badges(page)


def test_learn_streams_its_loss_curve_and_elapsed_time(page):
    """While a concept learns, the loss curve is drawn and the status line counts iterations and seconds."""
    learn_form(page, "slow_red", iterations=5000)
    page.locator("#learn-btn").click()
    first = wait_text(page, "#learn-status", "iteration")
    page.locator("#loss-plot canvas, #loss-plot svg").first.wait_for(timeout=TIMEOUT_MS)
    assert "slow_red" in first  # the underscore survives
    page.wait_for_timeout(4000)
    later = page.locator("#learn-status").inner_text()
    assert later.startswith("Learning colour/slow_red") or later.startswith("Learning shape/slow_red"), later
    seconds = int(re.search(r"; (\d+) s$", later.strip()).group(1))
    assert seconds >= 4, later
    assert page.locator("#loss-plot").is_visible()
    page.locator("#cancel-btn").click()
    assert "Cancelled" in wait_text(page, "#learn-status", "Cancelled")
    no_error_badges(page)
