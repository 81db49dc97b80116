"""The cost ledger through the MCP client on SQLite and PostgreSQL: pricing paths, validation,
idempotency, budgets, exact sums, groupings and filters, and the cost of rework."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import pytest
from genai_prices import Usage, calc_price
from mcp import Client
from sqlalchemy import text

from mcp_server.db.engine import Database
from mcp_server.db.types import utcnow
from mcp_server.models import ExecutionStatus, StateName
from mcp_server.repositories import (
    ExecutionRepository,
    MetricsRepository,
    ProcessDefinitionRepository,
    StateRepository,
)
from mcp_server.repositories.states import StateChange
from mcp_server.schemas.cost import CostFilters, CostReply, UsageIn
from mcp_server.services import costs
from tests.helpers import call_error, call_ok, table_counts

pytestmark = pytest.mark.anyio


async def _project(client: Client, budget: str | None = None) -> str:
    args: dict[str, Any] = {"name": f"p-{uuid.uuid4().hex[:6]}"}
    if budget is not None:
        args["budget_usd"] = budget
    project: dict[str, Any] = await call_ok(client, "create_project", **args)
    return str(project["id"])


async def _processes(db: Database, *ids: str) -> None:
    async with db.unit_of_work() as session:
        for pid in ids:
            await ProcessDefinitionRepository(session).create(id=pid, name=pid)


def _usd(value: Any) -> Decimal:
    assert isinstance(value, str), f"money must travel as a decimal string, got {value!r}"
    return Decimal(value)


async def _summary(client: Client, **args: Any) -> dict[str, Any]:
    return await call_ok(client, "get_cost_summary", **args)


# --- pricing paths -------------------------------------------------------------------------


async def test_report_cost_computes_the_price_with_genai_prices(client: Client) -> None:
    reply = await call_ok(
        client,
        "report_cost",
        provider="OpenAI",
        model="gpt-4o",
        prompt_tokens=1200,
        completion_tokens=300,
        cache_read_tokens=1000,
        inference_time_ms=850,
    )
    cost = reply["cost"]
    expected = calc_price(
        Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1000), "gpt-4o", provider_id="openai"
    ).total_price
    assert _usd(cost["cost_usd"]) == expected
    assert cost["cost_source"] == "computed" and cost["priced"] is True
    assert cost["provider"] == "openai" and cost["total_tokens"] == 1500
    assert "budget" not in reply and reply["replayed"] is False


async def test_unknown_model_is_stored_unpriced_with_a_null_cost(client: Client) -> None:
    reply = await call_ok(client, "report_cost", provider="acme", model="mystery-1", prompt_tokens=10)
    cost = reply["cost"]
    assert "cost_usd" not in cost and cost["cost_source"] == "unpriced" and cost["priced"] is False
    assert "unpriced" in cost["note"] and "mystery-1" in cost["note"]
    totals = (await _summary(client))["totals"]
    assert totals["calls"] == 1 and totals["unpriced_calls"] == 1 and "cost_usd" not in totals  # unknown, not 0


async def test_reported_costs_are_kept_and_summed_exactly(client: Client) -> None:
    first = await call_ok(client, "report_cost", provider="openai", model="gpt-4o", cost_usd="0.1")
    await call_ok(client, "report_cost", provider="openai", model="gpt-4o", cost_usd=0.2)
    assert first["cost"]["cost_source"] == "reported" and _usd(first["cost"]["cost_usd"]) == Decimal("0.1")
    assert _usd((await _summary(client))["totals"]["cost_usd"]) == Decimal("0.3")


# --- refusals write nothing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"prompt_tokens": -1},
        {"completion_tokens": -3},
        {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 14},
        {"prompt_tokens": 10, "cache_read_tokens": 11},
        {"prompt_tokens": 10, "cache_read_tokens": 6, "cache_write_tokens": 6},
        {"cost_usd": "-0.01"},
        {"inference_time_ms": -1},
        {"provider": ""},
        {"prompt_tokens": "many"},
    ],
)
async def test_inconsistent_usage_is_refused_and_writes_nothing(
    client: Client, db: Database, bad: dict[str, Any]
) -> None:
    before = await table_counts(db)
    await call_error(client, "report_cost", "invalid_argument", **({"provider": "openai", "model": "gpt-4o"} | bad))
    assert await table_counts(db) == before


async def test_unknown_ids_are_not_found_and_write_nothing(client: Client, db: Database) -> None:
    project = await _project(client)
    await call_ok(client, "delete_project", project_id=project)
    before = await table_counts(db)
    usage = {"provider": "openai", "model": "gpt-4o", "cost_usd": "1"}
    for ids in (
        {"project_id": str(uuid.uuid4())},
        {"project_id": project},
        {"process_id": "no-such-step"},
        {"execution_id": str(uuid.uuid4())},
    ):
        text_ = await call_error(client, "report_cost", "not_found", **usage, **ids)
        assert next(iter(ids.values())) in text_
    await call_error(client, "get_cost_summary", "not_found", project_id=str(uuid.uuid4()))
    assert await table_counts(db) == before


# --- idempotency ---------------------------------------------------------------------------


async def test_same_key_replays_the_original_reply_and_other_arguments_conflict(client: Client, db: Database) -> None:
    project = await _project(client, budget="5")
    args = {"provider": "openai", "model": "gpt-4o", "cost_usd": "0.10", "project_id": project}
    first = await call_ok(client, "report_cost", idempotency_key="call-1", **args)
    before = await table_counts(db)
    again = await call_ok(client, "report_cost", idempotency_key="call-1", **(args | {"cost_usd": "0.1000"}))
    assert again["replayed"] is True and first["replayed"] is False
    assert again["cost"] == first["cost"] and again["budget"] == first["budget"]
    text_ = await call_error(
        client, "report_cost", "conflict", idempotency_key="call-1", **(args | {"cost_usd": "0.2"})
    )
    assert "call-1" in text_
    assert await table_counts(db) == before
    assert (await _summary(client))["totals"]["calls"] == 1


async def test_concurrent_calls_with_one_key_store_one_row(db: Database) -> None:
    usage = UsageIn(provider="openai", model="gpt-4o", cost_usd=Decimal("0.5"))
    replies: list[CostReply] = []

    async def report() -> None:
        async with db.unit_of_work() as session:
            replies.append(
                await costs.report_cost(
                    session,
                    usage,
                    project_id=None,
                    process_id=None,
                    execution_id=None,
                    idempotency_key="same-key",
                    actor="test",
                )
            )

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(report)
    assert sorted(reply.replayed for reply in replies) == [False] + [True] * 7
    assert len({reply.cost.id for reply in replies}) == 1
    assert (await table_counts(db))["llm_metrics"] == 1


async def test_losing_the_insert_race_leaves_the_transaction_usable(db: Database) -> None:
    fields = {"provider": "openai", "model": "m", "cost_source": "reported", "idempotency_key": "k"}
    async with db.unit_of_work() as session:
        first, created = await MetricsRepository(session).create_keyed(**fields)
        assert created
    async with db.unit_of_work() as session:
        metrics = MetricsRepository(session)
        again, created = await metrics.create_keyed(**fields)  # the unique key fires inside a savepoint
        assert not created and again.id == first.id
        assert (await metrics.project_spend(uuid.uuid4())) == (0, 0)  # and the transaction still works


# --- budgets -------------------------------------------------------------------------------


async def test_crossing_the_budget_flips_exceeded_and_remaining_goes_negative(client: Client) -> None:
    project = await _project(client, budget="0.001")
    args = {"provider": "openai", "model": "gpt-4o", "project_id": project}
    under = (await call_ok(client, "report_cost", cost_usd="0.0006", **args))["budget"]
    assert _usd(under["spent_usd"]) == Decimal("0.0006") and _usd(under["remaining_usd"]) == Decimal("0.0004")
    assert under["exceeded"] is False
    at = (await call_ok(client, "report_cost", cost_usd="0.0004", **args))["budget"]
    assert _usd(at["remaining_usd"]) == 0 and at["exceeded"] is False
    over = (await call_ok(client, "report_cost", cost_usd="0.0002", **args))["budget"]
    assert _usd(over["remaining_usd"]) == Decimal("-0.0002") and over["exceeded"] is True
    assert "over budget by 0.0002" in over["note"]
    unpriced = (await call_ok(client, "report_cost", provider="acme", model="x", project_id=project))["budget"]
    assert unpriced["unpriced_calls"] == 1 and _usd(unpriced["spent_usd"]) == Decimal("0.0012")


async def test_a_project_without_budget_reports_spent_only(client: Client) -> None:
    project = await _project(client)
    budget = (await call_ok(client, "report_cost", provider="x", model="y", cost_usd="2", project_id=project))["budget"]
    assert "budget_usd" not in budget and "remaining_usd" not in budget and budget["exceeded"] is False
    assert _usd(budget["spent_usd"]) == 2
    await call_ok(client, "update_project", project_id=project, budget_usd="1.5")
    later = (await call_ok(client, "report_cost", provider="x", model="y", cost_usd="0", project_id=project))["budget"]
    assert later["exceeded"] is True and _usd(later["remaining_usd"]) == Decimal("-0.5")


# --- exactness -----------------------------------------------------------------------------

GROUPINGS = [
    [],
    ["project"],
    ["process"],
    ["provider"],
    ["model"],
    ["day"],
    ["project", "process", "provider", "model", "day"],
]


async def test_ten_thousand_tenths_of_a_cent_sum_to_exactly_one_in_every_grouping(client: Client, db: Database) -> None:
    projects = [uuid.UUID(await _project(client)) for _ in range(2)]
    await _processes(db, "draft", "review", "ship")
    through_tool = 20
    for _ in range(through_tool):
        await call_ok(
            client, "report_cost", provider="openai", model="gpt-4o", cost_usd="0.0001", project_id=str(projects[0])
        )
    start = datetime(2024, 5, 1, 22, 0, tzinfo=UTC)
    rows = [
        {
            "project_id": projects[i % 2],
            "process_id": ("draft", "review", "ship")[i % 3],
            "provider": ("openai", "anthropic")[i % 2],
            "model": ("gpt-4o", "o1", "claude", "gemini")[i % 4],
            "cost_usd": Decimal("0.0001"),
            "cost_source": "reported",
            "created_at": start + timedelta(seconds=40 * i),  # spans several UTC days
        }
        for i in range(10_000 - through_tool)
    ]
    async with db.unit_of_work() as session:
        await MetricsRepository(session).insert_many(rows)
    for group_by in GROUPINGS:
        summary = await _summary(client, group_by=group_by)
        assert _usd(summary["totals"]["cost_usd"]) == Decimal("1.0000"), group_by
        assert summary["totals"]["calls"] == 10_000
        if group_by:
            assert sum(_usd(g["cost_usd"]) for g in summary["groups"]) == Decimal("1.0000")
            for group in summary["groups"]:
                assert _usd(group["cost_usd"]) == group["calls"] * Decimal("0.0001")
    by_day = {g["day"]: g["calls"] for g in (await _summary(client, group_by=["day"]))["groups"]}
    expected = Counter(row["created_at"].date().isoformat() for row in rows)
    expected[datetime.now(UTC).date().isoformat()] += through_tool
    assert by_day == dict(expected)


# --- groupings and filters -----------------------------------------------------------------


async def _scenario(client: Client, db: Database) -> tuple[str, str]:
    """Five calls around UTC midnights; returns the two project ids."""
    p1, p2 = await _project(client), await _project(client)
    await _processes(db, "plan", "code")
    calls: list[tuple[str, str | None, str, str, str | None, str, int | None]] = [
        (p1, "plan", "openai", "gpt-4o", "0.10", "2024-03-01T23:59:59.999999+00:00", 100),
        (p1, "plan", "openai", "gpt-4o", "0.20", "2024-03-02T00:00:00+00:00", 300),
        (p1, "code", "anthropic", "claude-3-5-sonnet-20241022", "0.05", "2024-03-02T12:00:00+00:00", None),
        (p2, "code", "acme", "mystery-1", None, "2024-03-03T00:00:00+00:00", 50),
        (p2, None, "openai", "gpt-4o", "0.01", "2024-03-03T08:00:00+09:00", None),  # 2024-03-02T23:00Z
    ]
    async with db.unit_of_work() as session:
        for project, process, provider, model, cost, at, ms in calls:
            usage = UsageIn(
                provider=provider,
                model=model,
                prompt_tokens=100,
                completion_tokens=10,
                cost_usd=None if cost is None else Decimal(cost),
                inference_time_ms=ms,
            )
            await costs.record_usage(
                session,
                usage,
                project_id=uuid.UUID(project),
                process_id=process,
                execution_id=None,
                actor="test",
                quoted=costs.Quote(datetime.fromisoformat(at), None),
            )
    return p1, p2


def _costs_by(groups: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], tuple[Decimal | None, int, int]]:
    """Cost (None when left out: every call unpriced), calls and unpriced calls by the groups' keys."""
    return {
        tuple(g.get(k) for k in keys): (
            _usd(g["cost_usd"]) if "cost_usd" in g else None,
            g["calls"],
            g["unpriced_calls"],
        )
        for g in groups
    }


