"""aiosqlite with one thread hop per statement.

aiosqlite runs every sqlite3 call on the connection's own thread, and SQLAlchemy's adapter makes four
calls per statement (open a cursor, execute, fetch all, close): four round trips between the event
loop and that thread, each a queue put, a thread wake-up and a loop wake-up. A statement itself takes
SQLite some 0.1 ms; the hops took several times that, all of it while the write lock was held.

``OneHopConnection`` is aiosqlite's own connection (same thread, queue, close and stop) whose cursors
do the whole statement in one hop: execute, read the rows (up to ``PREFETCH``, the rest on demand,
so a streamed read stays bounded) and close. SQLAlchemy's aiosqlite dialect drives it unchanged,
through ``create_async_engine(async_creator=…)``.

A write transaction's ``BEGIN IMMEDIATE`` is tried inline, without waiting; while another connection
holds the write lock it is tried again after short sleeps on the event loop (``begin_write``), so a
waiting writer blocks nobody. Once it holds the lock, the transaction's statements run inline, with no
hop at all: in WAL mode a connection holding the write lock never waits on another one (readers do not
block writers), so a statement there costs what SQLite takes to run it. COMMIT runs inline too: the
connections run no automatic checkpoint (``wal_autocheckpoint = 0``, set at connect), so a COMMIT only
appends to the WAL; every ``CHECKPOINT_EVERY`` commits of the process a passive checkpoint (which writes
and syncs the database file) runs on the connection's thread after it. Reads take one hop a statement.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import aiosqlite
import anyio

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

# Rows read with the statement itself; a larger result is read in further hops as it is consumed.
PREFETCH = 1000

_Description = tuple[tuple[Any, ...], ...] | None
_T = TypeVar("_T")
_WRITE_BEGINS = frozenset({"BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"})


class OneHopCursor:
    """The subset of aiosqlite's cursor that SQLAlchemy's adapter uses, one hop per statement."""

    def __init__(self, connection: OneHopConnection) -> None:
        self._connection = connection
        self._cursor: sqlite3.Cursor | None = None  # still open only while rows remain to be read
        self._rows: list[Any] = []
        self.description: _Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> OneHopCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _run(self, sql: str, parameters: Any, many: bool) -> None:
        """On the connection's thread: the statement, its first rows, and the cursor closed if done."""
        connection = self._connection
        cursor = connection._conn.cursor()
        try:
            if many:
                cursor.executemany(sql, parameters)
            else:
                cursor.execute(sql, parameters)
            rows = cursor.fetchmany(PREFETCH) if cursor.description is not None else []
        except BaseException:
            cursor.close()
            raise
        connection._track_write_lock()
        self.description = cursor.description
        self.rowcount = cursor.rowcount
        self.lastrowid = cursor.lastrowid
        self._rows = rows
        if len(rows) < PREFETCH:
            cursor.close()
            self._cursor = None
        else:
            self._cursor = cursor

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] | None = None) -> OneHopCursor:
        await self._close_open()
        if _is_write_begin(sql) and not self._connection._holds_write_lock:
            await self._connection.begin_write(sql)
            self.description, self.rowcount, self.lastrowid = None, -1, None
            return self
        await self._connection.run(self._run, sql, () if parameters is None else parameters, False)
        return self

    async def executemany(self, sql: str, parameters: Any) -> OneHopCursor:
        await self._close_open()
        await self._connection.run(self._run, sql, parameters, True)
        return self

    def _take(self, size: int | None) -> list[Any]:
        if size is None or size >= len(self._rows):
            rows, self._rows = self._rows, []
            return rows
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    def _read(self, size: int | None) -> list[Any]:
        """On the connection's thread: more rows of a large result; the cursor closes when it is drained."""
        cursor = self._cursor
        if cursor is None:
            return []
        rows = cursor.fetchall() if size is None else cursor.fetchmany(size)
        if size is None or len(rows) < size:
            cursor.close()
            self._cursor = None
        return rows

    async def fetchall(self) -> list[Any]:
        rows = self._take(None)
        if self._cursor is not None:
            rows += await self._connection.run(self._read, None)
        return rows

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        wanted = self.arraysize if size is None else size
        rows = self._take(wanted)
        if len(rows) < wanted and self._cursor is not None:
            rows += await self._connection.run(self._read, max(wanted - len(rows), PREFETCH))
            self._rows = rows[wanted:]
            rows = rows[:wanted]
        return rows

    async def fetchone(self) -> Any:
        rows = await self.fetchmany(1)
        return rows[0] if rows else None

    async def _close_open(self) -> None:
        self._rows = []
        if self._cursor is not None:
            cursor, self._cursor = self._cursor, None
            await self._connection.run(cursor.close)

    async def close(self) -> None:
        await self._close_open()


