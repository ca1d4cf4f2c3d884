"""The package's shape: no import cycle, every module says what it is for and stays small.

Read from the source with ``ast`` (nothing is imported): module-level imports form the
graph, imports inside functions (deferred on purpose, e.g. Ray and torch) and under
``TYPE_CHECKING`` do not, since neither runs when a module is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "arc_ray"
MAX_LINES = 600  # "a few hundred": past this a module holds two ideas


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def top_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, path.name == "__init__.py", node)
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)

    visit(tree.body)
    out = set()
    for target in found:
        # importing a.b.c runs a, a.b and a.b.c
        parts = target.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in out if m in known and m != name}


def test_no_import_cycle_in_the_package():
    mods = modules()
    graph = {name: top_level_imports(name, path, set(mods)) for name, path in mods.items()}
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    graph = {n: {m for m in deps if not m.startswith(n + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                dfs(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            dfs(name)


def test_every_module_has_a_purpose_and_fits_a_few_hundred_lines():
    for name, path in modules().items():
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text))
        assert doc and len(doc.split()) >= 5, f"{name} has no docstring saying what it is for"
        n = text.count("\n")
        assert n <= MAX_LINES, f"{name} has {n} lines (at most {MAX_LINES})"


def test_no_probing_between_our_own_parts():
    for name, path in modules().items():
        text = path.read_text()
        assert "__ray_call__" not in text, f"{name} injects code into an actor"
        assert "inspect.signature" not in text, f"{name} probes a signature"