async def test_groupings_and_filters_match_hand_computed_figures(client: Client, db: Database) -> None:
    p1, p2 = await _scenario(client, db)
    everything = await _summary(client)
    totals = everything["totals"]
    assert (totals["calls"], totals["unpriced_calls"], _usd(totals["cost_usd"])) == (5, 1, Decimal("0.36"))
    assert totals["prompt_tokens"] == 500 and totals["total_tokens"] == 550
    assert totals["mean_inference_time_ms"] == 150.0
    assert everything["groups"] == []

    by_day = await _summary(client, group_by=["day"])
    assert [g["day"] for g in by_day["groups"]] == ["2024-03-01", "2024-03-02", "2024-03-03"]
    assert _costs_by(by_day["groups"], "day") == {
        ("2024-03-01",): (Decimal("0.10"), 1, 0),
        ("2024-03-02",): (Decimal("0.26"), 3, 0),
        ("2024-03-03",): (None, 1, 1),
    }
    by_model = await _summary(client, group_by=["model"])
    assert _costs_by(by_model["groups"], "model") == {
        ("claude-3-5-sonnet-20241022",): (Decimal("0.05"), 1, 0),
        ("gpt-4o",): (Decimal("0.31"), 3, 0),
        ("mystery-1",): (None, 1, 1),
    }
    gpt = next(g for g in by_model["groups"] if g["model"] == "gpt-4o")
    assert gpt["mean_inference_time_ms"] == 200.0 and "project_id" not in gpt
    by_pair = await _summary(client, group_by=["project", "process", "project"])
    assert by_pair["group_by"] == ["project", "process"]
    assert _costs_by(by_pair["groups"], "project_id", "process_id") == {
        (p1, "code"): (Decimal("0.05"), 1, 0),
        (p1, "plan"): (Decimal("0.30"), 2, 0),
        (p2, "code"): (None, 1, 1),
        (p2, None): (Decimal("0.01"), 1, 0),
    }

    by_process = (await _summary(client, group_by=["process"]))["groups"]
    assert [g.get("process_id") for g in by_process] == ["code", "plan", None]  # unassigned last on both databases

    async def cost(**filters: Any) -> tuple[Decimal | None, int]:
        figures = (await _summary(client, **filters))["totals"]
        return (_usd(figures["cost_usd"]) if "cost_usd" in figures else None), figures["calls"]

    # since inclusive, until exclusive; a zone-less time is UTC, an offset is converted.
    assert await cost(since="2024-03-02T00:00:00Z", until="2024-03-03T00:00:00Z") == (Decimal("0.26"), 3)
    assert await cost(since="2024-03-02T09:00:00+09:00", until="2024-03-03T00:00:00") == (Decimal("0.26"), 3)
    assert await cost(until="2024-03-02T00:00:00Z") == (Decimal("0.10"), 1)
    assert await cost(since="2024-03-03T00:00:00Z") == (None, 1)  # its only call is unpriced
    assert await cost(project_id=p1) == (Decimal("0.35"), 3)
    assert await cost(project_id=p1, process_id="plan", since="2024-03-02T00:00:00Z") == (Decimal("0.20"), 1)
    assert await cost(provider="OpenAI") == (Decimal("0.31"), 3)
    assert await cost(model="gpt-4o", process_id="plan") == (Decimal("0.30"), 2)
    assert await cost(model="nothing-like-it") == (Decimal("0"), 0)
    await call_error(client, "get_cost_summary", "invalid_argument", since="2024-03-02T00:00:00Z", until="2024-03-01")
    await call_error(client, "get_cost_summary", "invalid_argument", group_by=["week"])


