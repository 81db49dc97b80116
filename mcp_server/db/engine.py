"""Engines and the unit of work: one AsyncSession and one transaction per tool call."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from mcp_server.db import sqlite_driver
from mcp_server.errors import DomainError
from mcp_server.settings import Settings, to_async_url

# Defaults of the settings sqlite_busy_timeout, pool_size and pool_max_overflow (for callers without settings).
BUSY_TIMEOUT_MS = 30_000
POOL_SIZE = 5
POOL_MAX_OVERFLOW = 10
# Bytes a WAL keeps after a checkpoint reset it (SQLite's journal_size_limit).
WAL_SIZE_LIMIT = 4 * 1024 * 1024
# Execution option read by the SQLite "begin" hook: how the transaction takes its lock.
SQLITE_BEGIN = "sqlite_begin"


def _use_wal(cursor: Any, busy_timeout_ms: int) -> None:
    """Switch the file to WAL (it stays so). Switching needs an exclusive lock, and SQLite can answer
    "database is locked" at once instead of waiting on busy_timeout: with several servers opening
    one fresh file that happens, so the switch is retried (briefly) until it goes through."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    pause = 0.005
    while True:
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:  # aiosqlite raises sqlite3's own errors
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)  # only ever on a brand-new file under contention
        pause = min(pause * 2, 0.1)


def _install_sqlite_hooks(engine: AsyncEngine, *, read_only: bool, busy_timeout_ms: int) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN is ours to emit (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if read_only:  # a reader changes nothing, the journal mode included
                return
            _use_wal(cursor, busy_timeout_ms)
            cursor.execute("PRAGMA synchronous = NORMAL")
            # SQLite's own checkpoints (every 1,000 pages, inside a COMMIT, on the connection's thread);
            # a WAL that a checkpoint reset is cut back to this size.
            cursor.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front (BEGIN IMMEDIATE): a deferred transaction that reads
        # and then writes can fail with "database is locked" without waiting on busy_timeout.
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def create_engine(
    url: str,
    *,
    echo: bool = False,
    read_only: bool = False,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    pool_size: int = POOL_SIZE,
    max_overflow: int = POOL_MAX_OVERFLOW,
) -> AsyncEngine:
    """An async engine for a plain or async URL. ``read_only``: the database is opened for reading only
    (SQLite ``mode=ro``; PostgreSQL sessions whose transactions are read-only). ``busy_timeout_ms`` applies
    to SQLite, ``pool_size`` and ``max_overflow`` to PostgreSQL."""
    async_url = to_async_url(url)
    parsed = make_url(async_url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        plain_file = bool(database) and database != ":memory:" and not database.startswith("file:")
        if plain_file and not read_only:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        args, options = parsed.get_dialect()().create_connect_args(parsed)  # filename, uri, thread check
        if read_only and plain_file:
            args, options = [Path(database).expanduser().resolve().as_uri() + "?mode=ro"], {**options, "uri": True}
        engine = create_async_engine(
            parsed,
            echo=echo,
            pool_pre_ping=False,
            module=sqlite_driver.dbapi_module(*args, **options, timeout=busy_timeout_ms / 1000),
        )
        _install_sqlite_hooks(engine, read_only=read_only, busy_timeout_ms=busy_timeout_ms)
        return engine
    settings = {"default_transaction_read_only": "on"} if read_only else {}
    return create_async_engine(
        parsed,
        echo=echo,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        # An unreachable server fails a call in seconds (as `unavailable`), not after asyncpg's 60 s.
        connect_args={"timeout": 10, "server_settings": settings},
    )


# Units of work keep what they loaded readable after the commit, and flush only when told to.
SESSION_OPTIONS: dict[str, Any] = {"expire_on_commit": False, "autoflush": False}
_T = TypeVar("_T")


@asynccontextmanager
async def _transaction(session: AsyncSession) -> AsyncIterator[None]:
    """The session's one transaction: committed if the block succeeds (a DomainError that keeps what was
    written commits it too), rolled back on any other error."""
    transaction = await session.begin()
    try:
        yield
    except DomainError as exc:
        if transaction.is_active:
            await (transaction.commit() if exc.keeps_writes else transaction.rollback())
        raise
    except BaseException:
        if transaction.is_active:
            await transaction.rollback()
        raise
    if transaction.is_active:  # the block may have committed it itself
        await transaction.commit()


def database_key(session: AsyncSession) -> str:
    """Which database a session works on (its URL, password masked): the key of what servers keep in memory."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    return str(engine.url)


@dataclass(frozen=True)
class Database:
    """The engine and the ways to open a unit of work on it."""

    engine: AsyncEngine
    _reader: async_sessionmaker[AsyncSession]
    _writer: async_sessionmaker[AsyncSession]
    _writer_engine: AsyncEngine

    @classmethod
    def from_engine(cls, engine: AsyncEngine) -> Database:
        writer_engine = engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        return cls(
            engine=engine,
            _reader=async_sessionmaker(engine, **SESSION_OPTIONS),
            _writer=async_sessionmaker(writer_engine, **SESSION_OPTIONS),
            _writer_engine=writer_engine,
        )

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        echo: bool = False,
        read_only: bool = False,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        pool_size: int = POOL_SIZE,
        max_overflow: int = POOL_MAX_OVERFLOW,
    ) -> Database:
        options = {"busy_timeout_ms": busy_timeout_ms, "pool_size": pool_size, "max_overflow": max_overflow}
        return cls.from_engine(create_engine(url, echo=echo, read_only=read_only, **options))

    @classmethod
    def from_settings(cls, settings: Settings, *, read_only: bool = False) -> Database:
        """The configured database, with the configured busy timeout and pool."""
        return cls.connect(
            settings.url,
            read_only=read_only,
            busy_timeout_ms=round(settings.sqlite_busy_timeout * 1000),
            pool_size=settings.pool_size,
            max_overflow=settings.pool_max_overflow,
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def unit_of_work(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed if the block succeeds, rolled back on any error."""
        maker = self._writer if write else self._reader
        async with maker() as session, _transaction(session):
            yield session

    async def run(self, work: Callable[[AsyncSession], Awaitable[_T]], *, write: bool = True) -> _T:
        """``work`` in one unit of work, as ``unit_of_work`` runs a block. On SQLite the whole unit runs on
        its connection's own thread, in one hop from the event loop: its statements run there one after
        another instead of one hop each (docs/design.md, "SQLite"). ``work`` must leave no object that
        loads from the database behind it (what it returns is read after the unit ended)."""
        if self.dialect != "sqlite":
            async with self.unit_of_work(write=write) as session:
                return await work(session)
        async with (self._writer_engine if write else self.engine).connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            if not isinstance(driver, sqlite_driver.Connection):  # pragma: no cover - every SQLite engine here
                raise TypeError(f"not a connection of mcp_server.db.sqlite_driver: {type(driver).__name__}")

            async def unit() -> _T:
                async with AsyncSession(bind=connection, **SESSION_OPTIONS) as session, _transaction(session):
                    return await work(session)

            return await driver.worker.unit(unit)

    async def dispose(self) -> None:
        await self.engine.dispose()
