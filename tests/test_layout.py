"""The code's structure: no import circle in the package, and short functions outside scripts/."""

from __future__ import annotations

import ast
from pathlib import Path

import cifake_models

PACKAGE = Path(cifake_models.__file__).parent
ROOT = PACKAGE.parent
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere (type-checking and function-level imports too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from package import module`` imports the module; ``from module import name``, the module
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {m for m in out if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported(p, modules) for p in paths}


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph``, as the modules along it, or None."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*trail, nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_circle_finder_finds_a_circle():
    assert circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_relative_and_absolute_imports():
    graph = import_graph()
    assert "cifake_models.inference" in graph["cifake_models.stability"]
    assert "cifake_models.state" not in graph  # only real modules
    assert "cifake_models.page.state" in graph["cifake_models.page.analysis"]


def test_the_library_imports_neither_the_trainer_nor_gradio():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if (isinstance(node, ast.ImportFrom) and not node.level)
                else []
            )
            found.update(
                {f"{module_name(path)} imports {n}": 1 for n in names if n.split(".")[0] in ("train", "gradio")}
            )
    assert not found, sorted(found)


def test_no_import_circle_in_the_package():
    assert circle(import_graph()) is None


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``name (n lines)`` for each function in ``path`` longer than ``limit`` lines, nested ones included."""
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit
    ]


def test_the_length_check_counts_a_functions_lines(tmp_path):
    source = tmp_path / "long.py"
    source.write_text("def short():\n    pass\n\n\ndef long():\n" + "    x = 1\n" * 80)
    assert long_functions(source) == ["long (81 lines)"]


def test_no_function_outside_scripts_is_over_80_lines():
    paths = [ROOT / "app.py", *(p for room in ("cifake_models", "train", "tests") for p in (ROOT / room).rglob("*.py"))]
    found = {str(p.relative_to(ROOT)): long for p in paths if (long := long_functions(p))}
    assert not found, f"split these into steps: {found}"
