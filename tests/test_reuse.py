"""Don't pay twice (issue 26, first part), on SQLite and PostgreSQL: every execution keeps an input_key (its
input, the outputs handed to it, its step's definition and prompt version, hashed), a start offers a
completed execution with the same key, and a stale step's cause says what changed and what to re-run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.helpers import Clock, call_error, call_ok, moved_clock
from tests.test_reliability_processes import on_two_servers

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> Iterator[Clock]:
    with moved_clock(datetime.now(UTC)) as moved:
        yield moved


STEPS = [
    {"process_id": "research", "name": "Research"},
    {"process_id": "draft", "name": "Draft", "depends_on": ["research"]},
]


async def _run(client: Client, project: str, step: str, input_data: dict[str, Any], **more: Any) -> dict[str, Any]:
    started = await call_ok(
        client, "start_execution", project_id=project, process_id=step, input_data=input_data, **more
    )
    await call_ok(
        client, "record_execution", project_id=project, process_id=step, execution_id=started["execution"]["id"],
        output_data={"text": f"{step} {input_data}"}, usage={"provider": "x", "model": "y", "cost_usd": "0.25"},
    )  # fmt: skip
    return started


async def test_a_start_with_the_same_inputs_offers_the_completed_execution_and_any_change_breaks_it(
    client: Client,
) -> None:
    await call_ok(client, "apply_pipeline", processes=STEPS)
    project = (await call_ok(client, "create_project", name="reuse"))["id"]
    await _run(client, project, "research", {"topic": "tides"})
    first = await _run(client, project, "draft", {"tone": "plain"})
    assert "reusable" not in first
    key = (await call_ok(client, "get_execution", execution_id=first["execution"]["id"]))["input_key"]
    assert len(key) == 64

    again = await call_ok(
        client, "start_execution", project_id=project, process_id="draft", input_data={"tone": "plain"}
    )
    offered = again["reusable"]
    assert offered["execution_id"] == first["execution"]["id"] and Decimal(offered["cost_usd"]) == Decimal("0.25")
    await call_ok(client, "fail_execution", execution_id=again["execution"]["id"], error_message="reused instead")

    # One byte of input, the prompt version, the definition or an upstream output: another key, no offer.
    other = await call_ok(
        client, "start_execution", project_id=project, process_id="draft", input_data={"tone": "plaiN"}
    )
    assert "reusable" not in other
    await call_ok(client, "fail_execution", execution_id=other["execution"]["id"], error_message="x")
    prompt = (await call_ok(client, "save_prompt_version", prompt_id="draft", user_template="Write {tone}"))["id"]
    prompted = await call_ok(
        client, "start_execution", project_id=project, process_id="draft", input_data={"tone": "plain"},
        prompt_version_id=prompt,
    )  # fmt: skip
    assert "reusable" not in prompted
    await call_ok(client, "fail_execution", execution_id=prompted["execution"]["id"], error_message="x")
    await call_ok(client, "define_process", process_id="draft", output_schema={"type": "object"})
    redefined = await call_ok(
        client, "start_execution", project_id=project, process_id="draft", input_data={"tone": "plain"}, force=True
    )
    assert "reusable" not in redefined
    await call_ok(client, "fail_execution", execution_id=redefined["execution"]["id"], error_message="x")
    await _run(client, project, "research", {"topic": "currents"})
    upstream = await call_ok(
        client, "start_execution", project_id=project, process_id="draft", input_data={"tone": "plain"}, force=True
    )
    assert "reusable" not in upstream


async def test_a_stale_step_says_which_execution_or_which_part_of_a_definition_made_it_stale(client: Client) -> None:
    await call_ok(client, "apply_pipeline", processes=STEPS)
    project = (await call_ok(client, "create_project", name="causes"))["id"]
    await _run(client, project, "research", {})
    await _run(client, project, "draft", {})
    newer = await call_ok(client, "record_execution", project_id=project, process_id="research", output_data={"n": 2})
    state = await call_ok(client, "get_process_state", project_id=project, process_id="draft")
    reason = state["invalidation_reason"]
    assert f"upstream 'research' has a new output (execution {newer['execution']['id']})" in reason
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    row = next(step for step in status["processes"] if step["process_id"] == "draft")
    assert row["invalidation_reason"] == "upstream 'research' has a new output"  # a row stays short

    await _run(client, project, "draft", {})
    await call_ok(client, "define_process", process_id="research", output_schema={"type": "object"})
    state = await call_ok(client, "get_process_state", project_id=project, process_id="draft")
    reason = state["invalidation_reason"]
    assert reason == "upstream 'research' definition changed (output_schema): re-run from 'research'"
    own = await call_ok(client, "get_process_state", project_id=project, process_id="research")
    reason = own["invalidation_reason"]
    assert reason.startswith("the definition of 'research' changed (output_schema)")


async def test_reuse_true_completes_the_step_at_no_cost_and_the_saving_is_counted(client: Client) -> None:
    await call_ok(client, "apply_pipeline", processes=STEPS)
    project = (await call_ok(client, "create_project", name="saved"))["id"]
    assert (await call_ok(client, "get_cost_summary", project_id=project))["saved_usd"] == "0"  # said, not absent
    await _run(client, project, "research", {"topic": "tides"})
    first = await _run(client, project, "draft", {"tone": "plain"})
    await call_ok(client, "invalidate_process", project_id=project, process_id="draft", reason="redo")

    taken = await call_ok(
        client, "start_execution", project_id=project, process_id="draft", input_data={"tone": "plain"}, reuse=True
    )
    assert taken["reused_from"] == first["execution"]["id"] and Decimal(taken["saved_usd"]) == Decimal("0.25")
    assert taken["execution"]["status"] == "completed" and taken["state"]["state"] == "completed"
    assert "lease_token" not in taken and "budget" not in taken
    reused = await call_ok(client, "get_execution", execution_id=taken["execution"]["id"])
    assert reused["reused_from"] == first["execution"]["id"] and reused["output_data"] == {
        "text": "draft {'tone': 'plain'}"
    }
    state = await call_ok(client, "get_process_state", project_id=project, process_id="draft")
    assert state["current_execution_id"] == taken["execution"]["id"] and state["state"] == "completed"

    summary = await call_ok(client, "get_cost_summary", project_id=project)
    assert Decimal(summary["totals"]["cost_usd"]) == Decimal("0.50")  # the reuse logged nothing
    assert Decimal(summary["saved_usd"]) == Decimal("0.25")
    assert Decimal((await call_ok(client, "get_project", project_id=project))["saved_usd"]) == Decimal("0.25")
    assert "saved_usd" not in await call_ok(client, "get_cost_summary", project_id=project, provider="x")

    # A reuse of a reuse saves what the first run cost; reuse=false runs anyway (and is still offered it).
    await call_ok(client, "invalidate_process", project_id=project, process_id="draft")
    again = await call_ok(
        client, "start_execution", project_id=project, process_id="draft", input_data={"tone": "plain"}, reuse=True
    )
    assert again["reused_from"] == taken["execution"]["id"] and Decimal(again["saved_usd"]) == Decimal("0.25")
    fresh = await call_ok(
        client, "start_execution", project_id=project, process_id="draft", input_data={"tone": "plain"}, reuse=False
    )
    assert fresh["execution"]["status"] == "running" and fresh["reusable"]["execution_id"] == again["execution"]["id"]
    assert Decimal((await call_ok(client, "get_cost_summary", project_id=project))["saved_usd"]) == Decimal("0.50")


async def test_reuse_crosses_projects_only_when_the_definition_allows_it_and_within_its_age(
    client: Client, clock: Clock
) -> None:
    await call_ok(client, "apply_pipeline", pipeline_id="news", processes=[{"process_id": "fetch", "name": "Fetch"}])
    first, second = [
        (await call_ok(client, "create_project", name=name, pipeline_id="news"))["id"] for name in ("one", "two")
    ]
    done = await _run(client, first, "fetch", {"feed": "tides"})
    local = await call_ok(
        client, "start_execution", project_id=second, process_id="fetch", input_data={"feed": "tides"}
    )
    assert "reusable" not in local  # `project` scope by default
    await call_ok(client, "fail_execution", execution_id=local["execution"]["id"], error_message="x")

    await call_ok(
        client, "define_process", pipeline_id="news", process_id="fetch", reuse="pipeline", reuse_ttl_seconds=3600
    )
    shared = await call_ok(
        client, "start_execution", project_id=second, process_id="fetch", input_data={"feed": "tides"}, force=True
    )
    assert shared["reusable"] == {
        "execution_id": done["execution"]["id"], "cost_usd": "0.25", "project_id": first,
        "completed_at": shared["reusable"]["completed_at"],
    }  # fmt: skip
    await call_ok(client, "fail_execution", execution_id=shared["execution"]["id"], error_message="x")
    clock.now += timedelta(seconds=3601)
    aged = await call_ok(
        client, "start_execution", project_id=second, process_id="fetch", input_data={"feed": "tides"}, reuse=True,
        force=True,
    )  # fmt: skip
    assert "reusable" not in aged and "reused_from" not in aged and aged["execution"]["status"] == "running"
    await call_ok(client, "fail_execution", execution_id=aged["execution"]["id"], error_message="x")

    await call_ok(
        client, "define_process", pipeline_id="news", process_id="fetch", reuse="off", clear=["reuse_ttl_seconds"]
    )
    off = await call_ok(
        client, "start_execution", project_id=first, process_id="fetch", input_data={"feed": "tides"}, reuse=True
    )
    assert "reusable" not in off and off["execution"]["status"] == "running"


@pytest.mark.slow
async def test_two_projects_starting_the_same_key_from_two_processes_run_it_once(
    db_url: str, tmp_path: Path, client: Client
) -> None:
    steps = [{"process_id": "fetch", "name": "Fetch", "reuse": "pipeline"}]
    await call_ok(client, "apply_pipeline", pipeline_id="feeds", processes=steps)
    projects = [(await call_ok(client, "create_project", name=f"p{i}", pipeline_id="feeds"))["id"] for i in range(4)]
    outcomes: dict[str, dict[str, Any]] = {}

    async def two_starts(worker: Client, server: int) -> None:
        async with anyio.create_task_group() as group:
            for project in projects[server * 2 : server * 2 + 2]:
                group.start_soon(start, worker, project)

    async def start(worker: Client, project: str) -> None:
        arguments = {"project_id": project, "process_id": "fetch", "input_data": {"feed": "tides"}, "reuse": True}
        result = await worker.call_tool("start_execution", arguments)
        text = str(result.content[0].text)  # type: ignore[union-attr]
        outcomes[project] = {"error": text} if result.is_error else dict(result.structured_content or {})

    await on_two_servers(db_url, tmp_path, two_starts)
    ran = [project for project, reply in outcomes.items() if "execution" in reply]
    assert len(ran) == 1, outcomes  # one runs; the three others are told which execution computes it
    running = outcomes[ran[0]]["execution"]["id"]
    for project in set(projects) - set(ran):
        assert outcomes[project]["error"].startswith("Error executing tool start_execution: conflict:")
        assert running in outcomes[project]["error"] and "reuse=true" in outcomes[project]["error"]
    await call_ok(
        client, "record_execution", project_id=ran[0], process_id="fetch", execution_id=running,
        output_data={"items": 3}, usage={"provider": "x", "model": "y", "cost_usd": "0.40"},
    )  # fmt: skip
    sources = {running}  # the newest completed execution of the key is taken: the run, or a reuse of it
    for project in set(projects) - set(ran):
        taken = await call_ok(
            client, "start_execution", project_id=project, process_id="fetch", input_data={"feed": "tides"}, reuse=True
        )
        assert taken["reused_from"] in sources and taken["state"]["state"] == "completed"
        assert Decimal(taken["saved_usd"]) == Decimal("0.40")
        sources.add(taken["execution"]["id"])
    summary = await call_ok(client, "get_cost_summary")
    assert Decimal(summary["totals"]["cost_usd"]) == Decimal("0.40") and Decimal(summary["saved_usd"]) == Decimal(
        "1.20"
    )


async def test_a_dead_holder_of_a_key_blocks_other_projects_only_until_its_lease_passes(
    client: Client, clock: Clock
) -> None:
    steps = [{"process_id": "fetch", "name": "Fetch", "reuse": "pipeline"}]
    await call_ok(client, "apply_pipeline", pipeline_id="feeds", processes=steps)
    first, second = [
        (await call_ok(client, "create_project", name=name, pipeline_id="feeds"))["id"] for name in ("a", "b")
    ]
    same = {"process_id": "fetch", "input_data": {"feed": "tides"}}
    dead = await call_ok(client, "start_execution", project_id=first, lease_seconds=60, **same)
    refused = await call_error(client, "start_execution", "conflict", project_id=second, **same)
    assert dead["execution"]["id"] in refused
    clock.now += timedelta(seconds=61)  # nobody touched project a since: its execution still reads running
    runs = await call_ok(client, "start_execution", project_id=second, **same)
    assert runs["execution"]["status"] == "running"
