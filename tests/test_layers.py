"""The package's layers import one way: no cycles, nothing imports a layer above it, no overlong functions.

Every `import` counts, at module level or inside a function (a lazy import is still a dependency).
"""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "hsteer"

#: Lowest first. A module belongs to the first layer whose name is its name or a prefix of it.
#: The bundled world is split: its scene and defaults are low (the library reads the world's probes and the
#: bundled model's settings); the rest of `world` (its models' build, quality checks and own evaluations)
#: uses evaluation, generation and training, so it sits above them.
LAYERS = ("_version", "errors", "seeding", "checks", "fileio", "model", "steering", "objectives", "training",
          "outputs", "gate", "policies", "policy_forms", "generation", "world.scene", "world.defaults",
          "evaluation", "attacks", "world", "apps", "ui", "cli", "__main__")

MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500


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
            # `from hsteer import objectives` imports the module hsteer.objectives, not the facade's names
            targets = ([module] if module != "hsteer" else []) + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, set(modules)) for m, p in modules.items()}


def _layer(module: str) -> int:
    if module == "hsteer":  # the public facade sits above every layer: it imports any, and none imports it
        return len(LAYERS)
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


def test_nothing_inside_the_package_imports_the_facade():
    """`from hsteer import X` (X not a module) or `import hsteer` inside the package: modules import the module
    that defines a name, so the facade can change without moving anything inside."""
    assert [m for m, targets in _graph().items() if "hsteer" in targets] == []


@pytest.mark.parametrize("source, imports_facade", [("from hsteer import ConceptBank", True), ("import hsteer", True),
                                                    ("from hsteer import objectives", False),
                                                    ("import hsteer.world as world", False)])
def test_the_facade_finder_finds_facade_imports(tmp_path, source, imports_facade):
    path = tmp_path / "m.py"
    path.write_text(source + "\n", encoding="utf-8")
    known = set(_modules())
    assert ("hsteer" in _imports("hsteer.ui.m", path, known)) == imports_facade


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


