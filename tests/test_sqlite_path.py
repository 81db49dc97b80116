"""The SQLite path: a bounded WAL, reads that go on while a long write runs, and cancellation that works.

See docs/design.md ("SQLite"): every statement runs on the connection's own thread, SQLite's own
checkpoints keep the WAL bounded, and a cancelled call is not executed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_server.db.engine import Database
from mcp_server.db.migrate import upgrade_to_head
from tests.helpers import call_ok

pytestmark = pytest.mark.anyio

SCRIPT = Path(sys.executable).parent / "pipeline-state-mcp"

# One short-lived writer: 150 commits through the server's own engine, each a project row with 4 KB of
# metadata (several pages of WAL per commit), then it exits.
WRITER = """
import asyncio, sys
from mcp_server.db.engine import Database
from mcp_server.repositories import ProjectRepository

async def main(url):
    db = Database.connect(url)
    try:
        for number in range(150):
            async with db.unit_of_work() as session:
                await ProjectRepository(session).create(name=f"w{number}", metadata={"pad": "x" * 4096})
    finally:
        await db.dispose()

asyncio.run(main(sys.argv[1]))
"""

WAL_BOUND = 16 * 1024 * 1024


async def test_short_lived_writers_with_a_reader_open_leave_the_wal_bounded(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    url = f"sqlite:///{database}"
    await upgrade_to_head(url)
    reader = sqlite3.connect(database)  # open the whole time, as a dashboard or a second server would be
    try:
        assert reader.execute("SELECT count(*) FROM projects").fetchone() == (0,)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        with anyio.fail_after(600):
            for _ in range(5):  # 20 processes, 4 at a time
                async with anyio.create_task_group() as group:
                    for _ in range(4):
                        group.start_soon(partial(anyio.run_process, [sys.executable, "-c", WRITER, url], env=env))
        assert reader.execute("SELECT count(*) FROM projects").fetchone() == (20 * 150,)
        # 3,000 commits of several pages each wrote far more than the bound through the WAL.
        wal = database.with_name("state.db-wal").stat().st_size
    finally:
        reader.close()
    assert wal <= WAL_BOUND, f"WAL is {wal / 1_048_576:.1f} MiB"


def _catalogue(steps: int) -> list[dict[str, Any]]:
    schema = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 100}}, "required": ["text"]}
    return [
        {
            "process_id": f"s{number}",
            "name": f"Step {number}",
            **({"depends_on": [f"s{number - 1}"]} if number % 10 else {}),
            "input_schema": schema,
            "output_schema": schema,
        }
        for number in range(steps)
    ]


async def test_reads_are_answered_while_another_client_applies_a_2000_step_pipeline(client: Client) -> None:
    """The apply's statements run on a worker thread: the event loop keeps serving the other client.
    (How fast: the benchmark's read_during_apply figure; here only that reads go on meanwhile.)"""
    await call_ok(client, "list_pipelines")
    served_during: list[float] = []
    done = anyio.Event()

    async def apply() -> None:
        await call_ok(client, "apply_pipeline", pipeline_id="big", processes=_catalogue(2000))
        done.set()

    async def read() -> None:
        while not done.is_set():
            started = anyio.current_time()
            await call_ok(client, "list_pipelines")
            if not done.is_set():
                served_during.append(anyio.current_time() - started)
            await anyio.sleep(0.01)

    with anyio.fail_after(240):
        async with anyio.create_task_group() as group:
            group.start_soon(apply)
            group.start_soon(read)
    listed = await call_ok(client, "list_pipelines")
    assert {"pipeline_id": "big", "processes": 2000}.items() <= next(
        item for item in listed["items"] if item["pipeline_id"] == "big"
    ).items()
    assert len(served_during) >= 5, f"only {len(served_during)} reads were answered during the apply"


def _message(**fields: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", **fields}).encode() + b"\n"


async def _responses(stream: Any, ids: set[int], seen: dict[int, Any]) -> None:
    buffer = b""
    while not ids <= set(seen):
        buffer += await stream.receive()
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            message = json.loads(line)
            if "id" in message and ("result" in message or "error" in message):
                seen[message["id"]] = message


def _call(number: int, tool: str, **arguments: Any) -> bytes:
    return _message(id=number, method="tools/call", params={"name": tool, "arguments": arguments})


@pytest.mark.parametrize("held", ["the writers' queue", "the SQLite write lock"])
async def test_a_cancelled_call_is_not_executed_and_the_server_exits_cleanly(tmp_path: Path, held: str) -> None:
    """A write waiting for the lock is cancelled by its client (notifications/cancelled): it never
    runs, the server goes on serving, and it exits with 0 when stdin closes."""
    database = tmp_path / "state.db"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPELINE_STATE_")}
    env |= {"PIPELINE_STATE_DATABASE_URL": f"sqlite:///{database}", "XDG_DATA_HOME": str(tmp_path / "data")}
    initialize = {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "cancel-test", "version": "0"},
    }
    seen: dict[int, Any] = {}
    with anyio.fail_after(90):
        process = await anyio.open_process([str(SCRIPT)], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
        async with process:
            assert process.stdin is not None and process.stdout is not None
            await process.stdin.send(_message(id=0, method="initialize", params=initialize))
            await process.stdin.send(_message(method="notifications/initialized"))
            await process.stdin.send(_call(1, "list_projects"))
            await _responses(process.stdout, {0, 1}, seen)
            lock = _hold(database, held)
            try:
                await process.stdin.send(_call(2, "create_project", name="cancelled"))
                await anyio.sleep(1.0)  # the call is parked on the lock
                await process.stdin.send(
                    _message(method="notifications/cancelled", params={"requestId": 2, "reason": "test"})
                )
                await anyio.sleep(0.5)
            finally:
                lock.close()
            await process.stdin.send(_call(3, "create_project", name="after"))
            await _responses(process.stdout, {3}, seen)
            await process.stdin.send(_call(4, "list_projects"))
            await _responses(process.stdout, {4}, seen)
            await process.stdin.aclose()
            async for _ in process.stdout:
                pass
            assert await process.wait() == 0
    names = [item["name"] for item in seen[4]["result"]["structuredContent"]["items"]]
    assert names == ["after"]
    assert 2 not in seen  # a cancelled request gets no response
    with sqlite3.connect(database) as check:
        assert check.execute("SELECT name FROM projects").fetchall() == [("after",)]


class _Held:
    def __init__(self, close: Any) -> None:
        self.close = close


def _hold(database: Path, what: str) -> _Held:
    """Hold the file's writers' queue (the gate beside it) or SQLite's own write lock."""
    if what == "the writers' queue":
        import fcntl

        fd = os.open(f"{database}-writers", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _Held(lambda: os.close(fd))
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")

    def release() -> None:
        connection.execute("ROLLBACK")
        connection.close()

    return _Held(release)


# A statement that runs for a while (a recursive CTE that counts to three million).
SLOW_COUNT = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3000000) SELECT count(*) FROM c"


@asynccontextmanager
async def ticking() -> AsyncIterator[Callable[[], int]]:
    """While the block runs, a task ticks on the event loop every 5 ms; yields the count so far."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as group:
        group.start_soon(tick)
        yield lambda: ticks
        group.cancel_scope.cancel()


async def test_a_statement_runs_off_the_event_loop(tmp_path: Path) -> None:
    """A slow statement inside a write transaction, which holds the write lock, leaves the loop free:
    ticks on the loop go on while it runs."""
    from sqlalchemy import text

    db = Database.connect(f"sqlite:///{tmp_path / 'slow.db'}")
    try:
        async with ticking() as ticks, db.unit_of_work() as session:
            await session.execute(text("SELECT 1"))  # connected, and the write lock taken
            before = ticks()
            assert (await session.execute(text(SLOW_COUNT))).scalar_one() == 3_000_000
            during = ticks() - before
    finally:
        await db.dispose()
    assert during >= 3, f"the loop ticked {during} times while the statement ran"


async def test_a_unit_of_work_runs_whole_on_its_connections_thread(tmp_path: Path) -> None:
    """Database.run: the unit's statements all run on one thread that is not the event loop's, the unit
    costs the loop one hop (the connection's worker takes one call for it), and the loop ticks on while a
    slow statement inside it runs."""
    import threading

    from sqlalchemy import event, text

    from mcp_server.db import sqlite_driver

    db = Database.connect(f"sqlite:///{tmp_path / 'unit.db'}")
    threads: list[int] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *_: threads.append(threading.get_ident()))
    calls: list[int] = []

    async def work(session: Any) -> int:
        driver = (await (await session.connection()).get_raw_connection()).driver_connection
        assert isinstance(driver, sqlite_driver.Connection)
        calls.append(driver.worker.submitted)
        await session.execute(text("SELECT 1"))
        count = (await session.execute(text(SLOW_COUNT))).scalar_one()
        await session.execute(text("SELECT 2"))
        calls.append(driver.worker.submitted)
        return int(count)

    try:
        await db.run(lambda session: session.execute(text("SELECT 0")))  # the connection is open
        threads.clear()
        async with ticking() as ticks:
            before = ticks()
            assert await db.run(work) == 3_000_000
            during = ticks() - before
    finally:
        await db.dispose()
    assert len(threads) >= 3 and len(set(threads)) == 1 and threads[0] != threading.get_ident(), threads
    assert calls[0] == calls[1], "a statement inside the unit went through the worker's queue"
    assert during >= 3, f"the loop ticked {during} times while the unit ran"


DEFERRED = """
import sys, threading
from mcp_server.lazy import lazy_module

wanted = {"executions": "record", "definitions": "apply", "costs": "report_cost"}
modules = {name: lazy_module(f"mcp_server.services.{name}") for name in wanted}
assert "sqlalchemy" not in sys.modules, "the database layer was imported before first use"
start, errors = threading.Barrier(12), []

def read(name):
    start.wait()
    try:
        assert callable(getattr(modules[name], wanted[name]))
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=read, args=(list(wanted)[n % 3],)) for n in range(12)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(errors)
sys.exit(1 if errors else 0)
"""


def test_deferred_service_modules_load_safely_from_many_threads_at_once() -> None:
    """Units of work run on the connections' threads, so a tool's first call may load its service module
    from several threads at once: each sees the whole module."""
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", DEFERRED], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
