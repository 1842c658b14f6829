"""The package's layers import one way: no cycles, nothing imports a layer above it, no overlong functions.

Every `import` counts, at module level or inside a function (a lazy import is still a dependency).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "hsteer"

#: Lowest first. A module belongs to the first layer whose name is its name or a prefix of it.
LAYERS = ("_version", "errors", "seeding", "checks", "fileio", "model", "hspace", "objectives", "training",
          "outputs", "gate", "policies", "generation", "world",
          "evaluation", "attacks", "apps", "ui", "cli", "__main__")

MAX_FUNCTION_LINES = 100


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join(base[: len(base) - node.level + 1] + ([module] if module else []))
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target not in (name, "hsteer"):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    # the package root is the public facade: it may import anything, and nothing may import it
    return {m: _imports(m, p, set(modules)) for m, p in modules.items() if m != "hsteer"}


def _layer(module: str) -> int:
    short = module.removeprefix("hsteer.")
    for n, layer in enumerate(LAYERS):
        if short == layer or short.startswith(layer + "."):
            return n
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    for module in _graph():
        _layer(module)


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_nothing_imports_a_higher_layer():
    upward = [(m, t) for m, targets in _graph().items() for t in targets if _layer(t) > _layer(m)]
    assert upward == [], upward


def test_the_library_never_imports_the_cli():
    offenders = [m for m, targets in _graph().items()
                 if _layer(m) < _layer("hsteer.cli") and any(t.startswith("hsteer.cli") for t in targets)]
    assert offenders == []


@pytest.mark.parametrize("fake, expected", [({"a": {"b"}, "b": {"a"}}, [["a", "b"]]), ({"a": {"b"}, "b": set()}, [])])
def test_the_cycle_finder_finds_cycles(fake, expected):
    assert _cycles(fake) == expected


def test_functions_stay_short():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({lines} lines)")
    assert long == [], long
