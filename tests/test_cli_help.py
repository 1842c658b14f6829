"""The command line's help and messages read as a person would write them: whole one-line summaries,
`bank show` with each concept's pairs, window, site and settings, `sites --list` marking the default,
range messages such as "must be at least 1"."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from hsteer import Concept, ConceptBank
from hsteer.cli.main import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), terminal_width=200)


def test_every_summary_is_whole():
    """No command's summary is cut with '...': each is its help's whole first sentence, in every group."""
    for args in ((), ("eval",), ("bank",), ("world",), ("q16",)):
        result = run(*args, "--help")
        assert result.exit_code == 0, result.output
        commands = result.output.split("Commands:")[1]
        assert "..." not in commands, commands
    listing = run("--help").output
    assert "attack    Attack a defended model on harm prompts; write DIR/summary.json (asr_before, asr_after, " \
           "prompts)." in listing
    assert "winobias  WinoBias professions x templates: deviation ratio per profession and mean, and WinoAlign." \
           in run("eval", "--help").output


def test_bank_show_lists_pairs_windows_site_and_settings(tmp_path):
    meta = {"neutral": "a photo of a figure", "pairs": [["a photo of a circle figure", "a photo of a red circle figure"]],
            "window": [0.0, 0.45], "site": "mid_block", "iterations": 150, "lr": 0.05, "batch_size": 8, "steps": 20,
            "seed": 0, "stored_scale": 0.8}
    bank = ConceptBank((4, 2, 2), "f" * 16, [Concept("red", "colour", "codsma", {"c": torch.zeros(4, 2, 2)}, meta)])
    bank.save(tmp_path / "bank.safetensors")
    result = run("bank", "show", str(tmp_path / "bank.safetensors"))
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert "pairs: a photo of a circle figure => a photo of a red circle figure" in lines, lines
    assert "window: steps 0%-45%; site: mid_block" in lines
    assert "settings: iterations=150 lr=0.05 batch_size=8 steps=20 seed=0 stored_scale=0.8" in lines


def test_sites_list_marks_the_default():
    result = run("sites", "--list", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "mid_block: (64, 4, 4)  (default)" in result.output.splitlines()
    assert [line for line in result.output.splitlines() if line.startswith("text:")] == ["text: (16, 128)"]


def test_range_messages_read_as_written(tmp_path):
    result = run("generate", "--prompt", "a photo of a doctor", "--num-images", "0", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "--num-images must be at least 1, got 0" in result.output, result.output
    assert "between" not in result.output and "1000000" not in result.output
