"""PostgreSQL restarts while the server runs (docs/design.md, "Storage"): clear errors meanwhile, service again after.

A private instance (tests/private_pg.py) is stopped under a running server, with a writer calling all the
while: every call during the outage is the tool error `unavailable` (no traceback, nothing written),
and once the database is back the same server serves again, without a restart. What was stored is
exactly what the replies say: the version of the step counts its executions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import TextContent

from mcp_server.db.engine import Database
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import call_error, call_ok, table_counts
from tests.private_pg import PrivatePostgres, private_postgres

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

log = logging.getLogger(__name__)


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as instance:
        yield instance


def _text(result: Any) -> str:
    assert result.content and isinstance(result.content[0], TextContent)
    text: str = result.content[0].text
    return text


async def test_a_postgresql_restart_gives_unavailable_meanwhile_and_service_after_without_a_server_restart(
    postgres: PrivatePostgres, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(database_url=postgres.url())  # migrates at start-up
    database = Database.connect(postgres.url())
    try:
        async with Client(build_server(settings)) as client:
            await call_ok(client, "define_process", process_id="a", name="A")
            project = (await call_ok(client, "create_project", name="survives restarts"))["id"]
            record = {"project_id": project, "process_id": "a", "output_data": {"n": 0}}
            await call_ok(client, "record_execution", **record)
            counts = await table_counts(database)
            await database.dispose()  # the checker's own pooled connection would die with the server

            outcomes: dict[str, int] = {"ok": 0, "unavailable": 0}
            written, outage_seen, recovered, stop_writing = (anyio.Event() for _ in range(4))

            async def writer() -> None:
                number = ok_since_outage = 0
                while not stop_writing.is_set():
                    number += 1
                    result = await client.call_tool("record_execution", {**record, "output_data": {"n": number}})
                    if result.is_error:
                        text = _text(result)
                        assert text.startswith("Error executing tool record_execution: unavailable: "), text
                        assert "Traceback" not in text and "asyncpg" not in text
                        outcomes["unavailable"] += 1
                        ok_since_outage = 0
                        outage_seen.set()
                        await anyio.sleep(0.05)  # a client backing off before its retry
                    else:
                        outcomes["ok"] += 1
                        ok_since_outage += 1
                        if outcomes["ok"] >= 5:
                            written.set()
                        if outcomes["unavailable"] and ok_since_outage >= 5:
                            recovered.set()

            with anyio.fail_after(120):
                async with anyio.create_task_group() as group:
                    group.start_soon(writer)
                    await written.wait()  # some writes succeed before the outage
                    await postgres.stop()

                    # During the outage every tool answers at once with `unavailable`.
                    for tool, arguments in (
                        ("create_project", {"name": "during the outage"}),
                        ("get_pipeline_status", {"project_id": project}),
                        ("get_cost_summary", {}),
                        ("report_cost", {"provider": "openai", "model": "gpt-4o-mini", "cost_usd": "1"}),
                    ):
                        text = await call_error(client, tool, "unavailable", **arguments)
                        assert "Retry" in text and "Traceback" not in text

                    await outage_seen.wait()  # the writer met the outage too
                    await postgres.start()
                    # The same server serves again: no restart, the pool replaced its dead connections.
                    await recovered.wait()
                    stop_writing.set()

            status = await call_ok(client, "get_pipeline_status", project_id=project)
            await call_ok(client, "create_project", name="after the outage")
        log.info("restart under load: %s", outcomes)
        assert outcomes["unavailable"] > 0
        # The outage is logged as warnings naming the error type; no call crashed with a traceback.
        assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
        assert not any(record.exc_info for record in caplog.records)

        database = Database.connect(postgres.url())
        after = await table_counts(database)
        # Each stored execution is one version of `a`; an unavailable call may only have been stored
        # if its commit reached the server just as the connection died (then it counts as well).
        state = next(row for row in status["processes"] if row["process_id"] == "a")
        executions = after["process_executions"] - counts["process_executions"] + 1
        assert state["version"] == executions
        assert outcomes["ok"] + 1 <= executions <= outcomes["ok"] + 1 + outcomes["unavailable"]
        assert after["projects"] == counts["projects"] + 1  # only the one created after the outage
        assert after["llm_metrics"] == counts["llm_metrics"]  # the report_cost during the outage wrote nothing
    finally:
        await database.dispose()
