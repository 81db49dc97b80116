"""get_cost_summary through the MCP client on SQLite and PostgreSQL: an unknown cost is never 0
(nor is unknown rework), and costs grouped by the prompt version of their execution."""

from __future__ import annotations

import io
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from mcp import Client
from rich.console import Console

from mcp_server.cli.tables import cost_table
from tests.helpers import call_ok

pytestmark = pytest.mark.anyio


async def _summary(client: Client, **args: Any) -> dict[str, Any]:
    """The structured reply, checked to be what the model reads: the text content, without a null."""
    result = await client.call_tool("get_cost_summary", args)
    assert not result.is_error and result.structured_content is not None
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text) == result.structured_content
    assert "null" not in text, text
    return result.structured_content


def _cost(figures: dict[str, Any], field: str = "cost_usd") -> Decimal | None:
    """A money figure, None when the reply leaves it out; present money travels as a decimal string."""
    if field not in figures:
        return None
    assert isinstance(figures[field], str), figures[field]
    return Decimal(figures[field])


def _row(figures: dict[str, Any]) -> tuple[Decimal | None, int, int]:
    return _cost(figures), figures["calls"], figures["unpriced_calls"]


async def _report(client: Client, model: str, cost: str | None = None, **links: Any) -> None:
    args: dict[str, Any] = {"provider": "acme" if cost is None else "openai", "model": model, **links}
    if cost is not None:
        args["cost_usd"] = cost
    reply = await call_ok(client, "report_cost", prompt_tokens=10, **args)
    assert reply["cost"]["cost_source"] == ("unpriced" if cost is None else "reported")


def _table_row(summary: dict[str, Any], group_by: list[str], first_cell: str) -> dict[str, str]:
    """The CLI `costs` table's row that starts with ``first_cell``, as {column: cell}."""
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(cost_table(summary, group_by))
    lines = console.export_text().splitlines()
    header = [cell.strip() for cell in next(line for line in lines if "┃" in line).split("┃")]
    for line in lines:
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 1 and cells[1] == first_cell:
            return dict(zip(header, cells, strict=True))
    raise AssertionError(f"no row {first_cell!r} in {lines}")


# --- an unknown cost is not zero ------------------------------------------------------------


async def test_a_group_of_only_unpriced_calls_has_no_cost_and_counts_them(client: Client) -> None:
    await _report(client, "gpt-4o", "0.1")
    await _report(client, "gpt-4o", "0.2")
    await _report(client, "mystery-1")
    await _report(client, "mystery-1")
    await _report(client, "mystery-2", "0.0001")  # priced by hand …
    await _report(client, "mystery-2")  # … beside an unpriced one: the priced sum stands

    summary = await _summary(client, group_by=["model"])
    groups = {g["model"]: g for g in summary["groups"]}
    assert _row(groups["gpt-4o"]) == (Decimal("0.3"), 2, 0)
    assert _row(groups["mystery-1"]) == (None, 2, 2)
    assert _row(groups["mystery-2"]) == (Decimal("0.0001"), 2, 1)
    assert _row(summary["totals"]) == (Decimal("0.3001"), 6, 3)
    # No execution behind any call: no rework, known to be 0.
    assert all(_cost(g, "superseded_cost_usd") == 0 and g["superseded_unpriced_calls"] == 0 for g in groups.values())

    only_unknown = await _summary(client, model="mystery-1")
    assert _row(only_unknown["totals"]) == (None, 2, 2)
    assert _row((await _summary(client, model="no-such-model"))["totals"]) == (Decimal("0"), 0, 0)

    row = _table_row(summary, ["model"], "mystery-1")
    assert (row["cost (USD)"], row["rework (USD)"], row["unpriced"]) == ("unpriced", "0", "2")


async def test_superseded_unpriced_calls_count_unpriced_calls_on_re_run_steps(client: Client) -> None:
    project = (await call_ok(client, "create_project", name=f"p-{uuid.uuid4().hex[:6]}"))["id"]
    await call_ok(client, "define_process", process_id="a", name="A")
    unpriced = {"provider": "acme", "model": "mystery-1", "prompt_tokens": 10}

    first = await call_ok(
        client, "record_execution", project_id=project, process_id="a", output_data={"v": 1}, usage=unpriced
    )
    totals = (await _summary(client, project_id=project))["totals"]
    assert _row(totals) == (None, 1, 1)  # the current execution's call is no rework
    assert _cost(totals, "superseded_cost_usd") == 0 and totals["superseded_unpriced_calls"] == 0

    await call_ok(client, "record_execution", project_id=project, process_id="a", output_data={"v": 2}, usage=unpriced)
    await _report(client, "loose-call", project_id=project)  # linked to no execution: never rework
    summary = await _summary(client, project_id=project, group_by=["process"])
    totals = summary["totals"]
    assert _row(totals) == (None, 3, 3)
    assert "superseded_cost_usd" not in totals and totals["superseded_unpriced_calls"] == 1
    by_process = {g.get("process_id"): g for g in summary["groups"]}
    assert by_process["a"]["superseded_unpriced_calls"] == 1 and "superseded_cost_usd" not in by_process["a"]
    assert by_process[None]["superseded_unpriced_calls"] == 0 and _cost(by_process[None], "superseded_cost_usd") == 0
    assert _table_row(summary, ["process"], "a")["rework (USD)"] == "unpriced"
    assert _table_row(summary, ["process"], "—")["cost (USD)"] == "unpriced"  # the loose call: no process

    # A priced call on the superseded execution: its rework has a known part now.
    await _report(client, "gpt-4o", "0.5", execution_id=first["execution"]["id"])
    totals = (await _summary(client, project_id=project))["totals"]
    assert _cost(totals, "superseded_cost_usd") == Decimal("0.5") and totals["superseded_unpriced_calls"] == 1
    assert _row(totals) == (Decimal("0.5"), 4, 3)


