"""Budgets for teams (issue 27), on SQLite and PostgreSQL: who spent it, budget periods that reset at the
UTC calendar boundary or slide, every threshold reported once per period (reply, MCP log message and
budget_alerts), holds that never lock a start out, and costs of a running execution consuming its hold.

Time moves through db.types.set_clock, never by sleeping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from mcp import Client
from mcp_types import LoggingMessageNotificationParams

from mcp_server.db.types import set_clock
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import call_error, call_ok

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    moved = Clock(datetime(2026, 1, 30, 12, 0, tzinfo=UTC))
    set_clock(moved)
    try:
        yield moved
    finally:
        set_clock(None)


def usd(value: Any) -> Decimal:
    return Decimal(str(value))


async def _steps(client: Client, count: int) -> list[str]:
    ids = [f"s{i}" for i in range(count)]
    await call_ok(client, "apply_pipeline", processes=[{"process_id": i, "name": i} for i in ids])
    return ids


async def _cost(client: Client, project: str, cost: str, **more: Any) -> dict[str, Any]:
    return await call_ok(client, "report_cost", provider="x", model="y", cost_usd=cost, project_id=project, **more)


async def test_a_month_budget_blocks_in_its_period_and_opens_at_the_utc_month_boundary(
    client: Client, clock: Clock
) -> None:
    await _steps(client, 3)
    project = (
        await call_ok(client, "create_project", name="m", budget_usd="1", budget_policy="block", budget_period="month")
    )["id"]
    spent = await _cost(client, project, "1.2")
    budget = spent["budget"]
    assert budget["period"] == "month" and budget["exceeded"] is True
    assert budget["period_start"].startswith("2026-01-01T00:00:00") and budget["resets_at"].startswith("2026-02-01")
    assert usd(budget["period_spent_usd"]) == Decimal("1.2") and usd(budget["period_remaining_usd"]) == Decimal("-0.2")
    assert "further starts are refused" in budget["note"] and "2026-02-01" in budget["note"]
    text = await call_error(client, "start_execution", "budget_exceeded", project_id=project, process_id="s0")
    assert "month period" in text and "2026-02-01" in text

    clock.now = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)  # still January
    await call_error(client, "start_execution", "budget_exceeded", project_id=project, process_id="s0")
    clock.now = datetime(2026, 2, 1, 0, 0, 0, tzinfo=UTC)  # the boundary: a new period, history kept
    started = await call_ok(client, "start_execution", project_id=project, process_id="s0")
    assert started["budget"]["period_start"].startswith("2026-02-01") and started["budget"]["exceeded"] is False
    assert usd(started["budget"]["spent_usd"]) == Decimal("1.2")  # all time
    assert usd(started["budget"]["period_spent_usd"]) == 0
    shown = await call_ok(client, "get_project", project_id=project)
    assert shown["budget_period"] == "month" and usd(shown["period_spent_usd"]) == 0 and shown["exceeded"] is False
    assert usd(shown["remaining_usd"]) == 1


async def test_a_rolling_window_slides(client: Client, clock: Clock) -> None:
    await _steps(client, 2)
    project = (
        await call_ok(
            client, "create_project", name="r", budget_usd="1", budget_policy="block", budget_period="rolling:24h"
        )
    )["id"]
    await _cost(client, project, "0.7")
    clock.now += timedelta(hours=12)
    second = await _cost(client, project, "0.4")
    assert second["budget"]["exceeded"] is True and second["budget"]["period"] == "rolling:24h"
    assert "resets_at" not in second["budget"]  # a rolling window slides: nothing resets
    await call_error(client, "start_execution", "budget_exceeded", project_id=project, process_id="s0")
    clock.now += timedelta(hours=12, seconds=1)  # the first cost left the window; the second has not
    started = await call_ok(client, "start_execution", project_id=project, process_id="s0")
    assert usd(started["budget"]["period_spent_usd"]) == Decimal("0.4")
    await call_error(client, "update_project", "invalid_argument", project_id=project, budget_period="fortnight")
    await call_error(client, "update_project", "invalid_argument", project_id=project, budget_period="rolling:999d")


async def test_cost_by_agent_sums_to_the_project_total_and_a_sub_agent_shows_apart(client: Client) -> None:
    await _steps(client, 2)
    project = (await call_ok(client, "create_project", name="a"))["id"]
    started = await call_ok(client, "start_execution", project_id=project, process_id="s0", agent="planner")
    execution = started["execution"]["id"]
    await call_ok(client, "report_cost", provider="x", model="y", cost_usd="0.0000000001", execution_id=execution)
    await call_ok(  # the planner's sub-agent, named by its parent
        client, "report_cost", provider="x", model="y", cost_usd="0.3333333333", execution_id=execution,
        agent="planner/researcher",
    )  # fmt: skip
    await call_ok(
        client, "record_execution", project_id=project, process_id="s0", output_data={}, execution_id=execution,
        usage={"provider": "x", "model": "y", "cost_usd": "0.1"},
    )  # fmt: skip
    await call_ok(
        client, "record_execution", project_id=project, process_id="s1", output_data={}, agent="writer",
        usage={"provider": "x", "model": "y", "cost_usd": "0.2000000007"},
    )  # fmt: skip
    await _cost(client, project, "0.05")  # nobody named: the MCP client
    summary = await call_ok(client, "get_cost_summary", project_id=project, group_by=["agent"])
    by_agent = {group.get("agent"): usd(group["cost_usd"]) for group in summary["groups"]}
    client_name = next(name for name in by_agent if name not in {"planner", "planner/researcher", "writer"})
    assert by_agent == {
        "planner": Decimal("0.1000000001"),
        "planner/researcher": Decimal("0.3333333333"),
        "writer": Decimal("0.2000000007"),
        client_name: Decimal("0.05"),
    }
    total = usd((await call_ok(client, "get_project", project_id=project))["spent_usd"])
    assert sum(by_agent.values()) == total == Decimal("0.6833333341")
    assert usd(summary["totals"]["cost_usd"]) == total


async def test_each_threshold_is_reported_once_per_period_in_the_reply_the_log_and_budget_alerts(
    settings: Settings, clock: Clock
) -> None:
    told: list[LoggingMessageNotificationParams] = []

    async def log(params: LoggingMessageNotificationParams) -> None:
        told.append(params)

    async with Client(build_server(settings), logging_callback=log, log_level="warning") as client:
        project = (await call_ok(client, "create_project", name="t", budget_usd="1", budget_period="day"))["id"]
        first = await _cost(client, project, "0.44")
        assert "crossed" not in first["budget"]
        jump = await _cost(client, project, "0.40")  # 44% -> 84%: both thresholds, in one call
        assert jump["budget"]["crossed"] == [50, 80] and "crossed 50%, 80% of the budget" in jump["budget"]["note"]
        again = await _cost(client, project, "0.01")
        assert "crossed" not in again["budget"]  # once per period
        over = await _cost(client, project, "0.20")
        assert over["budget"]["crossed"] == [100]
        alerts = (await call_ok(client, "get_project", project_id=project))["budget_alerts"]
        assert [a["threshold"] for a in alerts] == [100, 80, 50]
        assert all(a["period_start"].startswith("2026-01-30") for a in alerts)
        assert [m.data["crossed"] for m in told if m.logger == "pipeline-state.budget"] == [[50, 80], [100]]

        clock.now += timedelta(days=1)  # a new day: each threshold may be reported again
        fresh = await _cost(client, project, "0.6")
        assert fresh["budget"]["crossed"] == [50]
        alerts = (await call_ok(client, "get_project", project_id=project))["budget_alerts"]
        assert len(alerts) == 4 and alerts[0]["period_start"].startswith("2026-01-31")
        assert told[-1].data["crossed"] == [50]


async def test_a_start_without_reserve_holds_the_steps_median_cost_cut_to_what_is_left(
    client: Client, settings: Settings
) -> None:
    await _steps(client, 1)
    history = (await call_ok(client, "create_project", name="h"))["id"]
    for cost in ("0.10", "0.30", "0.20"):  # three earlier runs of s0 in the same pipeline: median 0.20
        await call_ok(
            client, "record_execution", project_id=history, process_id="s0", output_data={"c": cost},
            usage={"provider": "x", "model": "y", "cost_usd": cost},
        )  # fmt: skip
    project = (await call_ok(client, "create_project", name="n", budget_usd="1", budget_policy="block"))["id"]
    await _cost(client, project, "0.95")
    started = await call_ok(client, "start_execution", project_id=project, process_id="s0")
    budget = started["budget"]
    assert usd(budget["reserved_usd"]) == Decimal("0.05") and usd(budget["remaining_usd"]) == 0
    assert "holds 0.05" in budget["note"] and "median cost of its last 3 run(s)" in budget["note"]
    assert "cut to what is left" in budget["note"]
    execution = started["execution"]["id"]
    assert usd((await call_ok(client, "get_execution", execution_id=execution))["reserved_usd"]) == Decimal("0.05")

    # A cost reported against the running execution uses its hold first: never counted twice.
    used = await call_ok(client, "report_cost", provider="x", model="y", cost_usd="0.03", execution_id=execution)
    assert usd(used["budget"]["reserved_usd"]) == Decimal("0.02") and usd(used["budget"]["spent_usd"]) == Decimal(
        "0.98"
    )
    assert usd(used["budget"]["remaining_usd"]) == 0
    assert usd((await call_ok(client, "get_execution", execution_id=execution))["reserved_usd"]) == Decimal("0.02")
    more = await call_ok(client, "report_cost", provider="x", model="y", cost_usd="0.05", execution_id=execution)
    assert usd(more["budget"]["reserved_usd"]) == 0 and more["budget"]["exceeded"] is True
    done = await call_ok(
        client, "record_execution", project_id=project, process_id="s0", output_data={}, execution_id=execution
    )
    assert usd(done["budget"]["reserved_usd"]) == 0 and "further starts are refused" in done["budget"]["note"]

    # Without history the server's default estimate is held, cut the same way.
    await _steps(client, 2)
    fresh = (await call_ok(client, "create_project", name="d", budget_usd="0.5", budget_policy="block"))["id"]
    async with Client(build_server(settings.model_copy(update={"default_reserve_usd": Decimal("0.8")}))) as other:
        held = await call_ok(other, "start_execution", project_id=fresh, process_id="s1")
    assert usd(held["budget"]["reserved_usd"]) == Decimal("0.5")
    assert "the server's default_reserve_usd (cut to what is left of the budget)" in held["budget"]["note"]


async def test_a_one_call_record_on_a_passed_block_budget_says_so_plainly(client: Client) -> None:
    await _steps(client, 2)
    project = (await call_ok(client, "create_project", name="o", budget_usd="0.1", budget_policy="block"))["id"]
    await _cost(client, project, "0.2")
    recorded = await call_ok(client, "record_execution", project_id=project, process_id="s0", output_data={})
    assert recorded["budget"]["exceeded"] is True
    assert "over budget by 0.1 USD" in recorded["budget"]["note"]
    assert "the cost is logged; further starts are refused until the budget is raised" in recorded["budget"]["note"]
    with_cost = await call_ok(
        client, "record_execution", project_id=project, process_id="s1", output_data={},
        usage={"provider": "x", "model": "y", "cost_usd": "0.05"},
    )  # fmt: skip
    assert (
        usd(with_cost["cost"]["cost_usd"]) == Decimal("0.05")
        and "further starts are refused" in with_cost["budget"]["note"]
    )
