"""The web page's test fixtures: `hsteer ui` in this process on a free port (the bundled model, banks learned
in one step), gradio_client sessions, and a guard that records any connection to another machine.

Each test module wraps `page_server` and `network_guard` in its own module fixtures (so each gets its own
server), and ends by asserting `OUTSIDE_ATTEMPTS` stayed empty.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

gradio_client = pytest.importorskip("gradio_client", reason="the ui extra is not installed: pip install 'hsteer[ui]'")
from gradio_client import Client  # noqa: E402
from PIL import Image  # noqa: E402

from hsteer import ConceptBank, TrainConfig, load_pipeline, train_concept  # noqa: E402

STEPS = 4  # denoising steps in these tests: the bundled model makes 32 px images; 4 steps keep them fast
NEUTRAL = "a photo of a figure"
OUTSIDE_ATTEMPTS: list[object] = []


def _is_loopback(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths
        return True
    host = str(address[0])
    return host in ("localhost", "::1", "0.0.0.0") or host.startswith("127.") or host.startswith("::ffff:127.")


def network_guard():
    """(A module's autouse fixture.) Record (and refuse) any connection this process tries to open to another machine."""
    original, original_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        if not _is_loopback(address):
            OUTSIDE_ATTEMPTS.append(address)
            raise OSError(f"test guard: no network ({address})")
        return original(self, address)

    def connect_ex(self, address):
        if not _is_loopback(address):
            OUTSIDE_ATTEMPTS.append(address)
            return 111
        return original_ex(self, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    yield
    socket.socket.connect, socket.socket.connect_ex = original, original_ex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def learn_bank(pipe, concepts, path: Path) -> Path:
    bank = ConceptBank()
    for name, group, target in concepts:
        # one step at a large learning rate: a crude concept, but one that visibly changes the images
        config = TrainConfig.for_objective("codsma", concept=name, group=group, neutral=NEUTRAL, target=target,
                                           iterations=1, batch_size=2, steps=STEPS, lr=1.0)
        bank.add(train_concept(pipe, config, progress=False).concept)
    bank.save(path)
    return path


def page_server(tmp_path_factory):
    """(A module's `server` fixture.) The page on the bundled model with a shapes bank, an --allow-dir folder
    holding a bank, a symlink out of it and a report, and a folder outside it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from hsteer.ui.app import launch

    root = tmp_path_factory.mktemp("ui")
    allowed, outside = root / "allowed", root / "outside"
    allowed.mkdir()
    outside.mkdir()
    pipe = load_pipeline(None)
    shapes = learn_bank(pipe, [("circle", "shape", "a photo of a circle figure"),
                               ("square", "shape", "a photo of a square figure")], root / "shapes.safetensors")
    learn_bank(pipe, [("red", "colour", "a photo of a red figure")], allowed / "colours.safetensors")
    learn_bank(pipe, [("blue", "colour", "a photo of a blue figure")], outside / "secret.safetensors")
    (allowed / "escape.safetensors").symlink_to(outside / "secret.safetensors")
    (allowed / "escape-dir").symlink_to(outside, target_is_directory=True)
    run = allowed / "runs" / "wino"
    (run / "plots").mkdir(parents=True)
    Image.new("RGB", (40, 30), "red").save(run / "plots" / "distribution-gender.png")
    Image.new("RGB", (40, 30), "blue").save(outside / "private.png")
    (run / "report.md").write_text("# hsteer evaluation: winobias\n\n| profession | DevRat |\n|---|---|\n| doctor | 0.12 |\n\n"
                                   "![gender](plots/distribution-gender.png)\n\n![leak](../../../outside/private.png)\n")
    (outside / "report.md").write_text("# secret report\n")
    app = launch(model=pipe, bank=[shapes], allowed_dirs=[allowed], port=free_port(), prevent_thread_lock=True,
                 quiet=True)
    yield {"app": app, "url": app.local_url, "pipe": pipe, "allowed": allowed, "outside": outside, "root": root}
    app.close()
    torch.set_num_threads(threads)


def client(server, tmp_path) -> Client:
    return Client(server["url"], verbose=False, analytics_enabled=False, download_files=str(tmp_path))


def gen(c: Client, policy="fair", groups=("shape",), seed=0, n=2, scales=(), prompt="a photo of a doctor",
        window=("as learned", 0.0, 1.0)):
    return c.predict(prompt=prompt, seed=seed, num_images=n, guidance=4.0, steps=STEPS, policy=policy,
                     fair_groups=list(groups), strength=1.0, step_window=window[0], window_start=window[1],
                     window_end=window[2], **{f"scale_{i + 1}": s for i, s in enumerate(scales)}, api_name="/generate")


#: The page starts on the demo's recipe (pairs and a step window); these tests learn from one neutral -> target
#: pair in every step unless they say otherwise.
LEARN_DEFAULTS = dict(neutral=NEUTRAL, negative="", objective="codsma", iterations=2, lr=0.05, batch_size=2,
                      denoising_steps=STEPS, target_guidance=4.0, training_seed=0, sdisc_images=4, sdisc_epochs=1,
                      pairs="", window="", stored_scale=1.0, lr_sam=1e-3, lam=0.5)


def learn(c: Client, name, group, target, **kwargs):
    return c.predict(name=name, group=group, target=target, **{**LEARN_DEFAULTS, **kwargs}, api_name="/learn")
