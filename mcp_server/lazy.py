"""Deferred imports: what the MCP handshake does not need is loaded on first use, not at start-up."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """The module ``name``, executed on first attribute access (already imported: returned as is).

    Tool modules reach the services (and through them SQLAlchemy) this way, so that building the
    server and answering ``initialize`` and ``tools/list`` never waits for the database layer.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
