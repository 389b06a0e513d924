"""The package's house plan, read from its source (no import runs): no import circles, no arrow
from a lower floor up to a higher one, no module over ~300 lines, no class defined inside a
function (Keras callbacks and tuners are module-level classes)."""

import ast

import pytest

from helpers.paths import WORKFLOW

PACKAGE = WORKFLOW / "afternoon"
MAX_LINES = 320  # "~300": a module past this is split

# Each wing, and what it may import from the package (besides the ground floor). A wing missing
# here is a new one: add it with its arrows.
GROUND = {"errors", "fileio", "layout", "registry", "runtime", "npz", "formats", "__init__"}
ARROWS = {
    "defaults": set(),
    "zoo": {"defaults"},
    "config": {"zoo", "defaults"},
    "checks": {"zoo", "defaults", "config", "training"},
    "verify": set(),
    "tracking": set(),
    "training": set(),  # reads only the job's spec: never the zoo or its defaults
    "distributed": {"training"},
    "evaluation": {"report", "training"},
    "search": {"zoo", "defaults", "config", "checks", "training", "distributed", "tracking"},
    "report": {"search", "tracking"},
    "stages": {"*"},
    "cli": {"layout"},
}


def modules() -> dict[str, ast.Module]:
    """Dotted name (without ``afternoon.``) -> parsed module, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = ast.parse(path.read_text(), filename=str(path))
    return found


def imports_of(tree: ast.Module) -> set[str]:
    """The package's modules ``tree`` imports (anywhere in it, lazily too), without the prefix."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "afternoon":
                names |= {alias.name for alias in node.names}
            elif node.module.startswith("afternoon."):
                base = node.module.removeprefix("afternoon.")
                names.add(base)
                names |= {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {
                a.name.removeprefix("afternoon.")
                for a in node.names
                if a.name.startswith("afternoon.")
            }
    return names


def wing(module: str) -> str:
    return module.split(".")[0]


def test_every_wing_imports_only_down():
    known = modules()
    wrong = []
    for name, tree in known.items():
        allowed = ARROWS.get(wing(name))
        if wing(name) in GROUND:
            allowed = set()
        assert allowed is not None, f"{name}: a wing the house plan does not list (ARROWS)"
        for target in imports_of(tree):
            other = wing(target)
            if other in (wing(name), *GROUND) or "*" in allowed or other in allowed:
                continue
            wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the house plan: " + ", ".join(sorted(wrong))


def test_no_import_circles():
    known = modules()
    graph = {
        name: {t for t in imports_of(tree) if t in known and t != name}
        for name, tree in known.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for target in graph[node]:
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_no_module_is_over_300_lines():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over ~300 lines (split them): {long}"


def test_no_class_is_defined_inside_a_function():
    inside = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                inside += [
                    f"{name}.{node.name}: class {child.name}"
                    for child in ast.walk(node)
                    if isinstance(child, ast.ClassDef)
                ]
    assert not inside, f"classes defined inside functions: {inside}"


def test_the_plan_sees_the_imports_it_forbids():
    """The checks above read imports as the package writes them (a lazy import too)."""
    tree = ast.parse("def f():\n    from afternoon.report.plots import save_png\n")
    assert imports_of(tree) == {"report.plots", "report.plots.save_png"}
    tree = ast.parse("from afternoon import tracking, distributed\n")
    assert imports_of(tree) == {"tracking", "distributed"}
