"""Budgets that hold under concurrency (issue 14), on SQLite and PostgreSQL: block or warn, reservations
held by running executions, the thresholds a call crosses, and the team's own prices."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_server.db.engine import Database
from tests.helpers import call_error, call_ok, table_counts
from tests.test_cli import run_cli
from tests.test_reliability_processes import PROCESSES, run_processes

pytestmark = pytest.mark.anyio


def usd(value: Any) -> Decimal:
    return Decimal(str(value))


async def _steps(client: Client, count: int, pipeline: str = "default") -> list[str]:
    ids = [f"s{i}" for i in range(count)]
    await call_ok(client, "apply_pipeline", pipeline_id=pipeline, processes=[{"process_id": i, "name": i} for i in ids])
    return ids


async def test_block_refuses_starts_past_the_budget_and_reservations_are_held_and_released(
    client: Client, db: Database
) -> None:
    await _steps(client, 4)
    project = (await call_ok(client, "create_project", name="b", budget_usd="0.05", budget_policy="block"))["id"]
    assert (await call_ok(client, "get_project", project_id=project))["budget_policy"] == "block"

    first = await call_ok(client, "start_execution", project_id=project, process_id="s0", reserve_usd="0.03")
    assert usd(first["budget"]["reserved_usd"]) == Decimal("0.03") and usd(first["budget"]["remaining_usd"]) == Decimal(
        "0.02"
    )
    held = await call_ok(client, "get_execution", execution_id=first["execution"]["id"])
    assert usd(held["reserved_usd"]) == Decimal("0.03")
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    assert usd(status["cost"]["reserved_usd"]) == Decimal("0.03") and status["cost"]["policy"] == "block"

    before = await table_counts(db)
    text = await call_error(
        client, "start_execution", "budget_exceeded", project_id=project, process_id="s1", reserve_usd="0.03"
    )
    assert "budget 0.05" in text and "spent 0" in text and "reserved 0.03" in text and "remaining 0.02" in text
    assert "would pass its budget" in text and "at most" not in text  # never advice to under-declare
    assert "keep reserve_usd at the step's expected cost" in text
    assert await table_counts(db) == before

    # Finishing releases the hold; the real cost is what the usage logs (and may pass the budget).
    usage = {"provider": "x", "model": "y", "cost_usd": "0.045"}
    done = await call_ok(
        client, "record_execution", project_id=project, process_id="s0", output_data={},
        execution_id=first["execution"]["id"], usage=usage,
    )  # fmt: skip
    budget = done["budget"]
    assert usd(budget["reserved_usd"]) == 0 and usd(budget["spent_usd"]) == Decimal("0.045")
    assert budget["crossed"] == [50, 80] and budget["exceeded"] is False
    assert "reserved_usd" not in await call_ok(client, "get_execution", execution_id=first["execution"]["id"])

    # Without reserve_usd, a start is refused only once spent + reserved has reached the budget.
    second = await call_ok(client, "start_execution", project_id=project, process_id="s1")
    over = await call_ok(client, "report_cost", provider="x", model="y", cost_usd="0.01", project_id=project)
    assert over["budget"]["exceeded"] is True and over["budget"]["crossed"] == [100]  # stored all the same
    await call_error(client, "start_execution", "budget_exceeded", project_id=project, process_id="s2")
    failed = await call_ok(client, "fail_execution", execution_id=second["execution"]["id"], error_message="x")
    assert failed["execution"]["status"] == "failed"

    # warn never refuses; raising the budget lets block start again.
    await call_ok(client, "update_project", project_id=project, budget_policy="warn")
    await call_ok(client, "start_execution", project_id=project, process_id="s2", reserve_usd="1")
    await call_ok(client, "update_project", project_id=project, budget_policy="block", budget_usd="5")
    await call_ok(client, "start_execution", project_id=project, process_id="s3", reserve_usd="1")
    project_row = await call_ok(client, "get_project", project_id=project)
    assert usd(project_row["reserved_usd"]) == 2 and project_row["budget_policy"] == "block"
    assert usd(project_row["remaining_usd"]) == 5 - usd(project_row["spent_usd"]) - 2
    assert project_row["exceeded"] is False


async def test_thresholds_are_said_once_by_the_call_that_crosses_them(client: Client) -> None:
    project = (await call_ok(client, "create_project", name="t", budget_usd="1"))["id"]
    crossed = []
    for cost in ("0.3", "0.3", "0.1", "0.2", "0.2", "0.1"):
        reply = await call_ok(client, "report_cost", provider="x", model="y", cost_usd=cost, project_id=project)
        crossed.append(reply["budget"].get("crossed"))
    assert crossed == [None, [50], None, [80], [100], None]


async def _eight_starts(db_url: str, tmp_path: Path, client: Client) -> None:
    """PROCESSES server processes, each starting a different ready step with 0.01 reserved on a 0.05 budget
    under `block`, all at once: exactly 5 start, the others get budget_exceeded."""
    await _steps(client, PROCESSES)
    project = (await call_ok(client, "create_project", name="race", budget_usd="0.05", budget_policy="block"))["id"]
    outcomes: list[str] = []

    async def work(index: int, worker: Client) -> None:
        result = await worker.call_tool(
            "start_execution", {"project_id": project, "process_id": f"s{index}", "reserve_usd": "0.01"}
        )
        text = str(result.content[0].text)  # type: ignore[union-attr]
        outcomes.append("budget_exceeded" if "budget_exceeded" in text else "error" if result.is_error else "ok")

    await run_processes(db_url, tmp_path, work, barrier=True)
    assert sorted(outcomes) == ["budget_exceeded"] * 3 + ["ok"] * 5
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    assert usd(status["cost"]["reserved_usd"]) == Decimal("0.05") and status["counts"]["running"] == 5
    listed = await call_ok(client, "list_executions", project_id=project, include_data=True)
    assert sum(usd(e["reserved_usd"]) for e in listed["items"]) == Decimal("0.05")


@pytest.mark.slow
async def test_eight_processes_starting_at_once_never_pass_the_budget(
    db_url: str, tmp_path: Path, client: Client
) -> None:
    with anyio.fail_after(240):
        await _eight_starts(db_url, tmp_path, client)


async def test_custom_prices_take_precedence_and_stay_exact(client: Client, db_url: str) -> None:
    project = (await call_ok(client, "create_project", name="p"))["id"]
    known = {"provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 1_000_000}
    computed = await call_ok(client, "report_cost", **known, project_id=project)
    assert computed["cost"]["cost_source"] == "computed"

    result = run_cli("prices", "set", "OpenAI", "gpt-4o-mini", "--input", "2.0", "--output", "4", url=db_url)
    assert result.returncode == 0, result.stderr
    custom = await call_ok(client, "report_cost", **known, completion_tokens=250_000, project_id=project)
    assert custom["cost"]["cost_source"] == "custom" and usd(custom["cost"]["cost_usd"]) == Decimal("3")
    cached = await call_ok(client, "report_cost", **known, cache_read_tokens=500_000, project_id=project)
    assert usd(cached["cost"]["cost_usd"]) == Decimal("2")  # no cache price given: the input price
    run_cli(
        "prices", "set", "openai", "gpt-4o-mini", "--input", "2", "--output", "4", "--cache-read", "0.5", url=db_url
    )
    cheaper = await call_ok(client, "report_cost", **known, cache_read_tokens=500_000, project_id=project)
    assert usd(cheaper["cost"]["cost_usd"]) == Decimal("1.25")
    reported = await call_ok(client, "report_cost", **known, cost_usd="0.7", project_id=project)
    assert reported["cost"]["cost_source"] == "reported"  # a reported cost is never repriced

    listed = run_cli("prices", "list", "--json", url=db_url)
    assert '"input_per_mtok": "2"' in listed.stdout and '"genai_prices"' in listed.stdout
    table = run_cli("prices", "list", url=db_url)
    assert "gpt-4o-mini" in table.stdout and "genai-prices" in table.stdout
    summary = await call_ok(client, "get_cost_summary", project_id=project, group_by=["source"])
    by_source = {g["cost_source"]: g for g in summary["groups"]}
    assert by_source["custom"]["calls"] == 3 and by_source["computed"]["calls"] == 1

    assert run_cli("prices", "unset", "openai", "gpt-4o-mini", url=db_url).returncode == 0
    again = await call_ok(client, "report_cost", **known, project_id=project)
    assert again["cost"]["cost_source"] == "computed"
    assert run_cli("prices", "unset", "openai", "gpt-4o-mini", url=db_url).returncode == 1
    bad = run_cli("prices", "set", "openai", "m", "--input", "-1", "--output", "1", url=db_url)
    assert bad.returncode == 2 and "between 0" in bad.stderr
