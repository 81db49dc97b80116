"""``db prune`` (issue 17), on SQLite and PostgreSQL: superseded executions go, nothing a state points at
or that still runs, and every figure the tools give is exactly what it was."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from tests.helpers import call_ok
from tests.test_cli import run_cli

pytestmark = pytest.mark.anyio


async def _figures(client: Client, project: str) -> dict[str, Any]:
    return {
        "status": await call_ok(client, "get_pipeline_status", project_id=project),
        "totals": await call_ok(client, "get_cost_summary", project_id=project),
        **{
            key: await call_ok(client, "get_cost_summary", project_id=project, group_by=[key])
            for key in ("process", "prompt", "model", "source")
        },
        "a": await call_ok(client, "get_process_state", project_id=project, process_id="a"),
    }


async def test_prune_removes_superseded_executions_and_keeps_every_figure(client: Client, db_url: str) -> None:
    await call_ok(client, "apply_pipeline", pipeline_id="flow", processes=[
        {"process_id": "a", "name": "A"}, {"process_id": "b", "name": "B", "depends_on": ["a"]},
        {"process_id": "c", "name": "C", "depends_on": ["b"]},
    ])  # fmt: skip
    project = (await call_ok(client, "create_project", name="long", pipeline_id="flow", budget_usd="10"))["id"]
    other = (await call_ok(client, "create_project", name="kept", pipeline_id="flow"))["id"]
    v1 = (await call_ok(client, "save_prompt_version", prompt_id="p", user_template="one {{x}}"))["id"]
    v2 = (await call_ok(client, "save_prompt_version", prompt_id="p", user_template="two {{x}}"))["id"]
    priced = {"provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 1000, "completion_tokens": 100}
    unknown = {"provider": "acme", "model": "secret-1", "prompt_tokens": 10}
    for round_, prompt in enumerate((v1, v1, v2)):  # a is re-run twice: two superseded executions
        for pid in ("a", "b"):
            await call_ok(client, "record_execution", project_id=project, process_id=pid, output_data={"r": round_},
                          prompt_version_id=prompt, usage=priced if pid == "a" else unknown)  # fmt: skip
    failed = await call_ok(client, "start_execution", project_id=project, process_id="c")
    await call_ok(client, "fail_execution", execution_id=failed["execution"]["id"], error_message="boom")
    running = await call_ok(client, "start_execution", project_id=project, process_id="c", reserve_usd="0.5")
    await call_ok(client, "record_execution", project_id=other, process_id="a", output_data={"r": 0}, usage=priced)
    await call_ok(client, "record_execution", project_id=other, process_id="a", output_data={"r": 1}, usage=priced)
    before = await _figures(client, project)
    assert before["totals"]["totals"]["superseded_cost_usd"] != "0"
    listed = await call_ok(client, "list_executions", project_id=project, page_size=100)
    assert listed["total"] == 8  # 3 a, 3 b, failed c, running c

    dry = run_cli("db", "prune", "--older-than", "0d", "--project", project, "--dry-run", url=db_url)
    assert dry.returncode == 0, dry.stderr
    assert "would remove 5 superseded execution(s)" in dry.stdout and "4 cost row(s)" in dry.stdout
    assert (await call_ok(client, "list_executions", project_id=project, page_size=100))["total"] == 8
    young = run_cli("db", "prune", "--older-than", "90d", url=db_url)
    assert young.returncode == 0 and "removed 0 " in young.stdout

    pruned = run_cli("db", "prune", "--older-than", "0d", "--project", project, url=db_url)
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 5 superseded execution(s)" in pruned.stdout and "4 cost row(s) kept" in pruned.stdout
    left = {e["id"] for e in (await call_ok(client, "list_executions", project_id=project, page_size=100))["items"]}
    assert running["execution"]["id"] in left and len(left) == 3  # current a, current b, running c
    assert before["a"]["current_execution_id"] in left
    after = await _figures(client, project)
    assert after == before  # every figure, rework and cost by prompt included, to the last digit
    assert (await call_ok(client, "list_executions", project_id=other))["total"] == 2  # not this project
    bad = run_cli("db", "prune", "--older-than", "ninety days", url=db_url)
    assert bad.returncode == 2 and "90d" in bad.stderr
