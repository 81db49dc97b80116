"""SQLite for the async engine: each connection owns one worker thread; one hop per statement, or one
per unit of work.

Every call into ``sqlite3`` runs on the connection's own thread, never on the event loop: a long
statement (a 2,000-step catalogue write, a slow schema check's neighbour) delays only the call that
issued it. A statement is one hop: execute, read the rows (up to ``PREFETCH``; more on demand, so a
streamed read stays bounded) and close the cursor, then one wake-up of the loop. That is what the
stock adapter spends four hops on. A whole unit of work can run on the connection's thread instead
(``_Worker.unit``, used by ``Database.run``): on that thread's own event loop, its statements run
where they are issued, without a hop each.

The connection satisfies SQLAlchemy's published protocol for asyncio DBAPI connections
(``sqlalchemy.connectors.asyncio.AsyncIODBAPIConnection``) and is handed to SQLAlchemy's SQLite
asyncio dialect through ``create_async_engine(module=…)``, the documented way to give a dialect
another DBAPI module (``dbapi_module()`` below). Only public names of ``sqlite3`` and SQLAlchemy are
used. The design document (docs/design.md, "SQLite") says why.

A transaction costs no hop of its own: its ``BEGIN`` runs in the hop of its first statement, and the
pool's rollback-on-return of a connection whose transaction already ended (committed, or never begun)
is answered without one. A write unit of work of n statements is n + 1 hops (the COMMIT).

Cancellation: a hop is a ``concurrent.futures.Future`` awaited through ``asyncio.wrap_future``. A call
cancelled before its hop starts never runs (the worker skips cancelled futures); one cancelled while
its statement runs lets the statement finish, and what comes next (the rollback, the close) is
queued behind it on the same thread, so nothing waits on a thread that will not answer. A transaction
cancelled before its first statement never began.

Writers queue on a ``WriteGate`` (a kernel ``flock`` beside the file) before ``BEGIN IMMEDIATE``:
SQLite's busy handler polls with growing sleeps, the kernel wakes the next writer as soon as the lock
is free, also when its holder dies. The gate is waited for on a worker thread, never on the loop.

Checkpoints are SQLite's own (``wal_autocheckpoint``, on the connection's thread inside a COMMIT);
``journal_size_limit`` truncates the WAL after a checkpoint that reset it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection, AsyncAdapt_terminate

if TYPE_CHECKING:
    from sqlalchemy.connectors.asyncio import AsyncIODBAPIConnection

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

# Rows read with the statement itself; a larger result is read in further hops as it is consumed.
PREFETCH = 1000

_Description = tuple[tuple[Any, ...], ...] | None
_T = TypeVar("_T")
_WRITE_BEGINS = frozenset({"BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"})
_BEGINS = _WRITE_BEGINS | {"BEGIN", "BEGIN DEFERRED", "BEGIN TRANSACTION"}


def _begin_kind(sql: str, parameters: Any) -> str | None:
    """ "write" or "read" for a plain BEGIN statement (no parameters), else None."""
    if parameters:
        return None
    head = " ".join(sql.split()).upper().rstrip(";")
    if head not in _BEGINS:
        return None
    return "write" if head in _WRITE_BEGINS else "read"


class ConnectionClosed(sqlite3.OperationalError):
    """A call on a connection that was closed or stopped."""


class Cancelled(sqlite3.OperationalError):
    """A unit of work whose caller gave up before its transaction began (the caller's own cancellation
    is what the caller sees)."""


_Call = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]


class _Unit:
    """A unit of work submitted to a worker: its task there, and whether its caller gave up on it."""

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False


class _Worker:
    """One daemon thread running submitted calls in order. A call whose future was cancelled before it
    started is skipped; after ``stop`` every new call fails at once (nothing can wait for ever)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._stopped = False
        # Written by one thread each (the submitter's, the worker's): equal when no call is queued or running.
        self.submitted = 0
        self.finished = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # this thread's own, for whole units of work
        self._unit: _Unit | None = None  # the unit of work running on this thread
        self._thread = threading.Thread(target=self._serve, name="sqlite-connection", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._take_calls()
        finally:
            if self._loop is not None:
                self._loop.close()

    def _take_calls(self) -> None:
        while (item := self._calls.get()) is not None:
            future, function, args = item
            if not future.set_running_or_notify_cancel():
                self.finished += 1
                continue
            try:
                result = function(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                self.finished += 1
                future.set_exception(exc)
            else:
                self.finished += 1
                future.set_result(result)

    def idle(self) -> bool:
        """Nothing queued or running (asked from the thread that submits)."""
        return self.finished == self.submitted

    def submit(self, function: Callable[..., _T], *args: Any) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        if self._stopped:
            future.set_exception(ConnectionClosed("the connection is closed"))
        else:
            self.submitted += 1
            self._calls.put((future, function, args))
        return future

    def here(self) -> bool:
        """Whether the caller runs on this worker's thread (inside a unit of work it runs)."""
        return threading.get_ident() == self._thread.ident

    async def call(self, function: Callable[..., _T], *args: Any) -> _T:
        if self.here():
            return function(*args)
        return await asyncio.wrap_future(self.submit(function, *args))

    def _run_unit(self, unit: Callable[[], Coroutine[Any, Any, _T]], context: contextvars.Context, state: _Unit) -> _T:
        """On the worker thread: a unit of work's coroutine, run to its end on this thread's own loop (its
        statements run here, one after another, without a hop each)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        task: asyncio.Task[_T] = self._loop.create_task(unit(), context=context)
        state.task, self._unit = task, state
        try:
            return self._loop.run_until_complete(task)
        finally:
            self._unit = None

    @property
    def unit_cancelled(self) -> bool:
        """Whether the caller of the unit running on this thread gave up on it."""
        unit = self._unit
        return unit is not None and unit.cancelled

    @staticmethod
    def _cancel_unit(state: _Unit) -> None:
        """On the worker thread's loop: the unit is cancelled where it waits (the writers' gate, a schema
        check); waiting in SQLite's busy handler, it stops as its transaction begins."""
        if state.task is not None:
            state.task.cancel()

    async def unit(self, unit: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """A whole unit of work on this thread, in one hop, in the caller's context. Cancelled before it
        starts, it never runs; cancelled while it waits for its transaction to begin, it stops there
        (nothing written); cancelled later, it ends as it would have (its commit or its rollback). Either
        way the cancellation goes on only once the unit ended: the connection is never handed back
        mid-transaction."""
        state = _Unit()
        future = self.submit(self._run_unit, unit, contextvars.copy_context(), state)
        try:
            return await asyncio.wrap_future(future)
        except BaseException:
            if not future.done():
                state.cancelled = True
                if self._loop is not None:
                    with contextlib.suppress(RuntimeError):  # the unit ended and its loop closed meanwhile
                        self._loop.call_soon_threadsafe(self._cancel_unit, state)
                with anyio.CancelScope(shield=True), contextlib.suppress(BaseException):
                    await asyncio.wrap_future(future)
            raise

    def stop(self) -> None:
        """Run what is queued, then end the thread; later calls fail."""
        if not self._stopped:
            self._stopped = True
            self._calls.put(None)


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
    the transaction ends. A wait that outlasts busy_timeout ends as "database is locked"."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._held = False
        self._guard = threading.Lock()

    @classmethod
    def beside(cls, database: str, *, uri: bool) -> WriteGate | None:
        """The gate of a database file, or None (in-memory and URI databases, platforms without flock, a
        directory where the gate file cannot be created: writers then wait in SQLite's busy handler)."""
        if fcntl is None or uri or database in ("", ":memory:") or database.startswith("file:"):
            return None
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(f"{database}-writers", flags, 0o600)
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
        """From any thread; releasing a gate that is not held does nothing."""
        with self._guard:
            if self._held:
                self._held = False
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        with contextlib.suppress(OSError):
            os.close(self._fd)


class Cursor:
    """What SQLAlchemy's asyncio cursor adapter calls, one hop per statement."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._cursor: sqlite3.Cursor | None = None  # still open only while rows remain to be read
        self._rows: list[Any] = []
        self.description: _Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _run(self, sql: str, parameters: Any, many: bool, begin: str | None) -> None:
        """On the connection's thread: the transaction's BEGIN if it is the first statement, the statement,
        its first rows, and the cursor closed if done."""
        sqlite = self._connection.sqlite
        if begin is not None:
            self._connection.begin_now(begin)
        cursor = sqlite.cursor()
        try:
            if many:
                cursor.executemany(sql, parameters)
            else:
                cursor.execute(sql, parameters)
            rows = cursor.fetchmany(PREFETCH) if cursor.description is not None else []
        except BaseException:
            cursor.close()
            raise
        finally:
            self._connection.release_gate_if_done()
        self.description, self.rowcount, self.lastrowid = cursor.description, cursor.rowcount, cursor.lastrowid
        self._rows = rows
        if len(rows) < PREFETCH:
            cursor.close()
            self._cursor = None
        else:
            self._cursor = cursor

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] | None = None) -> Cursor:
        await self._close_open()
        connection = self._connection
        if (kind := _begin_kind(sql, parameters)) is not None:
            await connection.begin(sql, write=kind == "write")
            self.description, self.rowcount, self.lastrowid = None, -1, None
            return self
        await connection.run(self._run, sql, () if parameters is None else parameters, False)
        return self

    async def executemany(self, sql: str, parameters: Any) -> Cursor:
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
            rows += await self._connection.worker.call(self._read, None)
        return rows

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        wanted = self.arraysize if size is None else size
        rows = self._take(wanted)
        if len(rows) < wanted and self._cursor is not None:
            rows += await self._connection.worker.call(self._read, max(wanted - len(rows), PREFETCH))
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
            await self._connection.worker.call(cursor.close)

    async def close(self) -> None:
        await self._close_open()


class Connection:
    """One ``sqlite3`` connection, opened and used on its own worker thread only."""

    def __init__(self, worker: _Worker, sqlite: sqlite3.Connection, gate: WriteGate | None, busy_ms: int) -> None:
        self.worker = worker
        self.sqlite = sqlite
        self.gate = gate
        self.busy_timeout_ms = busy_ms
        self._closed = False
        # The BEGIN of a transaction whose first statement has not been sent yet (owned by the event loop).
        self._begin: str | None = None
        # Whether a transaction was open after the last call (written on the worker thread only).
        self._in_transaction = False

    @classmethod
    async def open(cls, database: str, **options: Any) -> Connection:
        worker = _Worker()
        busy_ms = int(float(options.get("timeout", 5.0)) * 1000)
        # Opened on its own thread and used only there: sqlite3's same-thread check stays on.
        options = {key: value for key, value in options.items() if key != "check_same_thread"}
        try:
            sqlite = await worker.call(partial_call(sqlite3.connect, database, **options))
        except BaseException:
            worker.stop()
            raise
        return cls(worker, sqlite, WriteGate.beside(database, uri=bool(options.get("uri"))), busy_ms)

    def cursor(self) -> Cursor:
        return Cursor(self)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        """One statement outside SQLAlchemy (a PRAGMA that only works between transactions)."""
        await self.run(self._statement, sql, parameters)

    def _statement(self, sql: str, parameters: Sequence[Any], begin: str | None) -> None:
        if begin is not None:
            self.begin_now(begin)
        try:
            self.sqlite.execute(sql, parameters).close()
        finally:
            self.release_gate_if_done()

    def begin_now(self, begin: str) -> None:
        """On the worker thread: the transaction's BEGIN, just before its first statement. A unit of work
        whose caller gave up while it waited for the write lock stops here, before anything is written."""
        try:
            if self.worker.unit_cancelled:
                raise Cancelled("the call was cancelled before its transaction began; nothing was written")
            self.sqlite.execute(begin).close()
            if self.worker.unit_cancelled:
                self.sqlite.rollback()
                raise Cancelled("the call was cancelled while it waited for the write lock; nothing was written")
        finally:
            self.release_gate_if_done()

    def release_gate_if_done(self) -> None:
        """On the worker thread, after a statement: a transaction that ended gives the gate back."""
        self._in_transaction = self.sqlite.in_transaction
        if self.gate is not None and not self._in_transaction:
            self.gate.release()

    async def begin(self, sql: str, *, write: bool) -> None:
        """A BEGIN, sent with the transaction's first statement. A write (IMMEDIATE, EXCLUSIVE) takes the
        file's gate first; SQLite's busy handler still waits (on the worker thread) for writers that do
        not use the gate (another program, a migration)."""
        if write and self.gate is not None:
            await self.gate.acquire(time.monotonic() + self.busy_timeout_ms / 1000)
        self._begin = sql

    async def run(self, function: Callable[..., _T], *args: Any) -> _T:
        """A statement's hop, carrying the pending BEGIN (``function`` takes it as its last argument); no
        hop inside a unit of work running on this connection's thread."""
        begin, self._begin = self._begin, None
        if self.worker.here():
            return function(*args, begin)
        future = self.worker.submit(function, *args, begin)
        try:
            return await asyncio.wrap_future(future)
        except BaseException:
            if future.cancelled():  # the BEGIN and the statement never ran: the transaction is still unbegun
                self._begin = begin
            raise

    def _end_unbegun(self) -> None:
        """A transaction that never reached the database ends without a hop: only its gate is given back."""
        self._begin = None
        if self.gate is not None and self.worker.idle() and not self._in_transaction:
            self.gate.release()

    def _end(self, how: Callable[[], None]) -> None:
        try:
            how()
        finally:
            self.release_gate_if_done()

    async def _finish(self, how: Callable[[], None]) -> None:
        """COMMIT or ROLLBACK: one hop, or none when no transaction is open (nothing was sent since its
        BEGIN, or the pool's reset of a connection whose transaction already ended)."""
        unbegun = self._begin is not None
        if (unbegun or not self._in_transaction) and self.worker.idle():
            self._end_unbegun()
            return
        self._begin = None
        await self.worker.call(self._end, how)

    async def commit(self) -> None:
        await self._finish(self.sqlite.commit)

    async def rollback(self) -> None:
        await self._finish(self.sqlite.rollback)

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        await self.worker.call(partial_call(self.sqlite.create_function, *args, **kwargs))

    def _close(self) -> None:
        try:
            self.sqlite.close()
        finally:
            if self.gate is not None:
                self.gate.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.worker.here():  # SQLAlchemy closing it inside a unit of work: nothing can wait for this thread
            self.worker.stop()
            self._close()
            return
        future = self.worker.submit(self._close)
        self.worker.stop()
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wrap_future(future)

    def stop(self) -> None:
        """A forced close (SQLAlchemy terminating the connection): queued behind any running statement,
        awaited by nobody. The gate is given back at once: the transaction is abandoned."""
        if self.gate is not None:
            self.gate.release()
        if not self._closed:
            self._closed = True
            self.worker.submit(self._close)
            self.worker.stop()


def partial_call(function: Callable[..., _T], *args: Any, **kwargs: Any) -> Callable[[], _T]:
    return lambda: function(*args, **kwargs)


class AdaptedConnection(AsyncAdapt_terminate, AsyncAdapt_dbapi_connection):
    """SQLAlchemy's adapter for an asyncio DBAPI connection, with what its SQLite dialect calls besides
    (``create_function``, ``isolation_level``) and terminate support."""

    __slots__ = ()

    @property
    def isolation_level(self) -> str | None:
        from sqlalchemy.util import await_

        sqlite = self.driver.sqlite
        level: str | None = await_(self.driver.worker.call(partial_call(getattr, sqlite, "isolation_level")))
        return level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        from sqlalchemy.util import await_

        driver = self.driver
        await_(driver.worker.call(partial_call(setattr, driver.sqlite, "isolation_level", value)))

    @property
    def driver(self) -> Connection:
        connection: Connection = self.driver_connection
        return connection

    def create_function(self, *args: Any, **kwargs: Any) -> None:
        from sqlalchemy.util import await_

        await_(self.driver.create_function(*args, **kwargs))

    async def _terminate_graceful_close(self) -> None:
        await self.driver.close()

    def _terminate_force_close(self) -> None:
        self.driver.stop()


_SQLITE3_NAMES = (
    *("DatabaseError", "Error", "IntegrityError", "InterfaceError", "NotSupportedError", "OperationalError"),
    *("ProgrammingError", "InternalError", "DataError", "Warning", "Binary", "PARSE_COLNAMES", "PARSE_DECLTYPES"),
    *("sqlite_version", "sqlite_version_info", "apilevel", "threadsafety"),
)


def dbapi_module(database: str, **options: Any) -> Any:
    """The DBAPI module for ``create_async_engine(module=…)``: sqlite3's names, with a ``connect`` that
    opens ``database`` with ``options`` (what the dialect makes of the engine's URL, worked out once by
    the engine), each connection on its own thread."""
    from sqlalchemy.util import await_

    def connect(*_url_args: Any, **_url_options: Any) -> AdaptedConnection:
        connection = await_(Connection.open(database, **options))
        return AdaptedConnection(module, cast("AsyncIODBAPIConnection", connection))

    module = SimpleNamespace(**{name: getattr(sqlite3, name) for name in _SQLITE3_NAMES})
    module.sqlite = sqlite3
    module.paramstyle = "qmark"
    module.connect = connect
    module.has_stop = True
    module.exceptions_module = sqlite3
    return module