def test_modules_stay_short():
    """A module a reader can hold: at most MAX_MODULE_LINES lines (split one by what its parts are for)."""
    long = [f"{path.relative_to(PACKAGE)} ({n} lines)" for path in sorted(PACKAGE.rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert long == [], long


def _method_names() -> set[str]:
    from hsteer.training import METHODS

    return set(METHODS.names())


def _name_uses(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of each method name used to choose: compared (`== "sdisc"`, `in ("codsma", ...)`), a
    `case`, a dict key or subscript, or an element of a tuple, list or set literal (a hard-coded choice list)."""
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Dict):
            operands = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Subscript):
            operands = [node.slice]
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            operands = list(node.elts)
        elif isinstance(node, ast.MatchValue):
            operands = [node.value]
        else:
            continue
        for operand in operands:
            items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            found.update({(item.lineno, item.col_offset): item.value for item in items
                          if isinstance(item, ast.Constant) and item.value in names})
    return [(line, name) for (line, _), name in sorted(found.items())]


@pytest.mark.parametrize("source, hits", [("x == 'sdisc'", 1), ("x in ('codsma', 'respodiff')", 2),
                                          ("d = {'sdisc': 1}", 1), ("d['codsma']", 1), ("choices = ['sdisc']", 1),
                                          ("Concept(n, g, 'codsma')", 0), ("x == 'other'", 0)])
def test_the_method_name_finder_finds_choices(source, hits):
    assert len(_name_uses(source, {"codsma", "respodiff", "sdisc"})) == hits


def test_no_method_name_is_compared_outside_its_own_folder():
    """A method is looked up in the registry (`hsteer.training.registry.METHODS`), never chosen by its name,
    except inside its own folder `training/methods/<name>/`."""
    names, offenders = _method_names(), []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        own = parts[2] if parts[:2] == ("training", "methods") and len(parts) > 3 else None
        offenders += [f"{path.relative_to(PACKAGE)}:{line}: {name!r}"
                      for line, name in _name_uses(path.read_text(encoding="utf-8"), names) if name != own]
    assert offenders == [], offenders


def _family_keys() -> set[str]:
    from hsteer.model.families import FAMILY_OF_KEY

    return set(FAMILY_OF_KEY)


def _family_comparisons(source: str, keys: set[str]) -> list[tuple[int, str]]:
    """(line, key) of each comparison with a family key (`family == "flux"`, `family_of(p) != "unet"`,
    `family in ("sd3", "flux")`): a family is asked for what it does (`hsteer.model.families`), never
    compared by name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        for operand in (node.left, *node.comparators):
            items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            found += [(item.lineno, item.value) for item in items
                      if isinstance(item, ast.Constant) and item.value in keys]
    return sorted(found)


#: The one module that may name a family by its key: it defines them.
FAMILY_COMPARISON_ALLOWED = {"model/families.py"}


@pytest.mark.parametrize("source, hits", [("family == 'flux'", 1), ("family_of(p) != 'unet'", 1),
                                          ("f in ('sd3', 'sana')", 2), ("FAMILY_OF_KEY['unet']", 0),
                                          ("x == 'other'", 0)])
def test_the_family_comparison_finder_finds_comparisons(source, hits):
    assert len(_family_comparisons(source, {"unet", "sd3", "flux", "sana"})) == hits


def test_no_family_name_is_compared_outside_the_families_module():
    keys, offenders = _family_keys(), []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name not in FAMILY_COMPARISON_ALLOWED:
            offenders += [f"{name}:{line}: {key!r}" for line, key in _family_comparisons(path.read_text("utf-8"), keys)]
    assert offenders == [], offenders


def _registered_names() -> dict[str, tuple[set[str], str]]:
    """Attack and policy names -> (names, the module that registers them)."""
    from hsteer.attacks.registry import ATTACKS
    from hsteer.policies import POLICIES

    return {"attack": (set(ATTACKS), "attacks/registry.py"), "policy": (set(POLICIES), "policies.py")}


def test_no_attack_or_policy_name_is_compared_outside_its_registry():
    """An attack or a policy is looked up in its registry (`ATTACKS`, `POLICIES`) or asked what it does, never
    compared by name elsewhere (`kind == "whitebox"`, `name in ("plain", "sld")`)."""
    offenders = []
    for what, (names, home) in _registered_names().items():
        for path in sorted(PACKAGE.rglob("*.py")):
            name = path.relative_to(PACKAGE).as_posix()
            if name != home:
                offenders += [f"{name}:{line}: {what} {key!r}"
                              for line, key in _family_comparisons(path.read_text("utf-8"), names)]
    assert offenders == [], offenders


#: A literal that shows a whole command (`hsteer train --bank B`, `pip install`) or a hint marked as the
#: command line's (`(CLI: --bank)`, beside the Python setting) speaks to the CLI user on purpose.
COMMAND_LINE = re.compile(r"CLI:|hsteer [a-z]+ |pip install")


def _option_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string literal that names a command-line option (`"--out"`, `"choose --seed"`),
    docstrings and whole commands left out (they may say how the command line spells a setting)."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return sorted((node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                  and re.search(r"(?<![\w-])--[a-z]", node.value) and not COMMAND_LINE.search(node.value))


#: Library text that gives a command to run rather than a setting to change: scoring a finished run again
#: is a different command (`hsteer score`, `hsteer eval i2p`) from the one that failed; a Hub bank's model
#: card shows the command line that uses it.
OPTION_LITERALS_ALLOWED = {"evaluation/harm.py", "steering/hub.py"}


@pytest.mark.parametrize("source, hits", [('x = "--out"', 1), ('f"choose another --seed"', 1),
                                          ('"""Use `--out`."""', 0), ('x = "a-b--c"', 0), ('x = "out_dir"', 0),
                                          ('"(CLI: --bank)"', 0), ('"run `hsteer train --bank B`"', 0)])
def test_the_option_finder_finds_options(source, hits):
    assert len(_option_literals(source)) == hits


def test_no_option_is_named_below_the_cli():
    """The library names its fields (`HsteerError.fields`); only `cli/` and `ui/` speak in options."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name.split("/")[0] not in ("cli", "ui") and name not in OPTION_LITERALS_ALLOWED:
            offenders += [f"{name}:{line}: {text[:60]!r}" for line, text in _option_literals(path.read_text("utf-8"))]
    assert offenders == [], offenders
