"""Many server processes on one database: the real console script over stdio, started together.

One server process per client session is the normal case, so eight of them start at the same moment on a
fresh database (the schema is migrated exactly once), then write at once: 8 processes x 100
record_execution calls with usage on one shared project (pipeline `draft -> review`, each worker
alternating the two steps, so every draft also invalidates review). Nothing may fail, nothing acknowledged
may be missing, every version must count its state changes exactly and the cost sum must be exact.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import Implementation
from sqlalchemy import func, select, text

from mcp_server.db.engine import Database
from mcp_server.models import LLMMetrics, ProcessExecution
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import call_ok

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

log = logging.getLogger(__name__)

SCRIPT = Path(sys.executable).with_name("pipeline-state-mcp")
PROCESSES = 8
# Every call of every process overlaps the others on one project's two state rows: 800 contended writes
# show a lost update or a repeated version as surely as 2,000 (the benchmark measures throughput).
CALLS_PER_PROCESS = 100
COST = Decimal("0.0001")  # reported explicitly, so the expected sum is exact
USAGE = {"provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 100, "completion_tokens": 20}
FORBIDDEN_IN_LOGS = ("Traceback", "database is locked", "ERROR")


def server_params(db_url: str, tmp_path: Path) -> StdioServerParameters:
    env = {"PIPELINE_STATE_DATABASE_URL": db_url, "XDG_DATA_HOME": str(tmp_path / "data")}
    return StdioServerParameters(command=str(SCRIPT), env=env, cwd=str(tmp_path))


async def on_two_servers(
    db_url: str, tmp_path: Path, work: Callable[[Client, int], Awaitable[None]], *, within: float = 240
) -> None:
    """Two server processes on one database, both connected before either works: ``work(worker, server)``
    runs on each at once (server 0 and 1); their stderr goes to server-<n>.log in ``tmp_path``."""
    ready = anyio.Event()
    joined = 0

    async def one_server(server: int) -> None:
        nonlocal joined
        with (tmp_path / f"server-{server}.log").open("w") as errlog:
            async with Client(stdio_client(server_params(db_url, tmp_path), errlog=errlog)) as worker:
                joined += 1
                if joined == 2:
                    ready.set()
                await ready.wait()
                await work(worker, server)

    with anyio.fail_after(within):
        async with anyio.create_task_group() as group:
            for server in range(2):
                group.start_soon(one_server, server)


Work = Callable[[int, Client], Awaitable[None]]


async def run_processes(db_url: str, tmp_path: Path, work: Work, *, barrier: bool) -> list[str]:
    """Start PROCESSES servers at once, each with its own client; run ``work`` in each; return their logs.

    With ``barrier`` the work starts only once every server has answered initialize, so that all
    writers overlap. Each client lives in its own task (its transport's task group must exit there).
    """
    ready = 0
    all_ready = anyio.Event()
    log_paths = [tmp_path / f"server-{index}.log" for index in range(PROCESSES)]

    async def one(index: int) -> None:
        nonlocal ready
        with log_paths[index].open("w") as errlog:
            transport = stdio_client(server_params(db_url, tmp_path), errlog=errlog)
            async with Client(transport, client_info=Implementation(name=f"worker-{index}", version="1")) as client:
                ready += 1
                if ready == PROCESSES:
                    all_ready.set()
                if barrier:
                    await all_ready.wait()
                await work(index, client)

    with anyio.fail_after(240):
        async with anyio.create_task_group() as group:
            for index in range(PROCESSES):
                group.start_soon(one, index)
    return [path.read_text() for path in log_paths]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def assert_clean(logs: list[str]) -> None:
    for index, text_ in enumerate(logs):
        for forbidden in FORBIDDEN_IN_LOGS:
            assert forbidden not in text_, f"server {index} logged {forbidden!r}:\n{text_[-3000:]}"


@asynccontextmanager
async def opened(db_url: str) -> AsyncIterator[Database]:
    database = Database.connect(db_url)
    try:
        yield database
    finally:
        await database.dispose()


async def start_together_on_a_fresh_database(db_url: str, tmp_path: Path) -> None:
    served: dict[int, str] = {}

    async def work(index: int, client: Client) -> None:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"record_execution", "get_cost_summary"} <= names
        served[index] = (await call_ok(client, "create_project", name=f"from process {index}"))["id"]

    started = time.perf_counter()
    logs = await run_processes(db_url, tmp_path, work, barrier=False)
    log.info("%d processes started and served in %.1f s", PROCESSES, time.perf_counter() - started)
    assert sorted(served) == list(range(PROCESSES))
    assert_clean(logs)
    # The migration ran once: one process logged it, the others found the schema at head.
    assert sum("database schema migrated to" in text_ for text_ in logs) == 1, logs
    async with opened(db_url) as database, database.unit_of_work(write=False) as session:
        versions = (await session.execute(text("SELECT version_num FROM alembic_version"))).all()
        projects = await session.scalar(text("SELECT count(*) FROM projects"))
    assert len(versions) == 1
    assert projects == PROCESSES


async def test_eight_processes_starting_at_once_on_a_fresh_sqlite_file_migrate_once_and_all_serve(
    tmp_path: Path,
) -> None:
    database = tmp_path / "fresh" / "state.db"
    assert not database.exists()
    await start_together_on_a_fresh_database(f"sqlite:///{database}", tmp_path)


async def test_eight_processes_starting_at_once_on_a_fresh_postgresql_database_migrate_once_and_all_serve(
    fresh_pg_database: str, tmp_path: Path
) -> None:
    await start_together_on_a_fresh_database(fresh_pg_database, tmp_path)


async def test_eight_processes_writing_at_once_lose_nothing_and_count_every_version(
    db_url: str, tmp_path: Path
) -> None:
    async with Client(build_server(Settings(database_url=db_url, auto_migrate=False))) as setup:
        await call_ok(setup, "define_process", process_id="draft", name="Draft")
        await call_ok(setup, "define_process", process_id="review", name="Review", depends_on=["draft"])
        project = (await call_ok(setup, "create_project", name="shared by eight processes"))["id"]
        seed = await call_ok(setup, "record_execution", project_id=project, process_id="draft", output_data={})

    replies: list[dict[str, Any]] = []
    errors: list[str] = []

    async def work(index: int, client: Client) -> None:
        for number in range(CALLS_PER_PROCESS):
            step = "draft" if number % 2 == 0 else "review"
            arguments = {
                "project_id": project,
                "process_id": step,
                "output_data": {"worker": index, "n": number},
                "usage": {**USAGE, "cost_usd": str(COST)},
            }
            try:
                result = await client.call_tool("record_execution", arguments)
            except Exception as exc:  # noqa: BLE001 - any failure counts, and the run goes on
                errors.append(f"worker {index} call {number}: {exc!r}")
                continue
            if result.is_error or result.structured_content is None:
                errors.append(f"worker {index} call {number}: {result.content}")
            else:
                replies.append(result.structured_content)

    started, own_cpu, servers_cpu = time.perf_counter(), time.process_time(), _children_cpu()
    logs = await run_processes(db_url, tmp_path, work, barrier=True)
    elapsed = time.perf_counter() - started
    total = PROCESSES * CALLS_PER_PROCESS
    log.info(
        "%d processes x %d calls: %.1f s, %.0f calls/s; CPU: clients (this process) %.1f s, servers %.1f s",
        PROCESSES,
        CALLS_PER_PROCESS,
        elapsed,
        total / elapsed,
        time.process_time() - own_cpu,
        _children_cpu() - servers_cpu,
    )

    assert errors == []
    assert len(replies) == total
    assert_clean(logs)

    # Every acknowledged execution and cost row is stored, and nothing else was.
    acknowledged = {reply["execution"]["id"] for reply in replies}
    costs = {reply["cost"]["id"] for reply in replies}
    assert len(acknowledged) == len(costs) == total
    async with opened(db_url) as database, database.unit_of_work(write=False) as session:
        stored = {str(row) for row in await session.scalars(select(ProcessExecution.id))}
        stored_costs = {str(row) for row in await session.scalars(select(LLMMetrics.id))}
        linked = await session.scalar(
            select(func.count()).select_from(LLMMetrics).where(LLMMetrics.execution_id.is_not(None))
        )
    assert stored == acknowledged | {seed["execution"]["id"]}
    assert stored_costs == costs
    assert linked == total

    # Versions: draft changes once per record; review once per record and once per invalidation that
    # hit it (a draft reply lists it). Each version number was handed out exactly once.
    draft_versions = [reply["state"]["version"] for reply in replies if reply["state"]["process_id"] == "draft"]
    review_versions = [reply["state"]["version"] for reply in replies if reply["state"]["process_id"] == "review"]
    review_versions += [hit["version"] for reply in replies for hit in reply["invalidated"]]
    assert all(hit["process_id"] == "review" for reply in replies for hit in reply["invalidated"])
    assert sorted(draft_versions) == list(range(2, total // 2 + 2))
    assert sorted(review_versions) == list(range(1, len(review_versions) + 1))
    assert Counter(reply["late_finish"] for reply in replies) == {False: total}

    async with Client(build_server(Settings(database_url=db_url, auto_migrate=False))) as check:
        draft = await call_ok(check, "get_process_state", project_id=project, process_id="draft")
        review = await call_ok(check, "get_process_state", project_id=project, process_id="review")
        summary = await call_ok(check, "get_cost_summary", project_id=project)
        kept = await call_ok(check, "get_project", project_id=project)
    assert (draft["state"], draft["version"]) == ("completed", 1 + total // 2)
    assert review["version"] == len(review_versions)
    # The newest record is current; review is stale when an invalidation came after its newest record.
    by_version = {(reply["state"]["process_id"], reply["state"]["version"]): reply for reply in replies}
    assert draft["current_execution_id"] == by_version["draft", draft["version"]]["execution"]["id"]
    if review["state"] == "completed":
        assert review["current_execution_id"] == by_version["review", review["version"]]["execution"]["id"]
    else:
        assert review["state"] == "stale" and ("review", review["version"]) not in by_version

    totals = summary["totals"]
    assert totals["calls"] == total
    # The project's running total, added to by every call at once, lost no addition either.
    assert Decimal(kept["spent_usd"]) == COST * total
    assert max(Decimal(reply["budget"]["spent_usd"]) for reply in replies) == COST * total
    assert Decimal(totals["cost_usd"]) == COST * total == Decimal("0.08")
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == (100 * total, 20 * total)
