"""Don't pay twice (issue 26, first part), on SQLite and PostgreSQL: every execution keeps an input_key (its
input, the outputs handed to it, its step's definition and prompt version, hashed), a start offers a
completed execution with the same key, and a stale step's cause says what changed and what to re-run."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from mcp import Client

from tests.helpers import call_ok

pytestmark = pytest.mark.anyio

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
