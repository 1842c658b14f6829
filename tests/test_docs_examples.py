"""Every example in README.md and docs/**/*.md runs.

The ```python and ```bash / ```shell blocks of each page are read in order. Blocks on the bundled model are
run, each page's blocks one after another in one temporary folder (a bank the page learns in one block is
there for the next): Python in a fresh interpreter, shell blocks whose commands are all `hsteer ...` with
this environment's `hsteer` first on PATH, offline. A block marked for a real model (an HTML comment
`<!-- real-model -->` on the line before it, or the info string ```python real-model) and a block that must
not run here (`<!-- no-run -->`: `make`, a server) are only checked: Python compiles and every name it
imports from hsteer exists; shell parses (`bash -n`) and every `hsteer` command and option it uses exists.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LANGUAGES = {"python": "python", "py": "python", "bash": "shell", "shell": "shell", "sh": "shell"}
MARKS = ("real-model", "no-run")
MARK_COMMENT = re.compile(r"^\s*<!--\s*(real-model|no-run)\b.*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w-]*)(.*)$")
#: Per page, the most seconds its runnable blocks may take together (they run in seconds on one core).
PAGE_TIMEOUT = 300


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str  # "python" or "shell"
    code: str
    mark: str | None  # "real-model", "no-run" or None (run it)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def read_blocks(page: Path) -> list[Block]:
    """The page's python and shell blocks, with the mark before each (fences may be indented in lists)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out, n = [], 0
    while n < len(lines):
        fence = FENCE.match(lines[n])
        if not fence:
            n += 1
            continue
        indent, ticks, lang, info = fence.groups()
        start, body = n, []
        n += 1
        while n < len(lines) and not lines[n].strip().startswith(ticks):
            body.append(lines[n][len(indent):] if lines[n].startswith(indent) else lines[n].lstrip())
            n += 1
        n += 1
        if lang.lower() not in LANGUAGES:
            continue
        before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        comment = MARK_COMMENT.match(before)
        mark = comment.group(1) if comment else next((m for m in MARKS if m in info.split()), None)
        out.append(Block(page, start + 1, LANGUAGES[lang.lower()], "\n".join(body) + "\n", mark))
    return out


BLOCKS = [block for page in PAGES for block in read_blocks(page)]


def shell_commands(code: str) -> list[str]:
    """The logical command lines of a shell block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(" ".join(shlex.quote(w) for w in words))
    return commands


def runs(block: Block) -> bool:
    """Run it here: not marked, and (shell) every command is `hsteer ...`."""
    if block.mark is not None:
        return False
    return block.language == "python" or all(c.split()[0] == "hsteer" for c in shell_commands(block.code))


def environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg", HOME=str(home),
               HF_HOME=os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface")),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
    return env


RUN_PAGES = sorted({b.page for b in BLOCKS if runs(b)})


@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(ROOT)) for p in RUN_PAGES])
def test_the_pages_bundled_model_examples_run(page, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = environment(tmp_path)
    for block in (b for b in BLOCKS if b.page == page and runs(b)):
        if block.language == "python":
            command = [sys.executable, "-c", block.code]
        else:
            command = ["bash", "-e", "-o", "pipefail", "-c", block.code]
        result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=PAGE_TIMEOUT)
        assert result.returncode == 0, (f"{block.where} failed (exit {result.returncode}):\n{block.code}\n"
                                        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")


CHECKED = [b for b in BLOCKS if not runs(b)]


def hsteer_names(tree: ast.AST) -> list[tuple[str, str]]:
    """(module, name) for every `from hsteer... import name`, `import hsteer.x` and `hsteer.NAME` use."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hsteer":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] == "hsteer"]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "hsteer":
            found.append(("hsteer", node.attr))
    return found


def check_python(block: Block) -> None:
    tree = ast.parse(compile(block.code, block.where, "exec", ast.PyCF_ONLY_AST))
    for module, name in hsteer_names(tree):
        imported = importlib.import_module(module)
        assert not name or hasattr(imported, name), f"{block.where}: {module} has no {name}"


def hsteer_argv(command: str) -> list[str] | None:
    """The arguments after `hsteer` of a command that runs hsteer (also `accelerate launch -m hsteer`)."""
    words = shlex.split(command)
    for n, word in enumerate(words):
        if word == "hsteer" and (n == 0 or words[n - 1] == "-m"):
            return words[n + 1:]
    return None


def check_hsteer_command(argv: list[str], where: str) -> None:
    """The subcommand exists and each of its `--options` is one of its options."""
    import click

    from hsteer.cli import main

    command, path = main, ["hsteer"]
    while isinstance(command, click.Group) and argv and argv[0] in command.commands:
        command = command.commands[argv[0]]
        path.append(argv.pop(0))
    assert not isinstance(command, click.Group) or not argv or argv[0].startswith("-"), \
        f"{where}: {' '.join(path)} has no command {argv[0]!r}"
    known = {"--help", "-h"}
    for param in command.params:
        known.update(getattr(param, "opts", []))
        known.update(getattr(param, "secondary_opts", []))
    for word in argv:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert option in known, f"{where}: {' '.join(path)} has no option {option}"


def check_shell(block: Block) -> None:
    parsed = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True)
    assert parsed.returncode == 0, f"{block.where}: not valid shell: {parsed.stderr}"
    for command in shell_commands(block.code):
        argv = hsteer_argv(command)
        if argv is not None:
            check_hsteer_command(argv, block.where)


@pytest.mark.parametrize("block", CHECKED, ids=[f"{b.where}-{b.mark or 'shell'}" for b in CHECKED])
def test_examples_not_run_here_are_valid_and_name_what_exists(block):
    (check_python if block.language == "python" else check_shell)(block)


def test_the_readme_and_docs_have_examples_of_each_kind():
    """The collector finds what the pages hold: the README runs its quickstart and marks its real models."""
    readme = [b for b in BLOCKS if b.page.name == "README.md"]
    assert any(runs(b) and b.language == "python" for b in readme)
    assert any(runs(b) and b.language == "shell" for b in readme)
    assert any(b.mark == "real-model" for b in readme)
    assert all(b.mark in (None, *MARKS) for b in BLOCKS)
