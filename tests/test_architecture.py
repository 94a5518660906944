"""The package's rooms (docs/architecture.md): imports go one way, there is no cycle, the CLI loads none of the
daemons' dependencies, no module grows past what one reads at a sitting, and every program a rendered config
starts is where the config says."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from bokeh_stack.config import topology

PACKAGE = Path(__file__).resolve().parents[1] / "bokeh_stack"
# Which rooms each room may import, besides itself and the leaves at the top: the package's __version__ and
# bokeh_stack.identity (what app code reads).
LEAVES = {"bokeh_stack", "bokeh_stack.identity"}
MAY_IMPORT = {
    "config": set(),
    "patches": {"config"},
    "resume": {"config", "patches"},
    "daemons": {"config", "patches", "resume"},
    "provisioning": {"config"},
    "cli": {"config", "provisioning", "daemons"},
}
# What `bokeh-stack --help`, render and apply do without: the daemons' and the workers' dependencies.
DAEMON_DEPENDENCIES = ("prometheus_client", "argon2", "authlib", "joserfc", "tornado", "bokeh")
MAX_LINES = 450


def modules() -> dict[str, Path]:
    return {
        ".".join(("bokeh_stack", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }


def imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """The bokeh_stack modules `module` imports, each with whether at import time (module level), leaving out
    what only a type checker reads."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, top) for a in child.names if a.name.startswith("bokeh_stack"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - child.level + 1] + ([base] if base else []))
                if base.startswith("bokeh_stack"):
                    found.extend(
                        (f"{base}.{a.name}" if f"{base}.{a.name}" in known else base, top) for a in child.names
                    )
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            visit(child, inner)

    known = modules()
    visit(tree, True)
    return [(name, top) for name, top in found if name in known]


def room(module: str) -> str | None:
    """config, patches, daemons, provisioning or cli; None for the public modules at the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in MAY_IMPORT else None


def test_imports_go_one_way():
    wrong = []
    for module, path in modules().items():
        here = room(module)
        if here is None:
            continue  # the public modules at the top: they may use any room
        for imported, _ in imports(path, module):
            there = room(imported)
            if imported not in LEAVES and there != here and there not in MAY_IMPORT[here]:
                wrong.append(f"{module} imports {imported}")
    assert wrong == []


def test_no_module_imports_itself_back():
    graph = {m: {i for i, top in imports(p, m) if top} for m, p in modules().items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*trail, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    assert [cycle for module in graph if (cycle := cycle_from(module))] == []


def test_the_cli_loads_none_of_the_daemons_dependencies():
    loaded = "{m.split('.')[0] for m in sys.modules}"
    code = f"import sys, bokeh_stack.cli; print(sorted({loaded} & {set(DAEMON_DEPENDENCIES)!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(modules()))
def test_a_module_is_read_at_one_sitting(name):
    assert len(modules()[name].read_text().splitlines()) <= MAX_LINES


def test_every_program_a_config_starts_is_there():
    for name, module in topology.MODULES.items():
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{name}: no module {module}"
        source = Path(spec.origin).read_text() if spec.origin and not spec.submodule_search_locations else ""
        package_main = spec.submodule_search_locations and importlib.util.find_spec(f"{module}.__main__")
        assert "__main__" in source or package_main, f"{module} does not run with python -m"


def test_the_wheel_carries_every_room():
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {m for m, path in modules().items() if path.name == "__init__.py"}
    assert packages - listed == set()


def test_every_attribute_read_off_a_module_of_ours_is_there():
    """`fixes.unmet` after unmet moved out of fixes: a worker with function apps stopped at start, and no fast test
    would have started one. Every `module.name` the code and the tests read off one of our modules must exist."""
    missing = []
    for path in [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "tests").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bokeh_stack") and not node.level:
                for alias in node.names:
                    if importlib.util.find_spec(f"{node.module}.{alias.name}") if _is_package(node.module) else None:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                if not hasattr(importlib.import_module(aliases[node.value.id]), node.attr):
                    missing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.value.id}.{node.attr}")
    assert missing == []


def _is_package(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.submodule_search_locations is not None