async def test_days_are_utc_dates_whatever_the_session_time_zone(client: Client, db: Database) -> None:
    await _scenario(client, db)
    async with db.unit_of_work(write=False) as session:
        if db.dialect == "postgresql":
            await session.execute(text("SET LOCAL TIME ZONE 'Asia/Tokyo'"))
        result = await costs.summary(session, CostFilters(), ["day"])
    assert [(g.day.isoformat() if g.day else None, g.cost_usd) for g in result.groups] == [
        ("2024-03-01", Decimal("0.10")),
        ("2024-03-02", Decimal("0.26")),
        ("2024-03-03", None),
    ]


# --- the cost of rework --------------------------------------------------------------------


async def test_superseded_cost_counts_re_runs_failures_and_stale_states(client: Client, db: Database) -> None:
    project = uuid.UUID(await _project(client))
    await _processes(db, "a", "b")

    async def execution(process: str, status: ExecutionStatus, cost: str) -> uuid.UUID:
        async with db.unit_of_work() as session:
            row = await ExecutionRepository(session).create(
                project_id=project, process_id=process, input_data={}, status=status.value
            )
            await costs.record_usage(
                session,
                UsageIn(provider="x", model="y", cost_usd=Decimal(cost)),
                project_id=None,
                process_id=None,
                execution_id=row.id,
                actor=None,
            )
            return row.id

    a1 = await execution("a", ExecutionStatus.COMPLETED, "1")
    b1 = await execution("b", ExecutionStatus.COMPLETED, "4")
    async with db.unit_of_work() as session:
        states = StateRepository(session)
        await states.create(project, "a", StateChange(StateName.COMPLETED, utcnow(), sets_current=True, current=a1))
        await states.create(project, "b", StateChange(StateName.COMPLETED, utcnow(), sets_current=True, current=b1))

    async def superseded() -> dict[str | None, Decimal]:
        summary = await _summary(client, group_by=["process"])
        by_process = {g["process_id"]: _usd(g["superseded_cost_usd"]) for g in summary["groups"]}
        assert sum(by_process.values()) == _usd(summary["totals"]["superseded_cost_usd"])
        return by_process

    assert await superseded() == {"a": 0, "b": 0}
    a2 = await execution("a", ExecutionStatus.COMPLETED, "2")  # a re-run becomes the current output
    async with db.unit_of_work() as session:
        state_a = await StateRepository(session).get(project, "a")
        assert state_a is not None
        rerun = StateChange(StateName.COMPLETED, utcnow(), sets_current=True, current=a2)
        assert await StateRepository(session).compare_and_set(state_a, rerun)
    assert await superseded() == {"a": Decimal(1), "b": 0}
    await execution("a", ExecutionStatus.FAILED, "8")  # a failed attempt is rework too
    await execution("a", ExecutionStatus.RUNNING, "16")  # a running one may yet become current: not counted
    assert await superseded() == {"a": Decimal(1 + 8), "b": 0}
    async with db.unit_of_work() as session:
        state_b = await StateRepository(session).get(project, "b")
        assert state_b is not None
        stale = StateChange(StateName.STALE, utcnow(), invalidated_by="b", reason="redefined")
        assert await StateRepository(session).compare_and_set(state_b, stale)
    assert await superseded() == {"a": Decimal(9), "b": Decimal(4)}
    project_only = (await _summary(client, project_id=str(project)))["totals"]
    assert _usd(project_only["superseded_cost_usd"]) == 13 and _usd(project_only["cost_usd"]) == 31