# Write commits of this process, and how often one of them checkpoints the WAL into the database file
# (SQLite's own automatic checkpoint, off on these connections, would run inside a COMMIT every 1,000
# pages; this keeps the WAL about as small).
CHECKPOINT_EVERY = 200
_commits = [0]


def _checkpoint(connection: sqlite3.Connection) -> None:
    """A passive checkpoint: copies what it can without waiting for readers or writers."""
    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").close()


# Pauses between tries of a BEGIN that found the write lock taken (a write holds it about 2 ms).
RETRY_FIRST = 0.0005
RETRY_MOST = 0.002


def _is_write_begin(sql: str) -> bool:
    return sql.lstrip()[:15].upper() in _WRITE_BEGINS


class _GateWait:
    """One blocking wait for the gate on a worker thread, which the waiter may give up (time-out or
    cancellation): whichever of the two comes second gives the lock back."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._guard = threading.Lock()
        self._acquired = self._abandoned = False

    def run(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        with self._guard:
            self._acquired = True
            if self._abandoned:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def abandon(self) -> None:
        with self._guard:
            self._abandoned = True
            if self._acquired:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


class WriteGate:
    """A queue for one database file's write lock, shared by every process: an exclusive ``flock`` on a
    file beside the database (``<database>-writers``), taken before ``BEGIN IMMEDIATE`` and released when
    the transaction ends. SQLite has no queue (a writer that finds the lock taken polls for it); the
    kernel's flock does, and wakes a waiter as soon as the lock is released, also when its holder dies.

    Taken inline when free; otherwise waited for on a worker thread, never on the event loop. A wait
    that outlasts busy_timeout ends as "database is locked", and the lock it still gets later is given
    straight back."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._held = False

    @classmethod
    def beside(cls, database: str, *, uri: bool) -> WriteGate | None:
        """The gate of a database file, or None (in-memory and URI databases, platforms without flock, a
        directory where the gate file cannot be created: writers then only poll)."""
        if fcntl is None or uri or database in ("", ":memory:") or database.startswith("file:"):
            return None
        try:
            fd = os.open(f"{database}-writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        return cls(fd)

    async def acquire(self, deadline: float) -> None:
        if self._held:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            wait = _GateWait(self._fd)
            try:
                with anyio.fail_after(max(deadline - time.monotonic(), 0)):
                    await anyio.to_thread.run_sync(wait.run, abandon_on_cancel=True)
            except TimeoutError:
                wait.abandon()
                raise sqlite3.OperationalError("database is locked") from None
            except BaseException:
                wait.abandon()
                raise
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._held = False
        with contextlib.suppress(OSError):
            os.close(self._fd)


class OneHopConnection(aiosqlite.Connection):
    """aiosqlite's connection whose cursors take one hop per statement (see the module's docstring)."""

    _holds_write_lock = False
    busy_timeout_ms = 5000
    gate: WriteGate | None = None

    def cursor(self) -> OneHopCursor:  # type: ignore[override]  # no hop: the sqlite3 cursor opens with the statement
        return OneHopCursor(self)

    async def run(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` on the connection: inline while this connection holds the write lock (it
        cannot wait on anyone then), otherwise on the connection's thread."""
        if self._holds_write_lock and self._connection is not None:
            return function(*args)
        return await self._hop(function, *args)

    async def _hop(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` on the connection's thread (aiosqlite's queue)."""
        result: _T = await self._execute(function, *args)  # type: ignore[no-untyped-call]
        return result

    async def begin_write(self, sql: str) -> None:
        """A write transaction's BEGIN (IMMEDIATE or EXCLUSIVE): tried inline; while another connection
        holds the write lock, tried again after a short sleep on the event loop (1-2 ms, with jitter), up
        to busy_timeout, then "database is locked".

        SQLite's own busy handler would wait on the connection's thread, sleeping 1, 2, 5, 10, 15, 20, 25 …
        ms between tries: with several servers writing one file the lock sat free most of that time, and
        eight servers wrote no faster than one. Writers of a file database first queue on its ``WriteGate``
        (the kernel wakes the next one when a writer is done), so these tries succeed at once unless
        some other program writes the file."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        if self.gate is not None:
            await self.gate.acquire(deadline)
        try:
            pause = RETRY_FIRST
            while not self._try_begin(sql):
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError("database is locked")
                await anyio.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 2, RETRY_MOST)
        except BaseException:
            self._release_gate()
            raise

    def _release_gate(self) -> None:
        if self.gate is not None:
            self.gate.release()

    def _try_begin(self, sql: str) -> bool:
        """The BEGIN inline, without waiting: True when it took the write lock, False when another
        connection holds it."""
        connection = self._conn
        connection.execute("PRAGMA busy_timeout = 0")
        try:
            connection.execute(sql)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            return False
        finally:
            connection.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        self._holds_write_lock = True
        return True

    def _track_write_lock(self) -> None:
        """After a statement: a transaction that ended (COMMIT or ROLLBACK as SQL) holds the write lock no
        more (begin_write is what takes it)."""
        if not self._conn.in_transaction:
            self._holds_write_lock = False
            self._release_gate()

    async def commit(self) -> None:
        """Inline when this transaction holds the write lock (appending to the WAL waits on nobody), then,
        every CHECKPOINT_EVERY commits of the process, a passive checkpoint on the thread."""
        connection, writing = self._connection, self._holds_write_lock
        self._holds_write_lock = False
        if not writing or connection is None:
            await self._hop(self._conn.commit)
            return
        try:
            connection.commit()
        finally:
            self._release_gate()
        _commits[0] += 1
        if _commits[0] % CHECKPOINT_EVERY == 0:
            await self._hop(_checkpoint, connection)

    async def rollback(self) -> None:
        """Outside a transaction (a pooled connection's reset after COMMIT) there is nothing to roll back:
        no hop."""
        self._holds_write_lock = False
        try:
            if self._connection is not None and not self._connection.in_transaction:
                return
            await self._hop(self._conn.rollback)
        finally:
            self._release_gate()

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self.gate is not None:
                self.gate.close()

    def stop(self) -> Any:
        """Also on a forced stop (SQLAlchemy terminating the connection): no gate stays held."""
        if self.gate is not None:
            self.gate.release()
        return super().stop()


def connector(database: str, **options: Any) -> Callable[[], OneHopConnection]:
    """What ``create_async_engine(async_creator=…)`` calls: a connection on its own daemon thread, opened on
    it (sqlite3's thread check then holds, as with plain aiosqlite)."""

    def connect() -> OneHopConnection:
        # The thread check is off: statements of a write transaction run inline, on the event loop's
        # thread, and only ever while the connection's own thread is idle (every hop is awaited).
        options["check_same_thread"] = False
        connection = OneHopConnection(partial(sqlite3.connect, database, **options), iter_chunk_size=64)
        connection.busy_timeout_ms = int(float(options.get("timeout", 5.0)) * 1000)
        connection.gate = WriteGate.beside(database, uri=bool(options.get("uri")))
        connection._thread.daemon = True
        return connection

    return connect
