"""The headless core stays headless, and no two modules of tui/ import each other.

Importing any module of `tui.core` loads neither Textual nor rich: the CLI, the TUI and the tests
all build on these modules; a screen library creeping into them would tie every script to a
terminal. The core's modules are found by walking the package, so a new one is covered without
editing this file, and each is imported in a fresh interpreter, so what one test imported cannot
hide what another module pulls in.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import tui.core

CORE_MODULES = sorted(info.name for info in pkgutil.walk_packages(tui.core.__path__, "tui.core."))
UI_PACKAGES = ("textual", "rich")
TUI_ROOT = Path(tui.core.__file__).resolve().parent.parent  # tui/ has no __init__.py

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({name.split('.')[0] for name in sys.modules} & set(sys.argv[2:]))))
"""


def ui_packages_loaded_by(module: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROBE, module, *UI_PACKAGES],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_the_core_modules_are_found() -> None:
    # An empty walk would make the parametrized test below pass by testing nothing.
    assert {"tui.core.protocol", "tui.core.runner", "tui.core.fleet"} <= set(CORE_MODULES)


@pytest.mark.parametrize("module", ["tui.core", *CORE_MODULES])
def test_core_module_loads_no_ui_package(module: str) -> None:
    assert ui_packages_loaded_by(module) == []


def test_the_probe_sees_a_ui_package_when_one_is_imported() -> None:
    # Without this, a probe that never reported anything would pass every test above.
    assert ui_packages_loaded_by("tui.app.app") == ["rich", "textual"]


# -- no import cycle ----------------------------------------------------------------------------

def module_name(path: Path) -> str:
    parts = path.relative_to(TUI_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def tui_imports(path: Path) -> set[str]:
    """The modules `path` imports, also inside functions (a deferred import still ties the two
    modules together: app.py and demo.py once imported each other that way), but not in an
    `if TYPE_CHECKING:` block, which never runs."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    todo: list[ast.AST] = [ast.parse(path.read_text())]
    while todo:
        node = todo.pop()
        if is_type_checking_block(node):
            continue
        todo.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in TUI_ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # `import tui.core.x` also runs tui/core/__init__: count the packages on the way.
        wanted = set()
        for imported in tui_imports(path):
            parts = imported.split(".")
            wanted.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        graph[name] = {m for m in wanted if m in modules and m != name
                       and not name.startswith(m + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in `graph` as the modules along it, or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_tui_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "tui.core.protocol" in graph["tui.core.progress"]  # the graph sees real imports
    assert find_cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    # Without this, a finder that never found anything would pass the test above.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
