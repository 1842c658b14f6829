"""Hostile image files: decompression bombs, truncated and garbage PNGs, FIFOs, folders, and links out of a
run folder, read by `generate --init-image` and by scoring (`fileio.read_image`)."""

from __future__ import annotations

import io
import os
import struct
import zlib

import pytest
from hostile_helpers import assert_handled, cli
from PIL import Image

from hsteer.errors import HsteerError
from hsteer.fileio import read_image


def _png(width: int = 4, height: int = 4) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="png")
    data = bytearray(buffer.getvalue())
    if (width, height) != (4, 4):  # claim another size in IHDR (and fix its CRC): what a bomb does
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("content, fragment", [
    (_png(100_000, 100_000), "bomb"), (_png(9000, 9000), "bomb"), (_png()[:40], "cannot be read as an image"),
    (b"garbage" * 10, "cannot be read as an image"), (b"", "cannot be read as an image"),
])
def test_damaged_and_bomb_pngs_are_one_line_naming_the_file(tmp_path, content, fragment):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises(HsteerError, match=fragment) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_special_files_and_links(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "dir.png").mkdir()
    outside = tmp_path / "outside.png"
    outside.write_bytes(_png())
    os.symlink(outside, tmp_path / "link.png")
    with pytest.raises(HsteerError, match="FIFO"):
        read_image(tmp_path / "fifo.png")  # never opened: a FIFO would block
    with pytest.raises(HsteerError, match="folder"):
        read_image(tmp_path / "dir.png")
    with pytest.raises(HsteerError, match="symbolic link"):
        read_image(tmp_path / "link.png", no_links=True)
    assert read_image(tmp_path / "link.png").size == (4, 4)
    with pytest.raises(HsteerError, match="cannot read"):
        read_image(tmp_path / "missing.png")


def test_scoring_never_reads_an_image_through_a_link(tmp_path):
    from hsteer.evaluation.runs import IMAGES
    from hsteer.evaluation.tasks.base import ScoringRun

    secret = tmp_path / "secret.png"
    secret.write_bytes(_png())
    (tmp_path / "run" / IMAGES).mkdir(parents=True)
    os.symlink(secret, tmp_path / "run" / IMAGES / "00000.png")
    run = ScoringRun(tmp_path / "run", [{"file": "00000.png"}], {}, None)
    with pytest.raises(HsteerError, match="symbolic link"):
        run.open(run.rows)


@pytest.mark.parametrize("kind", ["fifo", "bomb"])
def test_generate_init_image_refused_before_the_model_loads(tmp_path, kind):
    path = tmp_path / "init.png"
    os.mkfifo(path) if kind == "fifo" else path.write_bytes(_png(100_000, 100_000))
    result = cli("generate", "--device", "cpu", "--prompt", "a square", "--init-image", path, "--out",
                 tmp_path / "out")
    assert_handled(result, "--init-image")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
