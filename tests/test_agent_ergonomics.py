"""What an agent trips on (issue 18), through the in-memory client on SQLite and PostgreSQL: concurrent
finishes never overwrite silently, dependency outputs are handed over, and a redo plan in order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from mcp_server.db.engine import Database
from tests.helpers import call_error, call_ok, table_counts
from tests.test_pipeline_tools import diamond, record, status_of

pytestmark = pytest.mark.anyio


async def _start(client: Client, project: str, pid: str, **extra: Any) -> dict[str, Any]:
    return await call_ok(client, "start_execution", project_id=project, process_id=pid, **extra)


async def test_a_one_call_record_on_a_running_step_is_refused_naming_the_running_execution(
    client: Client, db: Database
) -> None:
    project = await diamond(client)
    started = await _start(client, project, "a")
    running = started["execution"]["id"]
    before = await table_counts(db)
    text = await call_error(
        client, "record_execution", "invalid_transition", project_id=project, process_id="a", output_data={"v": 2}
    )
    assert running in text and "started" in text
    assert "fail_execution" in text and "force=true" in text
    assert await table_counts(db) == before
    # force records over it; the state moves on and the running execution is still running.
    forced = await record(client, project, "a", 2, force=True)
    assert forced["state"]["state"] == "completed" and "superseded" in forced["note"]
    assert (await call_ok(client, "get_execution", execution_id=running))["status"] == "running"


async def test_a_late_finish_after_another_result_is_stored_as_superseded_and_names_the_winner(
    client: Client,
) -> None:
    project = await diamond(client)
    await record(client, project, "a", 1)
    await record(client, project, "b", 1)
    slow = (await _start(client, project, "b"))["execution"]["id"]
    winner = await record(client, project, "b", 2, force=True)
    winner_id = winner["execution"]["id"]
    version = winner["state"]["version"]

    late = await record(client, project, "b", 3, execution_id=slow)
    assert late["execution"]["status"] == "superseded"
    assert late["superseded_by"] == winner_id
    assert "force=true" in late["note"]
    assert late["invalidated"] == [] and late["output_changed"] is False
    state = await call_ok(client, "get_process_state", project_id=project, process_id="b")
    assert state["current_execution_id"] == winner_id and state["version"] == version
    assert (await call_ok(client, "get_execution", execution_id=slow))["output_data"] == {"v": 3}

    # Finishing with force replaces the winner, as the note says.
    again = (await _start(client, project, "b"))["execution"]["id"]
    other = await record(client, project, "b", 4, force=True)
    forced = await record(client, project, "b", 5, execution_id=again, force=True)
    assert forced["execution"]["status"] == "completed" and "superseded_by" not in forced
    state = await call_ok(client, "get_process_state", project_id=project, process_id="b")
    assert state["current_execution_id"] == again != other["execution"]["id"]


async def test_a_plain_start_and_finish_is_not_superseded(client: Client) -> None:
    project = await diamond(client)
    await record(client, project, "a", 1)
    started = (await _start(client, project, "a"))["execution"]["id"]
    finished = await record(client, project, "a", 2, execution_id=started)
    assert finished["execution"]["status"] == "completed" and "superseded_by" not in finished
    assert [i["process_id"] for i in finished["invalidated"]] == []


async def test_start_and_get_process_state_hand_over_the_dependencies_outputs(client: Client) -> None:
    project = await diamond(client)
    await record(client, project, "a", 1)
    started = await _start(client, project, "b")
    assert started["inputs"] == {"a": {"v": 1}} and "inputs_omitted" not in started
    await record(client, project, "b", 2, execution_id=started["execution"]["id"])
    await record(client, project, "c", 3)
    state = await call_ok(client, "get_process_state", project_id=project, process_id="d")
    assert state["inputs"] == {"b": {"v": 2}, "c": {"v": 3}}
    first = await call_ok(client, "get_process_state", project_id=project, process_id="a")
    assert "inputs" not in first  # no dependencies, nothing to hand over


async def test_outputs_too_large_together_are_named_with_their_executions(client: Client) -> None:
    for pid in ("big1", "big2"):
        await call_ok(client, "define_process", process_id=pid, name=pid)
    await call_ok(client, "define_process", process_id="join", name="join", depends_on=["big1", "big2"])
    project = str((await call_ok(client, "create_project", name="big"))["id"])
    blob = "x" * 40_000  # each fits alone in 64 KB; both do not
    first = await call_ok(client, "record_execution", project_id=project, process_id="big1", output_data={"s": blob})
    second = await call_ok(client, "record_execution", project_id=project, process_id="big2", output_data={"s": blob})
    started = await _start(client, project, "join")
    assert started["inputs"] == {"big1": {"s": blob}}
    assert started["inputs_omitted"] == {"big2": second["execution"]["id"]}
    assert first["execution"]["id"] != second["execution"]["id"]


async def test_invalidated_comes_in_dependency_order_and_the_plan_lists_what_to_redo(client: Client) -> None:
    # z -> m -> a, with order_index making alphabetical and dependency order disagree.
    await call_ok(client, "define_process", process_id="z", name="Z")
    await call_ok(client, "define_process", process_id="m", name="M", depends_on=["z"])
    await call_ok(client, "define_process", process_id="a", name="A", depends_on=["m"])
    await call_ok(client, "define_process", process_id="y", name="Y", depends_on=["z"], order_index=-1)
    project = str((await call_ok(client, "create_project", name="order"))["id"])
    for pid in ("z", "y", "m", "a"):
        await call_ok(client, "record_execution", project_id=project, process_id=pid, output_data={"r": 1})
    changed = await call_ok(client, "record_execution", project_id=project, process_id="z", output_data={"r": 2})
    assert [i["process_id"] for i in changed["invalidated"]] == ["y", "m", "a"]
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    assert status["plan"] == ["y", "m", "a"] and status["plan_count"] == 3
    assert status["ready_processes"] == ["y", "m"]
    rows = await status_of(client, project)
    assert rows["a"]["blocked_by"] == ["m"] and "blocked_by" not in rows["m"]
    hand = await call_ok(client, "invalidate_process", project_id=project, process_id="z")
    assert [i["process_id"] for i in hand["invalidated"]] == []  # already stale below
    fresh = str((await call_ok(client, "create_project", name="fresh"))["id"])
    assert (await call_ok(client, "get_pipeline_status", project_id=fresh))["plan"] == ["z", "y", "m", "a"]


def _text(result: Any) -> bytes:
    return str(result.content[0].text).encode()


async def test_replies_are_compact_on_the_text_a_model_reads(client: Client) -> None:
    ids = [f"step_{i}" for i in range(20)]
    for i, pid in enumerate(ids):
        await call_ok(
            client, "define_process", process_id=pid, name=f"Step number {i}", depends_on=ids[max(0, i - 2) : i]
        )
    project = str((await call_ok(client, "create_project", name="compact", budget_usd="5"))["id"])
    prompt = (await call_ok(client, "save_prompt_version", prompt_id="p", user_template="Do {{x}}"))["id"]
    usage = {"provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 1200, "completion_tokens": 300}
    arguments = {"project_id": project, "output_data": {"summary": "short"}, "usage": usage}
    first = await client.call_tool("record_execution", {**arguments, "process_id": ids[0]})
    assert len(_text(first)) <= 700, _text(first)
    for pid in ids[1:]:
        await call_ok(
            client, "record_execution", **arguments, process_id=pid, input_data={"q": "x" * 200},
            reasoning="because " * 50, prompt_version_id=prompt,
        )  # fmt: skip
    started = await call_ok(client, "start_execution", project_id=project, process_id=ids[5])
    await call_ok(client, "fail_execution", execution_id=started["execution"]["id"], error_message="timed out")
    changed = await client.call_tool("record_execution", {**arguments, "process_id": ids[0], "output_data": {"s": 2}})
    # Each invalidated step adds one short entry; the execution it replaced (its id, completion time and agent:
    # a replaced completed output is never silent) and the step it unblocked, one each.
    assert len(_text(changed)) <= 700 + 60 * 19 + 130 + 30

    listed = await client.call_tool("list_executions", {"project_id": project, "page_size": 100})
    rows = listed.structured_content["items"]  # type: ignore[index]
    assert len(rows) == 22 and all("output_data" not in row and "reasoning" not in row for row in rows)
    assert all(len(json.dumps(row, separators=(",", ":")).encode()) <= 300 for row in rows), rows
    assert len(_text(listed)) <= 300 * len(rows)
    whole = await call_ok(client, "list_executions", project_id=project, include_data=True, page_size=1)
    assert whole["items"][0]["output_data"] == {"s": 2}

    status = await client.call_tool("get_pipeline_status", {"project_id": project})
    steps = status.structured_content["processes"]  # type: ignore[index]
    assert len(steps) == 20 and len(_text(status)) <= 300 * len(steps)
    assert all(len(json.dumps(row, separators=(",", ":")).encode()) <= 300 for row in steps)

    summary = await call_ok(client, "get_cost_summary", project_id=project, group_by=["process"])
    assert all(None not in group.values() for group in summary["groups"])
    one = next(row for row in rows if row["process_id"] == ids[1])
    full = await call_ok(client, "get_execution", execution_id=one["id"])
    assert "input_data" in full and "output_hash" in full and "reasoning" in full


async def test_a_second_start_names_the_running_execution_and_a_misnamed_argument_keeps_the_usage(
    client: Client, db: Database
) -> None:
    project = await diamond(client)
    running = (await _start(client, project, "a"))["execution"]["id"]
    text = await call_error(client, "start_execution", "invalid_transition", project_id=project, process_id="a")
    assert running in text and "fail_execution" in text
    before = await table_counts(db)
    usage = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 10}
    text = await call_error(
        client, "record_execution", "invalid_argument", project_id=project, process_id="a", output={"v": 1},
        execution_id=running, usage=usage,
    )  # fmt: skip
    assert "did you mean 'output_data'" in text and "NOT logged" in text and running in text
    assert await table_counts(db) == before


async def test_failing_an_overtaken_execution_leaves_the_step_to_the_one_running_now(client: Client) -> None:
    project = await diamond(client)
    first = (await _start(client, project, "a"))["execution"]["id"]
    await record(client, project, "a", 1, force=True)  # overtakes the first
    second = await _start(client, project, "a")
    failed = await call_ok(client, "fail_execution", execution_id=first, error_message="gave up")
    assert failed["execution"]["status"] == "failed" and failed["state"]["state"] == "running"
    assert failed["state"]["version"] == second["state"]["version"]


async def test_a_running_steps_state_hands_a_resuming_agent_its_inputs_and_schemas(client: Client) -> None:
    output_schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    input_schema = {"type": "object", "properties": {"tone": {"type": "string"}}}
    await call_ok(client, "define_process", process_id="outline", name="Outline")
    await call_ok(client, "define_process", process_id="draft", name="Draft", depends_on=["outline"],
                  input_schema=input_schema, output_schema=output_schema)  # fmt: skip
    project = str((await call_ok(client, "create_project", name="resume"))["id"])
    await call_ok(client, "record_execution", project_id=project, process_id="outline", output_data={"points": 3})
    started = await call_ok(client, "start_execution", project_id=project, process_id="draft")
    # One call tells an agent resuming after a crash what runs, what it was handed and what to produce.
    state = await call_ok(client, "get_process_state", project_id=project, process_id="draft")
    assert state["state"] == "running" and state["running_execution_id"] == started["execution"]["id"]
    assert state["inputs"] == {"outline": {"points": 3}}
    assert state["input_schema"] == input_schema and state["output_schema"] == output_schema
    plain = await call_ok(client, "get_process_state", project_id=project, process_id="outline")
    assert "input_schema" not in plain and "output_schema" not in plain  # none defined: left out
