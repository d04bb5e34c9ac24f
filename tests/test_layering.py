"""Imports run one way: base modules -> model/data -> train/eval -> cli (lazy imports inside functions too),
and no module reaches itself through its imports."""
import ast
from pathlib import Path

import medmoe

PACKAGE = Path(medmoe.__file__).parent
# layer of each top-level module or subpackage; a module may import its own layer and those below
LAYERS = {"errors": 0, "files": 0, "runs": 0, "seeding": 0, "options": 0, "config": 0, "precision": 0, "registry": 0,
          "model": 1, "data": 1, "losses": 1, "distributed": 1, "hub": 1,
          "train": 2, "eval": 2, "classify": 2, "export": 2,
          "cli": 3, "__main__": 3, "app": 3, "demo": 3}


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of the medmoe modules that ``source``, a module of ``package``, imports anywhere."""
    package = package.split(".")
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names |= {module} if node.module else {f"{module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("medmoe.")}


def layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def test_every_module_has_a_layer():
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert tops <= set(LAYERS), f"give these a layer: {sorted(tops - set(LAYERS))}"


def import_graph() -> dict[str, set[str]]:
    """Every module of the package (but its root __init__, whose lazy names are strings) -> the medmoe
    modules it imports."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE) == Path("__init__.py"):
            continue
        own = ".".join(["medmoe", *path.relative_to(PACKAGE).with_suffix("").parts])
        graph[own] = imported_modules(path.read_text(), own.rsplit(".", 1)[0])
    return graph


def test_imports_never_go_up_a_layer():
    upward = [f"{own} imports {m}" for own, imports in import_graph().items() for m in imports if layer(m) > layer(own)]
    assert not upward, "\n".join(upward)


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (a name imported as ``package.name`` counts as the module or package)."""
    def node(name):
        return name if name in graph else next((n for n in (f"{name}.__init__",) if n in graph), None)

    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(module):
        state[module] = 1
        path.append(module)
        for target in sorted(filter(None, map(node, graph[module]))):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = 2
        path.pop()
        return None

    return next((found for m in sorted(graph) if m not in state and (found := visit(m))), None)


def test_the_import_graph_has_no_circle():
    found = cycle(import_graph())
    assert found is None, " -> ".join(found)
    assert cycle({"medmoe.a": {"medmoe.b"}, "medmoe.b": {"medmoe.a"}}) == ["medmoe.a", "medmoe.b", "medmoe.a"]


def test_the_checker_sees_relative_and_lazy_imports():
    source = "import torch\n\ndef f():\n    from ..train.checkpoint import save_checkpoint\n    from . import text\n"
    imports = imported_modules(source, "medmoe.model")
    assert imports == {"medmoe.train.checkpoint", "medmoe.model.text"}
    assert any(layer(m) > layer("medmoe.model.medmoe") for m in imports)
