"""Budgets for teams (issue 27), on SQLite and PostgreSQL: who spent it, budget periods that reset at the
UTC calendar boundary or slide, every threshold reported once per period (reply, MCP log message and
budget_alerts), holds that never lock a start out, and costs of a running execution consuming its hold.

Time moves through db.types.set_clock, never by sleeping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import LoggingMessageNotificationParams

from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import Clock, call_error, call_ok, moved_clock
from tests.test_reliability_processes import on_two_servers

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> Iterator[Clock]:
    with moved_clock(datetime(2026, 1, 30, 12, 0, tzinfo=UTC)) as moved:
        yield moved


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


async def test_caps_per_agent_and_model_refuse_by_name_and_alert_once(client: Client) -> None:
    await _steps(client, 4)
    caps = {"agent:writer": "0.10", "model:openai/gpt-4o": "0.20"}
    project = (await call_ok(client, "create_project", name="c", budget_usd="5", budget_policy="block", caps=caps))[
        "id"
    ]
    shown = await call_ok(client, "get_project", project_id=project)
    assert {key: usd(value) for key, value in shown["caps"].items()} == {key: usd(v) for key, v in caps.items()}
    first = await call_ok(
        client, "start_execution", project_id=project, process_id="s0", agent="writer", reserve_usd="0.06"
    )
    assert [(c["cap"], usd(c["remaining_usd"])) for c in first["budget"]["caps"]] == [("agent:writer", Decimal("0.04"))]
    text = await call_error(
        client, "start_execution", "budget_exceeded", project_id=project, process_id="s1", agent="writer",
        reserve_usd="0.05",
    )  # fmt: skip
    assert "cap agent:writer (0.1 USD) would be passed" in text and "0.04 left" in text
    other = await call_ok(  # another agent is not judged by the writer's cap
        client, "start_execution", project_id=project, process_id="s1", agent="editor", reserve_usd="0.05",
        model="OpenAI/gpt-4o",
    )  # fmt: skip
    assert [c["cap"] for c in other["budget"]["caps"]] == ["model:openai/gpt-4o"]

    # Costs count toward the caps of their agent and model, and each cap threshold is reported once.
    spent = await call_ok(
        client, "report_cost", provider="openai", model="gpt-4o", cost_usd="0.12",
        execution_id=other["execution"]["id"],
    )  # fmt: skip
    by_cap = {c["cap"]: c for c in spent["budget"]["caps"]}
    assert list(by_cap) == ["model:openai/gpt-4o"]  # the execution's agent (editor) has no cap
    assert by_cap["model:openai/gpt-4o"]["crossed"] == [50] and "of cap model:openai/gpt-4o" in spent["budget"]["note"]
    again = await call_ok(client, "report_cost", provider="openai", model="gpt-4o", cost_usd="0.01", project_id=project)
    assert "crossed" not in again["budget"]["caps"][0]
    alerts = (await call_ok(client, "get_project", project_id=project))["budget_alerts"]
    assert [(a["threshold"], usd(a["budget_usd"])) for a in alerts] == [(50, Decimal("0.2"))]
    await call_error(client, "update_project", "invalid_argument", project_id=project, caps={"writer": "1"})
    await call_error(client, "update_project", "invalid_argument", project_id=project, alert_thresholds=[0])
    cleared = await call_ok(client, "update_project", project_id=project, clear=["caps"])
    assert "caps" not in cleared or cleared["caps"] is None


async def _race(db_url: str, tmp_path: Path, client: Client, caps: dict[str, str], model: str | None) -> list[str]:
    """8 starts at once, 4 from each of two server processes, each holding 0.01 of a `block` project with
    ``caps`` (a budget far above them): what each got."""
    await anyio.Path(tmp_path).mkdir()
    await _steps(client, 8)
    project = (await call_ok(client, "create_project", name="race", budget_usd="10", budget_policy="block", caps=caps))[
        "id"
    ]
    outcomes: list[str] = []

    async def four_starts(worker: Client, server: int) -> None:
        async with anyio.create_task_group() as group:
            for index in range(4):
                group.start_soon(start, worker, server * 4 + index)

    async def start(worker: Client, index: int) -> None:
        arguments = {"project_id": project, "process_id": f"s{index}", "reserve_usd": "0.01", "agent": "team"}
        result = await worker.call_tool("start_execution", arguments | ({"model": model} if model else {}))
        text = str(result.content[0].text)  # type: ignore[union-attr]
        outcomes.append(text if result.is_error else "ok")

    await on_two_servers(db_url, tmp_path, four_starts)
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    assert usd(status["cost"]["reserved_usd"]) == Decimal("0.01") * outcomes.count("ok")
    return outcomes


@pytest.mark.slow
async def test_eight_starts_from_two_processes_admit_exactly_what_fits_an_agent_cap_and_a_model_cap(
    db_url: str, tmp_path: Path, client: Client
) -> None:
    agent = await _race(db_url, tmp_path / "a", client, {"agent:team": "0.05"}, None)
    assert agent.count("ok") == 5 and all("cap agent:team (0.05 USD) is reached" in o for o in agent if o != "ok")
    model = await _race(db_url, tmp_path / "m", client, {"model:openai/gpt-4o": "0.03"}, "openai/gpt-4o")
    assert model.count("ok") == 3
    assert all("budget_exceeded" in o and "cap model:openai/gpt-4o" in o for o in model if o != "ok")


async def test_a_cost_row_names_the_rule_that_priced_it(client: Client, clock: Clock) -> None:
    clock.now = datetime(2026, 6, 20, 12, 0, tzinfo=UTC)  # after Mistral's 2026-06-16 price change
    cached = await call_ok(
        client, "report_cost", provider="anthropic", model="claude-sonnet-4-20250514", prompt_tokens=100_000,
        cache_write_tokens=50_000, cache_write_1h_tokens=50_000,
    )  # fmt: skip
    assert usd(cached["cost"]["cost_usd"]) == Decimal("0.45") and cached["cost"]["cache_write_1h_tokens"] == 50_000
    assert "50000 cache-write tokens at the one-hour TTL price" in cached["cost"]["note"]
    dated = await call_ok(
        client, "report_cost", provider="mistral", model="mistral-medium-latest", prompt_tokens=1_000_000
    )
    assert usd(dated["cost"]["cost_usd"]) == Decimal("1.5")
    assert (
        "price in force from 2026-06-16" in dated["cost"]["note"] and "prices as of 2026-06-20" in dated["cost"]["note"]
    )
    await call_error(
        client, "report_cost", "invalid_argument", provider="anthropic", model="m", prompt_tokens=10,
        cache_write_tokens=1, cache_write_1h_tokens=2,
    )  # fmt: skip


async def test_a_pipeline_budget_is_shared_by_all_its_projects(client: Client, clock: Clock) -> None:
    steps = [{"process_id": f"s{i}", "name": f"s{i}"} for i in range(3)]
    shared = {"budget_usd": "1", "policy": "block", "period": "month"}
    applied = await call_ok(client, "apply_pipeline", pipeline_id="team", processes=steps, budget=shared)
    assert applied["budget"]["pipeline_id"] == "team" and usd(applied["budget"]["remaining_usd"]) == 1
    assert applied["budget"]["resets_at"].startswith("2026-02-01")
    a = (await call_ok(client, "create_project", name="a", pipeline_id="team"))["id"]
    b = (await call_ok(client, "create_project", name="b", pipeline_id="team"))["id"]

    spent = await _cost(client, a, "0.7")
    assert spent["budget"]["pipeline"]["crossed"] == [50] and "of pipeline team's budget" in spent["budget"]["note"]
    text = await call_error(
        client, "start_execution", "budget_exceeded", project_id=b, process_id="s0", reserve_usd="0.4"
    )
    assert "pipeline team's shared budget (month period" in text and "would be passed" in text
    assert "spent 0.7 by its projects" in text
    started = await call_ok(client, "start_execution", project_id=b, process_id="s0", reserve_usd="0.3")
    assert usd(started["budget"]["pipeline"]["remaining_usd"]) == 0
    listed = {p["pipeline_id"]: p for p in (await call_ok(client, "list_pipelines"))["items"]}
    assert usd(listed["team"]["budget"]["reserved_usd"]) == Decimal("0.3") and "budget" not in listed["default"]
    await call_error(client, "start_execution", "budget_exceeded", project_id=a, process_id="s0")  # nothing left

    more = await _cost(client, b, "0.15")
    assert more["budget"]["pipeline"]["crossed"] == [80]
    alerts = (await call_ok(client, "get_project", project_id=a))["budget_alerts"]
    assert [(x["scope"], x["threshold"]) for x in alerts] == [("pipeline team", 80), ("pipeline team", 50)]

    clock.now = datetime(2026, 2, 1, tzinfo=UTC)  # a new month: the shared budget opens again
    await call_ok(client, "fail_execution", execution_id=started["execution"]["id"], error_message="x")
    opened = await call_ok(client, "start_execution", project_id=a, process_id="s0", reserve_usd="0.9")
    assert usd(opened["budget"]["pipeline"]["spent_usd"]) == 0
    removed = await call_ok(client, "apply_pipeline", pipeline_id="team", processes=steps, budget={"budget_usd": None})
    assert "budget" not in removed
    await call_ok(client, "start_execution", project_id=b, process_id="s1", reserve_usd="5")


@pytest.mark.slow
async def test_eight_starts_from_two_processes_on_two_projects_fit_the_pipeline_budget_exactly(
    db_url: str, tmp_path: Path, client: Client
) -> None:
    steps = [{"process_id": f"s{i}", "name": f"s{i}"} for i in range(4)]
    await call_ok(
        client, "apply_pipeline", pipeline_id="team", processes=steps,
        budget={"budget_usd": "0.05", "policy": "block"},
    )  # fmt: skip
    projects = [(await call_ok(client, "create_project", name=n, pipeline_id="team"))["id"] for n in ("a", "b")]
    outcomes: list[str] = []

    async def four_starts(worker: Client, server: int) -> None:
        async with anyio.create_task_group() as group:
            for index in range(4):
                group.start_soon(start, worker, projects[server], f"s{index}")

    async def start(worker: Client, project: str, step: str) -> None:
        arguments = {"project_id": project, "process_id": step, "reserve_usd": "0.01"}
        result = await worker.call_tool("start_execution", arguments)
        outcomes.append(str(result.content[0].text) if result.is_error else "ok")  # type: ignore[union-attr]

    await on_two_servers(db_url, tmp_path, four_starts)
    assert outcomes.count("ok") == 5, outcomes
    assert all("pipeline team's shared budget" in o for o in outcomes if o != "ok")
    listed = {p["pipeline_id"]: p for p in (await call_ok(client, "list_pipelines"))["items"]}
    assert usd(listed["team"]["budget"]["reserved_usd"]) == Decimal("0.05")


def test_the_costs_command_groups_by_every_key_the_tool_takes() -> None:
    from typing import get_args

    from mcp_server.cli.views import GROUPS
    from mcp_server.schemas.cost import GroupKey

    assert set(GROUPS) == set(get_args(GroupKey)) and "agent" in GROUPS
