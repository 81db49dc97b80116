"""No module of the package reaches into another package's private members (``x._name``, ``getattr(x,
"_name")``, ``from pkg._module import …``, ``from pkg import _name``) outside mcp_server/sdk_gap.py, the one
adapter that holds the gap the MCP SDK leaves, with its own contract test (tests/test_sdk_gap.py).

The check reads the syntax tree, so comments and docstrings never count. ``self._x`` and ``cls._x`` are a
class's own members; every other ``._x`` is taken to be someone else's, since the type of ``conn`` in
``conn._x`` cannot be told from the source."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import mcp_server

PACKAGE = Path(mcp_server.__file__).parent
ROOT = PACKAGE.parent
ADAPTER = "mcp_server/sdk_gap.py"
ALLOWED_FILES: set[str] = set()
# Names with a leading underscore that their package documents as public: SQLAlchemy's Row._mapping and
# the named-tuple methods (Row is a named tuple).
PUBLIC_UNDERSCORED = {"_mapping", "_asdict", "_fields", "_replace", "_make"}
# The standard library has no public name for the type add_subparsers() returns; annotations only.
ALLOWED_EXPRESSIONS = {"argparse._SubParsersAction"}
OWN_NAMES = {"self", "cls"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _findings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in PUBLIC_UNDERSCORED:
            if not (isinstance(node.value, ast.Name) and node.value.id in OWN_NAMES):
                expression = ast.unparse(node)
                if expression not in ALLOWED_EXPRESSIONS:
                    yield node.lineno, expression
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in {"getattr", "setattr", "hasattr", "delattr"} and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and isinstance(name.value, str) and _private(name.value):
                    yield node.lineno, ast.unparse(node)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "mcp_server":
                parts = [*node.module.split("."), *(alias.name for alias in node.names)]
                if any(_private(part) for part in parts):
                    yield node.lineno, f"from {node.module} import {', '.join(a.name for a in node.names)}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "mcp_server" and any(_private(p) for p in alias.name.split(".")):
                    yield node.lineno, f"import {alias.name}"


def _modules() -> Iterator[tuple[str, ast.AST]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative == ADAPTER or relative in ALLOWED_FILES:
            continue
        yield relative, ast.parse(path.read_text(encoding="utf-8"), filename=relative)


def test_no_module_outside_the_adapter_touches_another_packages_private_members() -> None:
    found = [f"{name}:{line}: {expression}" for name, tree in _modules() for line, expression in _findings(tree)]
    assert not found, "private members of other packages (route them through mcp_server/sdk_gap.py):\n" + "\n".join(
        found
    )


def test_the_check_sees_each_kind_of_private_access() -> None:
    source = """
import anyio._core
from mcp.shared._stream_protocols import ReadStream
from aiosqlite import _private
server._lowlevel_server.run()
getattr(connection, "_thread")
self._mine = cls._ours = row._mapping
"""
    found = sorted(expression for _, expression in _findings(ast.parse(source)))
    assert found == sorted(
        [
            "import anyio._core",
            "from mcp.shared._stream_protocols import ReadStream",
            "from aiosqlite import _private",
            "server._lowlevel_server",
            "getattr(connection, '_thread')",
        ]
    )


def test_the_adapter_and_the_allowed_files_exist() -> None:
    for relative in (ADAPTER, *ALLOWED_FILES):
        assert (ROOT / relative).is_file(), f"{relative} is gone: drop it from this test"
