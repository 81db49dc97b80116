"""The project's running cost totals always equal the exact SUM over its usage rows."""

from __future__ import annotations

from contextlib import AsyncExitStack
from decimal import Decimal

import anyio
import pytest
from mcp import Client

from mcp_server.db.engine import Database
from mcp_server.repositories import MetricsRepository, ProjectRepository
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import call_ok

pytestmark = pytest.mark.anyio


async def test_running_totals_match_the_ledger(settings: Settings, client: Client, db: Database) -> None:
    await call_ok(client, "define_process", process_id="a", name="A")
    first = (await call_ok(client, "create_project", name="one"))["id"]
    second = (await call_ok(client, "create_project", name="two"))["id"]
    usage = {"provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 1234, "completion_tokens": 56}
    await call_ok(client, "record_execution", project_id=first, process_id="a", output_data={"v": 1}, usage=usage)
    await call_ok(client, "report_cost", provider="x", model="unknown-model", prompt_tokens=5, project_id=first)
    await call_ok(client, "report_cost", provider="p", model="m", cost_usd="0.1", project_id=second)
    await call_ok(client, "report_cost", provider="p", model="m", cost_usd="0.2", project_id=second)
    await call_ok(
        client, "report_cost", provider="p", model="m", cost_usd="0.3", idempotency_key="k", project_id=second
    )
    await call_ok(
        client, "report_cost", provider="p", model="m", cost_usd="0.3", idempotency_key="k", project_id=second
    )
    await call_ok(client, "report_cost", provider="p", model="m", cost_usd="5")  # no project

    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(build_server(settings))) for _ in range(3)]

        async def spend(c: Client) -> None:
            for _ in range(10):
                await call_ok(c, "report_cost", provider="p", model="m", cost_usd="0.0000001", project_id=first)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for c in clients:
                    group.start_soon(spend, c)

    async with db.unit_of_work(write=False) as session:
        for project_id, expected_unpriced in ((first, 1), (second, 0)):
            project = await ProjectRepository(session).get(project_id)
            assert project is not None
            spent, unpriced = await MetricsRepository(session).project_spend(project.id)
            assert (project.spent_usd, project.unpriced_calls) == (spent, unpriced)
            assert unpriced == expected_unpriced
    second_out = await call_ok(client, "get_project", project_id=second)
    assert Decimal(second_out["spent_usd"]) == Decimal("0.6")
    status = await call_ok(client, "get_pipeline_status", project_id=first)
    assert status["cost"]["unpriced_calls"] == 1
