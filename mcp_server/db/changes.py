"""How a server hears that another connection (any process) committed a change to the database.

PostgreSQL: a dedicated asyncpg connection LISTENs on the channel the triggers of migration 0007 notify
(inside the writer's transaction, so only commits are heard). SQLite: ``PRAGMA data_version`` on a dedicated
read-only connection, which changes when any other connection commits. Either is opened only while someone
subscribes (mcp_server/live.py), and closed when nobody does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import anyio
from sqlalchemy.engine import make_url

from mcp_server.settings import to_async_url

CHANNEL = "pipeline_state_changes"


class ChangeSource(Protocol):
    # Seconds between checks when nothing wakes the watcher (SQLite: the poll; PostgreSQL: a safety net).
    interval: float

    async def changed(self) -> bool:
        """Whether some connection committed since the last call (True when it cannot tell)."""
        ...


class SqliteChanges:
    interval = 0.5

    def __init__(self, path: str) -> None:
        uri = Path(path).expanduser().resolve().as_uri() + "?mode=ro"
        self._connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._version = self._read()

    def _read(self) -> int:
        return int(self._connection.execute("PRAGMA data_version").fetchone()[0])

    async def changed(self) -> bool:
        version = await anyio.to_thread.run_sync(self._read)
        seen, self._version = self._version, version
        return version != seen

    def close(self) -> None:
        self._connection.close()


class PostgresChanges:
    interval = 5.0

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._heard = False

    def heard(self, *_: Any) -> None:
        self._heard = True

    async def changed(self) -> bool:
        if self._connection.is_closed():
            raise ConnectionError("the LISTEN connection to PostgreSQL closed")
        heard, self._heard = self._heard, False
        return heard


class NoChanges:
    """A private in-memory database: only this process writes, and its writes wake the watcher."""

    interval = 3600.0

    async def changed(self) -> bool:
        return False


@asynccontextmanager
async def open_changes(url: str, wake: Callable[[], None]) -> AsyncIterator[ChangeSource]:
    """The change source of the database at ``url`` (plain or async form); ``wake`` is called when a
    PostgreSQL notification arrives."""
    parsed = make_url(to_async_url(url))
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            yield NoChanges()
            return
        source = await anyio.to_thread.run_sync(SqliteChanges, database)
        try:
            yield source
        finally:
            source.close()
        return
    import asyncpg

    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=10)
    listening = PostgresChanges(connection)

    def heard(*args: Any) -> None:
        listening.heard(*args)
        wake()

    try:
        await connection.add_listener(CHANNEL, heard)
        yield listening
    finally:
        with anyio.CancelScope(shield=True):
            await connection.close(timeout=5)
