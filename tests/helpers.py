"""Helpers shared by the tests: call a tool and unwrap it, count rows, move the server's clock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from mcp import Client
from sqlalchemy import func, select

import mcp_server.models  # noqa: F401 - puts every table on Base.metadata, or table_counts sees none
from mcp_server.db.base import Base
from mcp_server.db.engine import Database
from mcp_server.db.types import set_clock

# The tool names are part of the contract (docs/design.md, "MCP surface"), by toolset, in tools/list order.
CONTRACT_TOOLSETS: dict[str, tuple[str, ...]] = {
    "projects": (
        "create_project",
        "get_project",
        "list_projects",
        "update_project",
        "delete_project",
        "restore_project",
    ),
    "pipeline": (
        "define_process",
        "list_processes",
        "list_pipelines",
        "apply_pipeline",
        "delete_process",
        "start_execution",
        "renew_lease",
        "record_execution",
        "fail_execution",
        "get_execution",
        "list_executions",
        "get_process_state",
        "get_pipeline_status",
        "invalidate_process",
        "record_check",
    ),
    "prompts": ("save_prompt_version", "get_prompt_version", "list_prompt_versions"),
    "costs": ("report_cost", "get_cost_summary"),
}
CONTRACT_TOOLS: tuple[str, ...] = tuple(name for names in CONTRACT_TOOLSETS.values() for name in names)


async def call_ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured result."""
    result = await client.call_tool(tool, arguments)
    text = result.content[0].text if result.content and hasattr(result.content[0], "text") else ""
    assert not result.is_error, f"{tool} failed: {text}"
    assert result.structured_content is not None
    return result.structured_content


async def call_error(client: Client, tool: str, code: str, **arguments: Any) -> str:
    """Call a tool that must fail with ``code``; return the error text."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} unexpectedly succeeded: {result.structured_content}"
    text: str = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith(f"Error executing tool {tool}: {code}:"), text
    return text


async def table_counts(db: Database) -> dict[str, int]:
    """Row count of every table: compare before and after a failed call to prove it wrote nothing."""
    counts: dict[str, int] = {}
    async with db.unit_of_work(write=False) as session:
        for table in Base.metadata.sorted_tables:
            counts[table.name] = int(await session.scalar(select(func.count()).select_from(table)) or 0)
    return counts


class Clock:
    """The server's clock in a test (db.types.set_clock): time moves when the test moves ``now``."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def moved_clock(start: datetime) -> Iterator[Clock]:
    """The server reads ``Clock`` from ``start`` until the block ends, then the real time again."""
    moved = Clock(start)
    set_clock(moved)
    try:
        yield moved
    finally:
        set_clock(None)
