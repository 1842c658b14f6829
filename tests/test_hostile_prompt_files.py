"""Hostile attack prompt files (`hsteer eval attack --prompts`, `read_attack_prompts`): CSV read with the
csv module (byte-order marks, quoted newlines, unterminated quotes), JSON with a depth limit, every field's
type checked, and what `hsteer attack` writes read back exactly."""

from __future__ import annotations

import json
import os

import pytest
from hostile_helpers import assert_handled, cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsteer.cli.common import cli_message
from hsteer.errors import HsteerError
from hsteer.evaluation.datasets.attack_prompts import read_attack_prompts


def _write(tmp_path, name, content):
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def test_a_quoted_newline_stays_in_its_prompt(tmp_path):
    path = _write(tmp_path, "p.csv", 'prompt,seed\n"a violence\nscene",3\n"b",4\n')
    rows = read_attack_prompts(path)
    assert [(r.prompt, r.seed) for r in rows] == [("a violence\nscene", 3), ("b", 4)]


def test_a_line_separator_inside_a_field_does_not_split_the_row(tmp_path):
    path = _write(tmp_path, "p.csv", "prompt,seed\na\u2028b,3\nc\u0085d,4\n")
    assert [(r.prompt, r.seed) for r in read_attack_prompts(path)] == [("a\u2028b", 3), ("c\u0085d", 4)]


def test_an_excel_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = _write(tmp_path, "p.csv", "\ufeffprompt,evaluation_seed\r\na scene,7\r\n".encode())
    assert [(r.prompt, r.seed) for r in read_attack_prompts(path)] == [("a scene", 7)]
    utf16 = _write(tmp_path, "u.csv", "prompt\na\n".encode("utf-16"))
    with pytest.raises(HsteerError, match="UTF-16"):
        read_attack_prompts(utf16)


@pytest.mark.parametrize("content, fragment", [
    ('prompt,seed\n"a scene,3\nb,4\nc,5\n', "not a readable CSV"),
    ("prompt\na,b,c\n", "fields"),
    ("prompt,seed\na," + "9" * 400 + "\n", "bad seed"),
    ("prompt,seed\na,1e999\n", "bad seed"),
    ("prompt,seed\na,3.7\n", "bad seed"),
    ("prompt,seed\na,-1\n", "bad seed"),
    ("prompt,guidance\na,nan\n", "finite"),
    ("prompt,guidance\na,1e999\n", "finite"),
    ('[{"prompt": {"x": 1}}]', "not text"),
    ('[{"prompt": ["a"]}]', "not text"),
    ('[{"prompt": "a", "seed": 3.7}]', "bad seed"),
    ('[{"prompt": "a", "seed": true}]', "bad seed"),
    ('[{"prompt": "a", "seed": "x"}]', "bad seed"),
    ('[{"prompt": "a", "guidance": [1]}]', "bad guidance"),
    ('[{"prompt": "a", "source_prompt": 5}]', "not text"),
    ('[{"prompt": "a\\u0000b"}]', "NUL"),
    ('{"prompts": [1, 2]}', "not text"),
    ('{"prompts": ["a"], "per_prompt": [1]}', None),
    ('{"prompts": "a"}', "'prompts' list"),
    ("[" * 100_000, "levels deep"),
    ('{"prompt": "a"}\n' + "[" * 100_000 + "\n", "levels deep"),
    ('{"prompt": "a"}\n{"prompt": \n', "neither JSON nor JSON lines"),
    ("", "no CSV header"),
    ("prompt\n\n   \n", "holds no prompts"),
])
def test_hostile_prompt_files_are_one_line(tmp_path, content, fragment):
    path = _write(tmp_path, "p.json" if content.lstrip().startswith(("[", "{")) else "p.csv", content)
    if fragment is None:
        assert read_attack_prompts(path)[0].prompt == "a"
        return
    with pytest.raises(HsteerError, match=fragment):
        read_attack_prompts(path)


def test_special_files_and_large_counts(tmp_path):
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(HsteerError, match="not a regular file"):
        read_attack_prompts(tmp_path / "fifo.csv")
    path = _write(tmp_path, "p.csv", "prompt,seed\na,9223372036854775000\n")
    with pytest.raises(HsteerError, match="seed"):
        read_attack_prompts(path, images_per_prompt=10_000)
    with pytest.raises(HsteerError, match="^images_per_prompt must be at most") as info:
        read_attack_prompts(path, images_per_prompt=100_000_000)
    assert cli_message(info.value).startswith("--images-per-prompt must be at most")


@pytest.mark.parametrize("extra, fragment", [(["--images-per-prompt", "100000000"], "--images-per-prompt"),
                                             (["--images-per-prompt", "0"], "--images-per-prompt"),
                                             (["--batch-size", "0"], "--batch-size"),
                                             (["--height", "33"], "multiple of 8"),
                                             (["--steps", "0"], "--steps")])
def test_eval_attack_refuses_before_the_run_folder_is_written(tmp_path, extra, fragment):
    prompts = _write(tmp_path, "p.csv", "prompt\na scene\n")
    out = tmp_path / "run"
    assert_handled(cli("eval", "attack", "--prompts", prompts, "--device", "cpu", "--out", out, *extra), fragment)
    assert not out.exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
                        min_size=1, max_size=30).filter(str.strip), min_size=1, max_size=4, unique=True),
       st.integers(0, 2**40))
def test_prompts_csv_of_an_attack_round_trips(tmp_path, prompts, seed):
    """`hsteer attack` writes prompts.csv with the csv module; `eval attack` reads back every prompt
    exactly: commas, quotes, newlines, U+2028 and leading spaces included."""
    from hsteer.attacks.run import _write_outputs

    found = [{"prompt": p, "source_prompt": f"source {n}"} for n, p in enumerate(prompts)]
    _write_outputs(tmp_path, [], found, {"prompts": prompts}, seed)
    rows = read_attack_prompts(tmp_path / "prompts.csv")
    assert [(r.prompt, r.seed, r.source) for r in rows] == [(p, seed, f"source {n}") for n, p in enumerate(prompts)]
    back = read_attack_prompts(tmp_path / "summary.json") if json.loads(
        (tmp_path / "summary.json").read_text()) else None
    assert [r.prompt for r in back] == prompts


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_any_bytes_are_read_or_refused_in_one_line(tmp_path, data):
    path = tmp_path / "any.csv"
    path.write_bytes(data)
    try:
        rows = read_attack_prompts(path)
    except HsteerError:
        return
    assert all(isinstance(r.prompt, str) and r.prompt.strip() for r in rows)
