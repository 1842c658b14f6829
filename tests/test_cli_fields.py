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


@pytest.mark.parametrize("module", ["outputs.py", "policies.py"])
def test_the_library_writes_no_option_name(module):
    texts = [node.value for node in ast.walk(ast.parse((PACKAGE / module).read_text(encoding="utf-8")))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    assert [t for t in texts if re.search(r"(?<![\w-])--[a-z]", t)] == []
