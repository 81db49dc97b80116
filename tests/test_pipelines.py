"""Pipelines as namespaces (issue 13), through the in-memory client on SQLite and PostgreSQL: many
pipelines per server, definitions that mark their own staleness, whole pipelines in one call."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from mcp_server.db.engine import Database
from tests.helpers import call_error, call_ok, table_counts

pytestmark = pytest.mark.anyio

V = {"type": "object", "properties": {"v": {"type": "integer"}}}


async def _define(client: Client, pipeline: str, pid: str, deps: list[str] | None = None, **extra: Any) -> Any:
    return await call_ok(
        client, "define_process", pipeline_id=pipeline, process_id=pid, name=pid.upper(), depends_on=deps or [], **extra
    )


async def _project(client: Client, pipeline: str | None = None) -> str:
    extra = {} if pipeline is None else {"pipeline_id": pipeline}
    return str((await call_ok(client, "create_project", name=f"in {pipeline}", **extra))["id"])


async def _record(client: Client, project: str, pid: str, v: int) -> dict[str, Any]:
    return await call_ok(client, "record_execution", project_id=project, process_id=pid, output_data={"v": v})


async def test_the_same_step_id_lives_in_two_pipelines_without_touching_each_other(client: Client) -> None:
    await _define(client, "default", "design")
    await _define(client, "default", "build", ["design"], output_schema=V)
    await _define(client, "other", "build")  # no dependency, no schema: a different step
    plain = await _project(client)
    other = await _project(client, "other")
    assert (await call_ok(client, "get_project", project_id=other))["pipeline_id"] == "other"

    # In `other`, build is ready at once and takes any object; in default it waits for design.
    await call_ok(client, "record_execution", project_id=other, process_id="build", output_data={"v": "text"})
    await call_error(client, "record_execution", "not_ready", project_id=plain, process_id="build", output_data={})
    text = await call_error(client, "start_execution", "not_found", project_id=other, process_id="design")
    assert "pipeline 'other'" in text

    listed = await call_ok(client, "list_processes", pipeline_id="other")
    assert [p["id"] for p in listed["items"]] == ["build"] and listed["pipeline_id"] == "other"
    assert [p["id"] for p in (await call_ok(client, "list_processes"))["items"]] == ["design", "build"]
    status = await call_ok(client, "get_pipeline_status", project_id=other)
    assert status["pipeline_id"] == "other" and status["total"] == 1 and status["complete"] is True
    pipelines = {p["pipeline_id"]: p for p in (await call_ok(client, "list_pipelines"))["items"]}
    assert pipelines["default"] == {"pipeline_id": "default", "processes": 2, "projects": 1}
    assert pipelines["other"] == {"pipeline_id": "other", "processes": 1, "projects": 1}

    text = await call_error(client, "define_process", "invalid_argument", pipeline_id="other", process_id="x",
                            name="X", depends_on=["design"])  # fmt: skip
    assert "'design'" in text and "same pipeline" in text
    resource = await client.read_resource("pipeline://pipelines/other")
    assert '"id": "build"' in resource.contents[0].text  # type: ignore[union-attr]
    default = await client.read_resource("pipeline://processes")
    assert '"pipeline_id": "default"' in default.contents[0].text  # type: ignore[union-attr]


async def test_a_project_names_an_existing_pipeline_and_keeps_it_once_it_ran(client: Client, db: Database) -> None:
    await _define(client, "default", "a")
    await _define(client, "blue", "a")
    before = await table_counts(db)
    text = await call_error(client, "create_project", "not_found", name="x", pipeline_id="nope")
    assert "'nope'" in text and "blue" in text and "default" in text
    assert await table_counts(db) == before
    project = await _project(client)
    moved = await call_ok(client, "update_project", project_id=project, pipeline_id="blue")
    assert moved["pipeline_id"] == "blue"
    await _record(client, project, "a", 1)
    text = await call_error(client, "update_project", "conflict", project_id=project, pipeline_id="default")
    assert "executions" in text
    assert (await call_ok(client, "get_project", project_id=project))["pipeline_id"] == "blue"


async def test_a_changed_definition_makes_its_results_stale_everywhere_it_ran(client: Client) -> None:
    await _define(client, "p", "a", output_schema=V)
    await _define(client, "p", "b", ["a"])
    await _define(client, "p", "c", ["b"])
    ran = [await _project(client, "p") for _ in range(2)]
    for project in ran:
        for pid in "abc":
            await _record(client, project, pid, 1)
    fresh = await _project(client, "p")

    cosmetic = await _define(client, "p", "a", output_schema=V, description="now described", order_index=3)
    assert cosmetic["created"] is False and "stale_states" not in cosmetic
    assert cosmetic["changed"] == ["order_index", "description"]
    same = await _define(client, "p", "a", output_schema=V, description="now described", order_index=3)
    assert "stale_states" not in same and "changed" not in same

    changed = await _define(client, "p", "b", ["a"], output_schema=V)  # b now has an output schema
    assert (
        changed["changed"] == ["output_schema"] and changed["stale_states"] == 4 and changed["stale_projects"] == 2
    )  # b and c in both projects
    assert changed["stale_by_project"] == {project: ["b", "c"] for project in ran}
    for project in ran:
        status = {
            p["process_id"]: p for p in (await call_ok(client, "get_pipeline_status", project_id=project))["processes"]
        }
        assert status["a"]["state"] == "completed"
        assert status["b"]["state"] == "stale" and status["b"]["invalidated_by_process_id"] == "b"
        assert "definition" in status["b"]["invalidation_reason"]
        assert status["c"]["state"] == "stale" and status["c"]["invalidated_by_process_id"] == "b"
        assert status["b"]["version"] == 2 and status["c"]["version"] == 2
    assert (await call_ok(client, "get_pipeline_status", project_id=fresh))["counts"]["empty"] == 3


async def test_apply_pipeline_plans_adds_changes_and_removes_in_one_call(client: Client, db: Database) -> None:
    spec = [
        {"process_id": "spec", "name": "Spec"},
        {"process_id": "design", "name": "Design", "depends_on": ["spec"]},
        {"process_id": "draft", "name": "Draft", "depends_on": ["spec"]},
    ]
    first = await call_ok(client, "apply_pipeline", pipeline_id="flow", processes=spec)
    assert first["added"] == ["spec", "design", "draft"] and first["removed"] == [] and first["dry_run"] is False
    project = await _project(client, "flow")
    await _record(client, project, "spec", 1)
    await _record(client, project, "design", 1)

    again = await call_ok(client, "apply_pipeline", pipeline_id="flow", processes=spec)
    assert again["unchanged"] == 3 and again["added"] == again["changed"] == again["removed"] == []

    new = [
        {"process_id": "spec", "name": "Spec", "output_schema": V},
        {"process_id": "design", "name": "Design v2", "depends_on": ["spec"]},
        {"process_id": "build", "name": "Build", "depends_on": ["design"]},
    ]
    before = await table_counts(db)
    plan = await call_ok(client, "apply_pipeline", pipeline_id="flow", processes=new, dry_run=True)
    assert plan["dry_run"] is True and plan["added"] == ["build"] and plan["removed"] == ["draft"]
    assert sorted(plan["changed"]) == ["design", "spec"]
    assert plan["stale_states"] == 2 and plan["stale_projects"] == 1  # spec itself, and design downstream
    assert await table_counts(db) == before
    assert (await call_ok(client, "get_pipeline_status", project_id=project))["counts"]["stale"] == 0

    done = await call_ok(client, "apply_pipeline", pipeline_id="flow", processes=new)
    assert {k: done[k] for k in ("added", "removed", "stale_states")} == {
        "added": ["build"], "removed": ["draft"], "stale_states": 2,
    }  # fmt: skip
    listed = await call_ok(client, "list_processes", pipeline_id="flow")
    assert [p["id"] for p in listed["items"]] == ["spec", "design", "build"]

    # Leaving out a step that has executions is refused by name, and nothing is written; a dry run says so.
    before = await table_counts(db)
    dry = await call_ok(client, "apply_pipeline", pipeline_id="flow", processes=new[:1], dry_run=True)
    assert dry["blocked"] == ["design"] and dry["removed"] == ["build", "design"]
    text = await call_error(client, "apply_pipeline", "conflict", pipeline_id="flow", processes=new[:1])
    assert "design" in text and "executions" in text
    assert await table_counts(db) == before
    text = await call_error(client, "apply_pipeline", "invalid_argument", pipeline_id="flow",
                            processes=[*new, {"process_id": "spec", "name": "twice"}])  # fmt: skip
    assert "twice" in text or "given twice" in text
    cyclic = [
        {"process_id": "x", "name": "X", "depends_on": ["y"]},
        {"process_id": "y", "name": "Y", "depends_on": ["x"]},
    ]
    text = await call_error(client, "apply_pipeline", "invalid_argument", pipeline_id="loop", processes=cyclic)
    assert "x -> y -> x" in text or "y -> x -> y" in text


async def test_report_cost_checks_the_step_in_the_projects_pipeline(client: Client) -> None:
    await _define(client, "green", "only_green")
    green = await _project(client, "green")
    plain = await _project(client)
    await call_ok(client, "report_cost", provider="openai", model="gpt-4o", project_id=green, process_id="only_green")
    text = await call_error(client, "report_cost", "not_found", provider="openai", model="gpt-4o", project_id=plain,
                            process_id="only_green")  # fmt: skip
    assert "'default'" in text
