"""Every public function and method of the library says what it does: a docstring on each.

Public: a name without a leading underscore, at module level or in a public class (nested public classes
too), in every module of `src/hsteer` outside `cli/` and `ui/` (their commands and pages are documented by
their help texts). Dunder methods are private by this rule; properties, overloads and protocol methods
are not exempt: mkdocstrings renders them, and a reader meets them there.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "hsteer"
#: Folders whose functions are documented elsewhere (click help texts, the web page's own labels).
OUTSIDE = ("cli", "ui")


def _undocumented(body: list[ast.stmt], prefix: str) -> list[str]:
    found = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not node.name.startswith("_") and ast.get_docstring(node) is None:
                found.append(f"{prefix}{node.name} (line {node.lineno})")
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            found += _undocumented(node.body, f"{prefix}{node.name}.")
    return found


def _modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in OUTSIDE]


def test_the_walk_sees_the_library():
    names = {p.relative_to(PACKAGE).as_posix() for p in _modules()}
    assert {"policies.py", "generation/engine.py", "steering/bank.py"} <= names
    assert not any(n.startswith(OUTSIDE) for n in names)


def test_the_finder_finds_a_missing_docstring():
    tree = ast.parse('def f():\n    """Doc."""\n\n\ndef g(): ...\n\n\nclass C:\n    def h(self):\n        pass\n\n'
                     '    def _private(self):\n        pass\n\n    def __len__(self):\n        return 0\n')
    assert _undocumented(tree.body, "") == ["g (line 5)", "C.h (line 9)"]


def test_every_public_function_has_a_docstring():
    missing = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        missing += [f"{path.relative_to(PACKAGE)}:{name}" for name in _undocumented(tree.body, "")]
    assert missing == [], f"{len(missing)} public functions or methods without a docstring: {missing}"
