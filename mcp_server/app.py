"""What the lifespan hands every tool call: the database (opened in the background) and the settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import anyio

from mcp_server.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from mcp_server.db.engine import Database
    from mcp_server.live import LiveHub

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def _connect(settings: Settings) -> Database:
    from mcp_server.db.engine import Database

    return Database.from_settings(settings)


class DatabaseHandle:
    """The database, opened and migrated on first need.

    The lifespan starts :meth:`warm` in the background, so the MCP handshake answers while SQLAlchemy
    is imported (in a worker thread) and the schema is checked; the first tool call waits for it. A
    failure (say PostgreSQL is down at start-up) is not fatal: the next call tries again.
    """

    def __init__(self, settings: Settings, database: Database | None = None) -> None:
        self.settings = settings
        self._database = database
        self._owned = database is None
        self._migrated = not settings.auto_migrate
        self._lock = anyio.Lock()

    async def get(self) -> Database:
        if self._database is not None and self._migrated:
            return self._database
        async with self._lock:
            if self._database is None:
                self._database = await anyio.to_thread.run_sync(_connect, self.settings)
            if not self._migrated:
                from mcp_server.db.migrate import upgrade_to_head

                # Never cancelled half-way (say stdin closes during start-up): the migration's
                # transaction ends in a commit or a rollback, not in an abandoned connection.
                with anyio.CancelScope(shield=True):
                    await upgrade_to_head(self.settings.url, engine=self._database.engine)
                self._migrated = True
        return self._database

    async def warm(self) -> None:
        """Open and migrate ahead of the first call; errors are left for that call to report."""
        try:
            await self.get()
        except Exception as exc:  # noqa: BLE001 - reported by the first tool call, which retries
            from mcp_server.errors import describe_cause

            log.warning(
                "database %s not ready yet (%s); tool calls will retry",
                self.settings.display_url,
                describe_cause(exc),
            )

    @asynccontextmanager
    async def unit_of_work(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        database = await self.get()
        async with database.unit_of_work(write=write) as session:
            yield session

    async def run(self, work: Callable[[AsyncSession], Awaitable[_T]], *, write: bool = True) -> _T:
        """``work`` in one unit of work (Database.run: on SQLite, on the connection's own thread)."""
        database = await self.get()
        return await database.run(work, write=write)

    async def dispose(self) -> None:
        if self._owned and self._database is not None:
            await self._database.dispose()


@dataclass(frozen=True)
class App:
    db: DatabaseHandle
    settings: Settings
    # Resource subscriptions and the watcher that serves them (mcp_server/live.py).
    live: LiveHub | None = None
