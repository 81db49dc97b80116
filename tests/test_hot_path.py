"""The write path of issue 16: what a record reads and writes, the change tokens that let servers keep a
catalogue and prices in memory, and the SQLite driver that runs a write transaction's statements inline
without ever blocking the event loop on another connection's lock."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from sqlalchemy import event, text

from mcp_server.db.engine import Database
from mcp_server.db.migrate import upgrade_to_head
from mcp_server.repositories import PriceRepository
from mcp_server.server import build_server
from mcp_server.services.kept import Kept
from mcp_server.settings import Settings
from tests.helpers import call_ok

pytestmark = pytest.mark.anyio

USAGE = {"provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 1000, "completion_tokens": 100}


class Statements:
    """The SQL statements a database runs while listening."""

    def __init__(self, db: Database) -> None:
        self.engine = db.engine.sync_engine
        self.seen: list[str] = []

    def _add(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.seen.append(" ".join(statement.split()))

    def __enter__(self) -> list[str]:
        self.seen.clear()
        event.listen(self.engine, "before_cursor_execute", self._add)
        return self.seen

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._add)


async def test_a_record_reads_its_neighbourhood_not_the_catalogue(db: Database, db_url: str) -> None:
    """On a 300-step catalogue, once it is known, a one-call record with usage runs the same statements as on
    a small one: no definition is read, only the state rows around the step, and a handful of writes."""
    steps = [
        {"process_id": f"p{i:03d}", "name": f"P{i}", "depends_on": [f"p{i - 1:03d}"] if i % 10 else []}
        for i in range(300)
    ]
    async with Client(build_server(Settings(database_url=db_url, auto_migrate=False), database=db)) as client:
        await call_ok(client, "apply_pipeline", processes=steps)
        project = (await call_ok(client, "create_project", name="hot"))["id"]
        for head in range(0, 300, 10):  # a state row in every chain
            await call_ok(client, "record_execution", project_id=project, process_id=f"p{head:03d}", output_data={})
        await call_ok(client, "record_execution", project_id=project, process_id="p001", output_data={"n": 0})
        for n in range(2):  # the first use of a step reads its schemas, the first cost of a model its team price
            with Statements(db) as seen:
                await call_ok(
                    client, "record_execution", project_id=project, process_id="p002", output_data={"n": n}, usage=USAGE
                )
    assert not any("process_definitions" in s or "llm_prices" in s for s in seen), seen
    # SQLite's BEGIN IMMEDIATE or PostgreSQL's locks; the project with its change tokens; the state rows
    # around p002; then the writes: execution, state, cost row, project totals (nothing downstream of p002
    # is completed here, so no cascade), and the execution whose completed output this one replaced marked
    # superseded (one UPDATE … RETURNING: a replacement is never silent).
    assert len(seen) == 8, seen
    states = next(s for s in seen if "FROM process_states" in s)
    assert "IN (" in states  # the rows around p002, not the project's 31 rows


async def test_a_price_set_elsewhere_prices_the_next_record(db: Database, db_url: str) -> None:
    """Prices are kept in memory too: a team price set by another process (the CLI) applies to the very next
    cost this server logs, and removing it brings genai-prices back."""
    async with Client(build_server(Settings(database_url=db_url, auto_migrate=False), database=db)) as client:
        await call_ok(client, "define_process", process_id="step", name="Step")
        project = (await call_ok(client, "create_project", name="priced"))["id"]

        async def record(n: int) -> dict[str, Any]:
            reply = await call_ok(
                client, "record_execution", project_id=project, process_id="step", output_data={"n": n}, usage=USAGE
            )
            cost: dict[str, Any] = reply["cost"]
            return cost

        assert (await record(0))["cost_source"] == "computed"
        other = Database.connect(db_url)
        try:
            async with other.unit_of_work() as session:
                await PriceRepository(session).put(
                    "openai", "gpt-4o-mini", actor="cli", input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2")
                )
            custom = await record(1)
            assert custom["cost_source"] == "custom"
            assert Decimal(custom["cost_usd"]) == Decimal("0.0012")  # 1000 × 1/1e6 + 100 × 2/1e6
            async with other.unit_of_work() as session:
                await PriceRepository(session).remove("openai", "gpt-4o-mini")
            assert (await record(2))["cost_source"] == "computed"
        finally:
            await other.dispose()


async def test_waiting_for_the_write_lock_never_blocks_the_event_loop(tmp_path: Path) -> None:
    """A writer that must wait for another connection's write lock waits off the event loop (the writers'
    queue on a worker thread, SQLite's busy handler on its connection's thread), so the loop keeps
    running meanwhile, and it goes through as soon as the lock is free."""
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    await upgrade_to_head(url)
    holder, waiter = Database.connect(url), Database.connect(url)
    ticks: list[float] = []
    done: list[float] = []
    try:
        async with holder.unit_of_work() as held:
            await held.execute(text("UPDATE revisions SET token = token"))  # holds the write lock from here

            async def write() -> None:
                async with waiter.unit_of_work() as session:
                    await session.execute(text("UPDATE revisions SET token = token"))
                done.append(time.monotonic())

            async def tick() -> None:
                while not done:
                    ticks.append(time.monotonic())
                    await anyio.sleep(0.01)

            async with anyio.create_task_group() as group:
                group.start_soon(write)
                group.start_soon(tick)
                await anyio.sleep(0.3)
                assert not done, "the second writer did not wait for the lock"
                released = time.monotonic()
                await held.commit()
        assert done and done[0] >= released
        assert len([t for t in ticks if t < released]) >= 15, "the event loop stalled while a writer waited"
    finally:
        await holder.dispose()
        await waiter.dispose()


async def test_a_large_read_streams_past_the_first_rows(tmp_path: Path) -> None:
    """A statement reads its first rows with it; the rest come on demand, whole or in pieces."""
    url = f"sqlite:///{tmp_path / 'rows.db'}"
    database = Database.connect(url)
    try:
        async with database.unit_of_work() as session:
            await session.execute(text("CREATE TABLE numbers (n INTEGER)"))
            await session.execute(text("INSERT INTO numbers (n) VALUES (:n)"), [{"n": n} for n in range(2500)])
        async with database.unit_of_work(write=False) as session:
            assert [row[0] for row in await session.execute(text("SELECT n FROM numbers ORDER BY n"))] == list(
                range(2500)
            )
            streamed = await session.stream(text("SELECT n FROM numbers ORDER BY n"))
            pieces = [len(chunk) async for chunk in streamed.partitions(700)]
            assert pieces == [700, 700, 700, 400]
    finally:
        await database.dispose()


def test_kept_copies_are_used_only_on_the_same_basis() -> None:
    kept: Kept[str, int | None] = Kept(2)
    kept.put("a", "t1", None)
    assert kept.get("a", "t1") == (None,)  # a kept None is a hit
    assert kept.get("a", "t2") is None and kept.get("a", None) is None
    kept.put("b", None, 1)  # no basis: never kept
    assert kept.get("b", None) is None
    kept.put("b", "t", 2)
    kept.put("c", "t", 3)  # over size: the least recently used ("a") goes
    assert kept.get("a", "t1") is None and kept.get("b", "t") == (2,) and kept.get("c", "t") == (3,)
