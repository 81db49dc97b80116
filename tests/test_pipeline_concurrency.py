"""Concurrent writers on one process: no lost update, exact versions, one winner per expected_version."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from mcp import Client
from sqlalchemy import func, select

from mcp_server.db.engine import Database
from mcp_server.models import ProcessExecution
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import call_ok

pytestmark = pytest.mark.anyio


async def test_two_writers_with_the_same_expected_version_one_wins(settings: Settings, client: Client) -> None:
    await call_ok(client, "define_process", process_id="a", name="A")
    project = (await call_ok(client, "create_project", name="race"))["id"]
    await call_ok(client, "record_execution", project_id=project, process_id="a", output_data={"v": 0})
    results: list[Any] = []
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(build_server(settings))) for _ in range(2)]

        async def write(c: Client, value: int) -> None:
            arguments = {"project_id": project, "process_id": "a", "output_data": {"v": value}, "expected_version": 1}
            results.append(await c.call_tool("record_execution", arguments))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for i, c in enumerate(clients):
                    group.start_soon(write, c, i + 1)
    winners = [r for r in results if not r.is_error]
    losers = [r for r in results if r.is_error]
    assert len(winners) == 1 and len(losers) == 1
    assert "conflict" in losers[0].content[0].text and "version 2" in losers[0].content[0].text
    state = await call_ok(client, "get_process_state", project_id=project, process_id="a")
    assert state["version"] == 2


async def test_fifty_concurrent_records_lose_nothing(settings: Settings, client: Client, db: Database) -> None:
    await call_ok(client, "define_process", process_id="a", name="A")
    await call_ok(client, "define_process", process_id="b", name="B", depends_on=["a"])
    project = (await call_ok(client, "create_project", name="many"))["id"]
    await call_ok(client, "record_execution", project_id=project, process_id="a", output_data={"v": -1})
    await call_ok(client, "record_execution", project_id=project, process_id="b", output_data={"v": -1})
    errors: list[str] = []
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(build_server(settings))) for _ in range(5)]

        async def writer(c: Client, worker: int) -> None:
            for i in range(10):
                arguments = {"project_id": project, "process_id": "a", "output_data": {"w": worker, "i": i}}
                result = await c.call_tool("record_execution", arguments)
                if result.is_error:
                    errors.append(result.content[0].text)  # type: ignore[union-attr]

        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for worker, c in enumerate(clients):
                    group.start_soon(writer, c, worker)
    assert errors == []
    state = await call_ok(client, "get_process_state", project_id=project, process_id="a")
    assert state["version"] == 1 + 50
    downstream = await call_ok(client, "get_process_state", project_id=project, process_id="b")
    assert downstream["state"] == "stale" and downstream["version"] == 2  # went stale once, then stayed stale
    async with db.unit_of_work(write=False) as session:
        stored = await session.scalar(
            select(func.count()).select_from(ProcessExecution).where(ProcessExecution.process_id == "a")
        )
    assert stored == 51