async def test_usage_on_record_execution_and_the_cost_of_rework_through_the_pipeline(
    client: Client, db: Database
) -> None:
    project = await _project(client, budget="10")
    await call_ok(client, "define_process", process_id="a", name="A")
    await call_ok(client, "define_process", process_id="b", name="B", depends_on=["a"])

    def usage(cost: str) -> dict[str, Any]:
        return {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 100, "cost_usd": cost}

    before = await table_counts(db)
    await call_error(
        client, "record_execution", "not_ready", project_id=project, process_id="b", output_data={}, usage=usage("1")
    )
    await call_error(
        client,
        "record_execution",
        "invalid_argument",
        project_id=project,
        process_id="a",
        output_data={},
        usage=usage("1") | {"total_tokens": 1},
    )
    assert await table_counts(db) == before

    first = await call_ok(
        client, "record_execution", project_id=project, process_id="a", output_data={"v": 1}, usage=usage("1")
    )
    assert _usd(first["cost"]["cost_usd"]) == 1 and first["cost"]["cost_source"] == "reported"
    assert set(first["cost"]) == {"id", "cost_usd", "cost_source"}  # not the row the agent just sent
    assert _usd(first["budget"]["spent_usd"]) == 1
    after = await table_counts(db)
    assert after["process_executions"] - before["process_executions"] == 1
    assert after["llm_metrics"] - before["llm_metrics"] == 1
    await call_ok(
        client, "record_execution", project_id=project, process_id="b", output_data={"w": 1}, usage=usage("2")
    )
    linked = await call_ok(
        client, "report_cost", provider="x", model="y", cost_usd="0.5", execution_id=first["execution"]["id"]
    )
    assert linked["cost"]["project_id"] == project and linked["cost"]["process_id"] == "a"
    await call_error(
        client,
        "report_cost",
        "invalid_argument",
        provider="x",
        model="y",
        execution_id=first["execution"]["id"],
        process_id="b",
    )
    totals = (await _summary(client, project_id=project))["totals"]
    assert _usd(totals["superseded_cost_usd"]) == 0

    # Re-run a with a new output: a's first execution is superseded and b goes stale.
    await call_ok(
        client, "record_execution", project_id=project, process_id="a", output_data={"v": 2}, usage=usage("4")
    )
    by_process = {
        g["process_id"]: g for g in (await _summary(client, project_id=project, group_by=["process"]))["groups"]
    }
    assert _usd(by_process["a"]["superseded_cost_usd"]) == Decimal("1.5")
    assert _usd(by_process["b"]["superseded_cost_usd"]) == 2

    # Invalidate a by hand: its current execution's cost is rework too.
    await call_ok(client, "invalidate_process", project_id=project, process_id="a", reason="requirements changed")
    totals = (await _summary(client, project_id=project))["totals"]
    assert _usd(totals["superseded_cost_usd"]) == Decimal("7.5") and _usd(totals["cost_usd"]) == Decimal("7.5")
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    assert status["cost"] is not None and Decimal(status["cost"]["spent_usd"]) == Decimal("7.5")


async def test_too_many_groups_are_truncated_but_totals_stay_whole(
    client: Client, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _scenario(client, db)
    monkeypatch.setattr(costs, "MAX_GROUPS", 2)
    summary = await _summary(client, group_by=["day"])
    assert summary["groups_truncated"] is True and len(summary["groups"]) == 2
    assert summary["totals"]["calls"] == 5 and _usd(summary["totals"]["cost_usd"]) == Decimal("0.36")
