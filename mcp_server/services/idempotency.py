"""Idempotency keys (docs/design.md, "Idempotency"): a replay returns the original reply; other arguments
are a conflict."""

from __future__ import annotations

from typing import Any

from mcp_server.errors import Conflict
from mcp_server.services.validation import json_hash


def request_hash(tool: str, arguments: dict[str, Any]) -> str:
    return json_hash({"tool": tool, "arguments": arguments})


def check_replay(key: str, stored_hash: str | None, new_hash: str) -> None:
    """Raise Conflict when the key was used with different arguments (or by another tool)."""
    if stored_hash != new_hash:
        raise Conflict(
            f"idempotency_key {key!r} was already used with different arguments",
            hint="Use a new idempotency_key for a different call, or repeat the original arguments exactly",
        )
