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