# --- grouping by prompt version -------------------------------------------------------------


async def _prompt_scenario(client: Client) -> tuple[str, dict[str, str]]:
    """Executions on three prompt versions and one on none; returns the project and the execution ids."""
    project = (await call_ok(client, "create_project", name=f"p-{uuid.uuid4().hex[:6]}"))["id"]
    for process in ("a", "b", "c"):
        await call_ok(client, "define_process", process_id=process, name=process.upper())
    s1 = (await call_ok(client, "save_prompt_version", prompt_id="summarize", system_prompt="Be brief."))["id"]
    s2 = (await call_ok(client, "save_prompt_version", prompt_id="summarize", system_prompt="Be briefer."))["id"]
    c1 = (await call_ok(client, "save_prompt_version", prompt_id="critic", system_prompt="Find faults."))["id"]

    async def run(process: str, version: str | None, cost: str, output: int) -> str:
        usage = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 100, "cost_usd": cost}
        args = {"prompt_version_id": version} if version else {}
        reply = await call_ok(
            client,
            "record_execution",
            project_id=project,
            process_id=process,
            output_data={"v": output},
            usage=usage,
            **args,
        )
        return str(reply["execution"]["id"])

    runs = {
        "a1": await run("a", s1, "0.1", 1),
        "a2": await run("a", s2, "0.2", 2),  # a re-run on the next version: a1's cost is rework
        "b": await run("b", c1, "0.3", 1),
        "c": await run("c", None, "0.05", 1),
    }
    await _report(client, "o1", "0.0001", execution_id=runs["a2"])
    await _report(client, "mystery-1", execution_id=runs["b"])
    await _report(client, "gpt-4o", "0.7")  # no execution, no project
    return project, runs


def _by_prompt(groups: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], tuple[Decimal | None, int, int]]:
    return {tuple(g.get(k) for k in (*keys, "prompt_id", "prompt_version")): _row(g) for g in groups}


async def test_grouping_by_prompt_gives_exact_per_version_sums_matching_the_totals(client: Client) -> None:
    project, _ = await _prompt_scenario(client)
    summary = await _summary(client, group_by=["prompt"])
    assert summary["group_by"] == ["prompt"]
    # Ordered by prompt id then version, the calls of no prompt version last.
    assert [(g.get("prompt_id"), g.get("prompt_version")) for g in summary["groups"]] == [
        ("critic", 1),
        ("summarize", 1),
        ("summarize", 2),
        (None, None),
    ]
    assert _by_prompt(summary["groups"]) == {
        ("critic", 1): (Decimal("0.3"), 2, 1),
        ("summarize", 1): (Decimal("0.1"), 1, 0),
        ("summarize", 2): (Decimal("0.2001"), 2, 0),
        (None, None): (Decimal("0.75"), 2, 0),
    }
    unassigned = summary["groups"][-1]
    assert "prompt_id" not in unassigned and "prompt_version" not in unassigned
    assert isinstance(summary["groups"][0]["prompt_version"], int)
    rework = {(g.get("prompt_id"), g.get("prompt_version")): _cost(g, "superseded_cost_usd") for g in summary["groups"]}
    assert rework == {("critic", 1): 0, ("summarize", 1): Decimal("0.1"), ("summarize", 2): 0, (None, None): 0}

    ungrouped = (await _summary(client))["totals"]
    assert summary["totals"] == ungrouped
    assert _row(ungrouped) == (Decimal("1.3501"), 7, 1)
    assert sum(_cost(g) or 0 for g in summary["groups"]) == Decimal("1.3501")

    # Filters still apply to the joined rows: the call with no project leaves the last group.
    in_project = await _summary(client, project_id=project, group_by=["prompt"])
    assert _by_prompt(in_project["groups"])[(None, None)] == (Decimal("0.05"), 1, 0)
    assert _row(in_project["totals"]) == (Decimal("0.6501"), 6, 1)
    assert _table_row(in_project, ["prompt"], "critic v1")["cost (USD)"] == "0.3"
    assert _table_row(in_project, ["prompt"], "—")["cost (USD)"] == "0.05"


async def test_model_and_prompt_group_by_their_tuple(client: Client) -> None:
    await _prompt_scenario(client)
    summary = await _summary(client, group_by=["model", "prompt"])
    assert _by_prompt(summary["groups"], "model") == {
        ("gpt-4o", "critic", 1): (Decimal("0.3"), 1, 0),
        ("gpt-4o", "summarize", 1): (Decimal("0.1"), 1, 0),
        ("gpt-4o", "summarize", 2): (Decimal("0.2"), 1, 0),
        ("gpt-4o", None, None): (Decimal("0.75"), 2, 0),
        ("mystery-1", "critic", 1): (None, 1, 1),
        ("o1", "summarize", 2): (Decimal("0.0001"), 1, 0),
    }
    assert summary["totals"] == (await _summary(client))["totals"]
    by_prompt_then_process = await _summary(client, group_by=["prompt", "process"])
    assert [
        (g.get("prompt_id"), g.get("prompt_version"), g.get("process_id")) for g in by_prompt_then_process["groups"]
    ] == [
        ("critic", 1, "b"),
        ("summarize", 1, "a"),
        ("summarize", 2, "a"),
        (None, None, "c"),
        (None, None, None),
    ]
