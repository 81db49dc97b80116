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


async def _catalogue_is_sound(client: Client) -> set[str]:
    """list_processes answers (it orders the DAG, so a cycle would make it fail) and no dependency dangles."""
    items = (await call_ok(client, "list_processes", include_schemas=False))["items"]
    ids = {item["id"] for item in items}
    for item in items:
        assert set(item["depends_on"]) <= ids, item
    return ids


Call = tuple[Client, str, dict[str, Any]]


async def _race(*calls: Call) -> list[str]:
    """Run the calls at once; each answers "ok" or its error text."""
    texts = [""] * len(calls)

    async def run(index: int, c: Client, tool: str, arguments: dict[str, Any]) -> None:
        result = await c.call_tool(tool, arguments)
        texts[index] = result.content[0].text if result.is_error else "ok"  # type: ignore[union-attr]

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for index, call in enumerate(calls):
                group.start_soon(run, index, *call)
    return texts


async def test_concurrent_definitions_never_store_a_cycle_or_a_dangling_dependency(
    settings: Settings, client: Client
) -> None:
    """Two servers (each its own connection pool) race define x→y against define y→x, and define z→w
    against delete w. Whatever the interleaving, the catalogue stays a DAG with no missing dependency."""
    async with AsyncExitStack() as stack:
        first, second = [await stack.enter_async_context(Client(build_server(settings))) for _ in range(2)]
        for round_ in range(15):
            x, y, z, w = (f"{name}{round_}" for name in "xyzw")
            for name in (x, y, w):
                await call_ok(first, "define_process", process_id=name, name=name)
            x_ok, y_ok = (
                text == "ok"
                for text in await _race(
                    (first, "define_process", {"process_id": x, "name": x, "depends_on": [y]}),
                    (second, "define_process", {"process_id": y, "name": y, "depends_on": [x]}),
                )
            )
            z_ok, w_deleted = (
                text == "ok"
                for text in await _race(
                    (first, "define_process", {"process_id": z, "name": z, "depends_on": [w]}),
                    (second, "delete_process", {"process_id": w}),
                )
            )
            assert not (x_ok and y_ok), f"round {round_}: both halves of a cycle were stored"
            assert x_ok or y_ok
            assert z_ok != w_deleted, f"round {round_}: {z_ok}, {w_deleted}"
            ids = await _catalogue_is_sound(client)
            assert (z in ids) == z_ok and (w in ids) == (not w_deleted)


async def test_an_execution_racing_the_deletion_of_its_step_never_ends_internal(
    settings: Settings, client: Client
) -> None:
    project = (await call_ok(client, "create_project", name="race delete"))["id"]
    async with AsyncExitStack() as stack:
        first, second = [await stack.enter_async_context(Client(build_server(settings))) for _ in range(2)]
        for round_ in range(15):
            step = f"doomed{round_}"
            await call_ok(first, "define_process", process_id=step, name=step)
            start, delete = await _race(
                (first, "start_execution", {"project_id": project, "process_id": step}),
                (second, "delete_process", {"process_id": step}),
            )
            assert "internal" not in start and "internal" not in delete, (start, delete)
            assert (start == "ok") != (delete == "ok"), (start, delete)


async def test_concurrent_definitions_of_one_new_id_never_end_internal(settings: Settings, client: Client) -> None:
    """Four servers define the same new process at once, with different names: every call succeeds (the
    first creates it, the others replace it) or ends as a conflict, never as an internal error, and one
    definition is stored."""
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(Client(build_server(settings))) for _ in range(4)]
        for round_ in range(10):
            step = f"fresh{round_}"
            texts = await _race(
                *(
                    (server, "define_process", {"process_id": step, "name": f"{step} by {index}"})
                    for index, server in enumerate(servers)
                )
            )
            assert all(text == "ok" or "conflict" in text for text in texts), texts
            listed = await call_ok(client, "list_processes", page_size=100)
            assert [item["id"] for item in listed["items"]].count(step) == 1


async def test_a_redefinition_racing_records_is_seen_by_the_next_record(settings: Settings, client: Client) -> None:
    """A server records a step over and over while another one gives the step an output schema: once the
    redefinition has returned, every record is checked against the new schema (no server keeps using
    the catalogue it read before)."""
    project = (await call_ok(client, "create_project", name="schema race"))["id"]
    await call_ok(client, "define_process", process_id="shaped", name="shaped")
    async with AsyncExitStack() as stack:
        writer, definer = [await stack.enter_async_context(Client(build_server(settings))) for _ in range(2)]
        for n in range(5):
            await call_ok(writer, "record_execution", project_id=project, process_id="shaped", output_data={"n": n})
        schema = {"type": "object", "required": ["answer"]}
        texts = await _race(
            (writer, "record_execution", {"project_id": project, "process_id": "shaped", "output_data": {"n": 5}}),
            (definer, "define_process", {"process_id": "shaped", "name": "shaped", "output_schema": schema}),
        )
        assert all(text == "ok" or "schema_violation" in text for text in texts), texts
        refused = await writer.call_tool(
            "record_execution", {"project_id": project, "process_id": "shaped", "output_data": {"n": 6}}
        )
        assert refused.is_error and "schema_violation" in refused.content[0].text  # type: ignore[union-attr]
        await call_ok(writer, "record_execution", project_id=project, process_id="shaped", output_data={"answer": 1})


async def test_one_idempotency_key_raced_from_many_servers_ends_ok_once_and_conflict_otherwise(
    settings: Settings, client: Client, db: Database
) -> None:
    """Four servers record at once with one idempotency key, each for its own project (so no project lock
    orders them): one call is stored; every other one ends as `conflict` (the key is taken, by another
    call's arguments), never `internal`, and writes nothing."""
    await call_ok(client, "define_process", process_id="s", name="S")
    projects = [(await call_ok(client, "create_project", name=f"p{n}"))["id"] for n in range(4)]
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(Client(build_server(settings))) for _ in range(4)]
        for round_ in range(8):
            key = f"shared-{round_}"
            texts = await _race(
                *(
                    (
                        server,
                        "record_execution",
                        {"project_id": project, "process_id": "s", "output_data": {"n": n}, "idempotency_key": key},
                    )
                    for n, (server, project) in enumerate(zip(servers, projects, strict=True))
                )
            )
            assert texts.count("ok") == 1, texts
            assert all(text == "ok" or "conflict" in text for text in texts), texts
            async with db.unit_of_work(write=False) as session:
                stored = await session.scalar(
                    select(func.count()).select_from(ProcessExecution).where(ProcessExecution.idempotency_key == key)
                )
            assert stored == 1
    async with db.unit_of_work(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(ProcessExecution)) == 8
