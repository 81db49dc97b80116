"""Deferred imports: what the MCP handshake does not need is loaded on first use, not at start-up."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any


class _Deferred(ModuleType):
    """Stands for a module not imported yet: every attribute is read from the module itself, imported on
    the first read through the import system, whose per-module locks make that safe from any thread
    (units of work run on the database's threads)."""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attribute)


def lazy_module(name: str) -> ModuleType:
    """The module ``name``, imported on first attribute access (already imported: returned as is).

    Tool modules reach the services (and through them SQLAlchemy) this way, so that building the
    server and answering ``initialize`` and ``tools/list`` never waits for the database layer.
    """
    if name in sys.modules:
        return sys.modules[name]
    if importlib.util.find_spec(name) is None:
        raise ImportError(f"no module named {name!r}")
    return _Deferred(name)
