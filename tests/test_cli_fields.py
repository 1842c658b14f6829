"""Errors name the field at fault as Python calls it; the command line shows the option that sets it."""

import ast
import re
from pathlib import Path

import pytest

from hsteer.cli.common import cli_message
from hsteer.errors import HsteerError
from hsteer.outputs import OutputFolder, check_generate_settings
from hsteer.policies import FairPolicy

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "hsteer"


def test_a_field_reads_as_python_in_the_library_and_as_its_option_on_the_command_line(tmp_path):
    with pytest.raises(HsteerError) as info:
        FairPolicy(("gender",), {"race": 2.0})
    assert info.value.fields == ("scales",) and str(info.value).startswith("scales names group 'race'")
    assert cli_message(info.value).startswith("--group-scale names group 'race'")
    with pytest.raises(HsteerError) as info:
        check_generate_settings(["a cat"], 0, 0, 1, 1.0, 1, None, None)
    assert cli_message(info.value).startswith("--num-images must be at least 1")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(HsteerError) as info:
        OutputFolder(tmp_path)
    assert "pass overwrite=True to replace its images, resume=True to finish" in str(info.value)
    assert "pass --overwrite to replace its images, --resume to finish" in cli_message(info.value)
    assert cli_message(HsteerError("ratios are fine")) == "ratios are fine"  # no field: as written


def test_library_calls_show_python_names_and_the_command_line_their_options(tmp_path):
    from hsteer.evaluation.runs import check_run_layout
    from hsteer.evaluation.datasets.winobias import naming_words
    from hsteer.generation.guard_fit import check_fit_prompts
    from hsteer.training import RespoDiffConfig

    settings = dict(concept="w", group="g", neutral="a person", target="a woman")
    with pytest.raises(HsteerError) as info:
        RespoDiffConfig(iterations=0, **settings).validate()
    assert str(info.value) == "iterations must be at least 1, got 0"
    assert cli_message(info.value) == "--iterations must be at least 1, got 0"
    with pytest.raises(HsteerError) as info:  # a method's own setting: its option in hsteer train
        RespoDiffConfig(lr_sam=0.0, **settings).validate()
    assert (str(info.value), cli_message(info.value)) == ("lr_sam must be greater than 0, got 0.0",
                                                          "--lr-sam must be greater than 0, got 0.0")
    with pytest.raises(HsteerError) as info:
        check_fit_prompts([""], ["a scene"])
    assert (str(info.value), cli_message(info.value)) == ("a harmful prompt (harmful) is empty",
                                                          "a harmful prompt (--harmful) is empty")
    with pytest.raises(HsteerError) as info:  # settings given a value: the option and its value
        naming_words({"pet": ("a cat", "a dog")})
    assert "templates='explicit' needs" in str(info.value) and "or classifier='world'" in str(info.value)
    assert cli_message(info.value).startswith("--templates explicit needs")
    assert cli_message(info.value).endswith("use --attributes gender or race (their preset texts), or --classifier world")
    (tmp_path / "images").write_text("not a folder")
    with pytest.raises(HsteerError) as info:
        check_run_layout(tmp_path)
    assert str(info.value).endswith("move it away, or use another run_dir; nothing was changed")
    assert cli_message(info.value).endswith("move it away, or use another --out; nothing was changed")


#: The bundled world's models' build and quality bar (`hsteer world train | train-dit | quality`).
WORLD_BUILD = {"world/data.py", "world/pipeline.py", "world/training_loop.py", "world/build_unet.py",
               "world/build_dit.py", "world/quality.py"}
#: The library below the command line: cli/ and ui/ are the command line and the web page; apps/ (the
#: bundled apps), the world's build (`WORLD_BUILD`) and attacks/ are not scanned here; evaluation/settle.py
#: is converted on its own.
LIBRARY = sorted(path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).parts[0] not in (
    "cli", "ui", "apps", "attacks") and path.relative_to(PACKAGE).as_posix() not in WORLD_BUILD | {
    "evaluation/settle.py"})
#: Advice for the command line beside the Python way: a `CLI: ...` note, or a whole `hsteer ...` command.
CLI_ADVICE = re.compile(r"CLI: [^)]*|`hsteer [^`]*`")
#: The model card shows the Python use and the command line's side by side (its ```bash block).
ALLOWED = {"steering/hub.py": ("hsteer generate --model {} --bank {} --fair {} \\",
                             '    --prompt "a photo of a doctor" --num-images 8 --out out/fair')}


def _texts(tree: ast.AST):
    """Every string a module writes (an f-string with `{}` for its values), docstrings left out: they
    document the code, and may say how the command line sets what they describe."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    parts = {id(value) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for value in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs | parts:
            yield node.value


def test_the_scan_covers_the_library():
    names = {path.relative_to(PACKAGE).as_posix() for path in LIBRARY}
    assert {"outputs.py", "policies.py", "checks.py", "training/run.py", "training/methods/respodiff/config.py",
            "evaluation/harm.py", "model/loading.py", "steering/hub.py", "generation/guard_fit.py",
            "world/evaluate.py", "world/gate_eval.py", "world/held_out.py", "world/scene.py"} <= names
    assert not names & {"evaluation/settle.py", "cli/common.py", "ui/app.py", *WORLD_BUILD}
    assert "--out" in "".join(_texts(ast.parse('x = f"use another --out {y}"')))  # f-strings are read
    assert list(_texts(ast.parse('"""--doc"""\ndef f():\n    """--doc"""'))) == []  # docstrings are not


@pytest.mark.parametrize("path", LIBRARY, ids=lambda path: path.relative_to(PACKAGE).as_posix())
def test_the_library_writes_no_option_name(path):
    allowed = ALLOWED.get(path.relative_to(PACKAGE).as_posix(), ())
    texts = [CLI_ADVICE.sub("", t) for t in _texts(ast.parse(path.read_text(encoding="utf-8"))) if t not in allowed]
    assert [t for t in texts if re.search(r"(?<![\w-])--(?:[a-z]|\{)", t)] == []
