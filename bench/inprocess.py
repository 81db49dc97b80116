"""Run one tool in this process with every SQL statement captured and timed, to see what dominates."""

from __future__ import annotations

import time
from typing import Any

from mcp import Client
from sqlalchemy import event


class StatementLog:
    """SQL statements a call ran, each with its parameters and its time inside the driver."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._start = 0.0

    def before(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        self._start = time.perf_counter()
        self.entries.append({"sql": statement, "parameters": parameters})

    def after(self, *_: Any) -> None:
        self.entries[-1]["ms"] = round((time.perf_counter() - self._start) * 1000, 3)

    def summary(self) -> list[dict[str, Any]]:
        """Statements by time, longest first, SQL shortened to one line."""
        ordered = sorted(self.entries, key=lambda e: -e.get("ms", 0.0))
        return [{"ms": e.get("ms"), "sql": " ".join(e["sql"].split())[:240]} for e in ordered]


async def profile_tool(url: str, tool: str, arguments: dict[str, Any], repeats: int) -> dict[str, Any]:
    """In-process server (SDK in-memory client): median call time and the statements of the last call."""
    from mcp_server.db.engine import Database
    from mcp_server.server import build_server
    from mcp_server.settings import Settings

    database = Database.connect(url)
    log = StatementLog()
    engine = database.engine.sync_engine
    try:
        async with Client(build_server(Settings(database_url=url, auto_migrate=False), database=database)) as client:
            await client.list_tools()
            await client.call_tool(tool, arguments)  # warm-up
            times: list[float] = []
            for _ in range(repeats):
                log.entries.clear()
                event.listen(engine, "before_cursor_execute", log.before)
                event.listen(engine, "after_cursor_execute", log.after)
                start = time.perf_counter()
                result = await client.call_tool(tool, arguments)
                times.append(time.perf_counter() - start)
                event.remove(engine, "before_cursor_execute", log.before)
                event.remove(engine, "after_cursor_execute", log.after)
                if result.is_error:
                    raise RuntimeError(f"{tool} failed in-process: {result.content}")
    finally:
        await database.dispose()
    times.sort()
    sql_ms = sum(e.get("ms", 0.0) for e in log.entries)
    return {
        "median_ms": round(times[len(times) // 2] * 1000, 3),
        "statements": len(log.entries),
        "sql_ms": round(sql_ms, 3),
        "top_statements": log.summary()[:6],
        "raw_entries": log.entries,
    }


async def lock_hold(url: str, warmup: int, calls: int) -> dict[str, Any]:
    """How long each ``record_execution`` holds SQLite's write lock: from its ``BEGIN IMMEDIATE`` to the
    connection's return to the pool (after COMMIT), in-process (the SDK's in-memory client), with the
    record workload on the 10-step pipeline; and the statements of one call."""
    from bench.pipeline import define_linear, new_project, record_args
    from mcp_server.db.engine import Database
    from mcp_server.db.migrate import upgrade_to_head
    from mcp_server.server import build_server
    from mcp_server.settings import Settings

    await upgrade_to_head(url)
    database = Database.connect(url)
    engine = database.engine.sync_engine
    began: list[float] = []
    held: list[float] = []
    statements: list[str] = []

    def after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split())[:160])
        if statement.startswith("BEGIN IMMEDIATE"):
            began.append(time.perf_counter())

    def returned(*_: Any) -> None:
        if began:
            held.append(time.perf_counter() - began.pop())

    try:
        async with Client(build_server(Settings(database_url=url, auto_migrate=False), database=database)) as client:
            await define_linear(client)
            project_id = await new_project(client, "lock")
            for n in range(warmup):
                await client.call_tool("record_execution", record_args(project_id, n))
            event.listen(engine, "after_cursor_execute", after)
            event.listen(engine.pool, "reset", returned)
            times: list[float] = []
            for n in range(warmup, warmup + calls):
                statements.clear()
                start = time.perf_counter()
                result = await client.call_tool("record_execution", record_args(project_id, n))
                times.append(time.perf_counter() - start)
                if result.is_error:
                    raise RuntimeError(f"record_execution failed in-process: {result.content}")
            event.remove(engine, "after_cursor_execute", after)
            event.remove(engine.pool, "reset", returned)
    finally:
        await database.dispose()
    held.sort()
    times.sort()
    return {
        "calls": len(held),
        "hold_p50_ms": round(held[len(held) // 2] * 1000, 3),
        "hold_p99_ms": round(held[min(len(held) - 1, int(len(held) * 0.99))] * 1000, 3),
        "call_p50_ms": round(times[len(times) // 2] * 1000, 3),
        "statements_of_last_call": statements,
    }
