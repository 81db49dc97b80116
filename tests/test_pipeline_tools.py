"""The pipeline toolset through the in-memory client, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from mcp_server.db.engine import Database
from tests.helpers import call_error, call_ok, table_counts

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "required": ["v"], "properties": {"v": {"type": "integer"}}}


async def diamond(client: Client) -> str:
    """a -> b, a -> c, b -> d, c -> d; returns a new project's id."""
    for pid, deps in (("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])):
        await call_ok(client, "define_process", process_id=pid, name=pid.upper(), depends_on=deps, output_schema=SCHEMA)
    project = await call_ok(client, "create_project", name="diamond")
    return str(project["id"])


async def record(client: Client, project: str, pid: str, v: int, **extra: Any) -> dict[str, Any]:
    return await call_ok(client, "record_execution", project_id=project, process_id=pid, output_data={"v": v}, **extra)


async def status_of(client: Client, project: str) -> dict[str, dict[str, Any]]:
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    return {p["process_id"]: p for p in status["processes"]}


async def test_define_refuses_unknown_deps_self_dependency_and_cycles(client: Client, db: Database) -> None:
    await call_ok(client, "define_process", process_id="a", name="A")
    await call_ok(client, "define_process", process_id="b", name="B", depends_on=["a"])
    before = await table_counts(db)
    await call_error(client, "define_process", "invalid_argument", process_id="c", name="C", depends_on=["nope"])
    text = await call_error(client, "define_process", "invalid_argument", process_id="a", name="A", depends_on=["a"])
    assert "a -> a" in text
    text = await call_error(client, "define_process", "invalid_argument", process_id="a", name="A", depends_on=["b"])
    assert "a -> b -> a" in text
    bad_schema = {"type": "object", "properties": {"v": {"type": "not-a-type"}}}
    await call_error(client, "define_process", "invalid_argument", process_id="c", name="C", input_schema=bad_schema)
    await call_error(client, "define_process", "invalid_argument", process_id="Bad Id", name="x")
    assert await table_counts(db) == before


async def test_list_is_topological_and_define_replaces(client: Client) -> None:
    await call_ok(client, "define_process", process_id="z", name="Z", order_index=1)
    await call_ok(client, "define_process", process_id="y", name="Y", depends_on=["z"])
    await call_ok(client, "define_process", process_id="x", name="X", order_index=-1)
    listed = await call_ok(client, "list_processes")
    assert [p["id"] for p in listed["items"]] == ["x", "z", "y"] and listed["total"] == 3
    paged = await call_ok(client, "list_processes", page=2, page_size=2)
    assert [p["id"] for p in paged["items"]] == ["y"] and paged["has_more"] is False
    replaced = await call_ok(client, "define_process", process_id="y", name="Y2", depends_on=[])
    assert replaced["process_id"] == "y" and replaced["created"] is False
    assert replaced["changed"] == ["name", "depends_on"] and replaced["stale_states"] == 0
    assert [p["name"] for p in (await call_ok(client, "list_processes"))["items"] if p["id"] == "y"] == ["Y2"]


async def test_delete_process_refused_while_dependents_or_executions_exist(client: Client) -> None:
    project = await diamond(client)
    await call_error(client, "delete_process", "conflict", process_id="a")
    await record(client, project, "a", 1)
    await call_ok(client, "define_process", process_id="lonely", name="L")
    assert (await call_ok(client, "delete_process", process_id="lonely"))["deleted"] is True
    await call_error(client, "delete_process", "not_found", process_id="lonely")
    await call_ok(client, "define_process", process_id="e", name="E", depends_on=["d"])
    await call_error(client, "delete_process", "conflict", process_id="d")


async def test_diamond_through_completion_rerun_invalidation_and_noop(client: Client) -> None:
    project = await diamond(client)
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    assert status["ready_processes"] == ["a"]
    for pid in "abcd":
        reply = await record(client, project, pid, 1)
        assert reply["state"] == {**reply["state"], "state": "completed", "version": 1}
        assert reply["invalidated"] == []
    assert (await call_ok(client, "get_pipeline_status", project_id=project))["complete"] is True

    rerun = await record(client, project, "a", 2)
    assert rerun["output_changed"] is True
    assert {(i["process_id"], i["previous_state"], i["version"]) for i in rerun["invalidated"]} == {
        ("b", "completed", 2),
        ("c", "completed", 2),
        ("d", "completed", 2),
    }
    states = await status_of(client, project)
    for pid in "bcd":
        assert states[pid]["state"] == "stale"
        assert states[pid]["invalidated_by_process_id"] == "a"  # the root cause, not the intermediate b or c
    assert (await call_ok(client, "get_pipeline_status", project_id=project))["ready_processes"] == ["b", "c"]

    for pid in "bcd":
        await record(client, project, pid, 2)
    manual = await call_ok(client, "invalidate_process", project_id=project, process_id="c", reason="new facts")
    assert manual["state"]["state"] == "stale" and manual["state"]["invalidated_by_process_id"] == "c"
    assert [i["process_id"] for i in manual["invalidated"]] == ["d"]
    states = await status_of(client, project)
    assert states["b"]["state"] == "completed" and states["d"]["invalidated_by_process_id"] == "c"
    assert "new facts" in states["d"]["invalidation_reason"]

    await record(client, project, "c", 2)
    await record(client, project, "d", 2)
    noop = await record(client, project, "a", 2)
    assert noop["output_changed"] is False and noop["invalidated"] == []
    assert "nothing downstream" in noop["note"] and "still to re-run" not in noop["note"]
    assert all(s["state"] == "completed" for s in (await status_of(client, project)).values())

    # The same output again leaves steps made stale by an earlier change stale: the note names them.
    await record(client, project, "a", 3)
    again = await record(client, project, "b", 2)
    assert again["output_changed"] is False
    assert again["note"].endswith("stale from an earlier change, still to re-run: d")  # below b only


async def test_readiness_is_enforced_unless_forced(client: Client, db: Database) -> None:
    project = await diamond(client)
    before = await table_counts(db)
    text = await call_error(client, "start_execution", "not_ready", project_id=project, process_id="d")
    assert "b (empty)" in text and "c (empty)" in text
    await call_error(client, "record_execution", "not_ready", project_id=project, process_id="b", output_data={"v": 1})
    assert await table_counts(db) == before
    forced = await call_ok(client, "start_execution", project_id=project, process_id="d", force=True)
    assert forced["state"]["state"] == "running"


async def test_start_finish_fail_and_the_late_finish(client: Client) -> None:
    project = await diamond(client)
    await record(client, project, "a", 1)
    started = await call_ok(client, "start_execution", project_id=project, process_id="b", input_data={"q": 1})
    execution_id = started["execution"]["id"]
    assert started["state"]["state"] == "running" and started["execution"]["status"] == "running"
    await call_error(client, "start_execution", "invalid_transition", project_id=project, process_id="b")
    state = await call_ok(client, "get_process_state", project_id=project, process_id="b")
    assert state["running_execution_id"] == execution_id

    # a changes while b runs: b goes stale, and its finish lands in `stale`, not `completed`.
    await record(client, project, "a", 2)
    late = await record(client, project, "b", 7, execution_id=execution_id)
    assert late["late_finish"] is True
    assert late["state"]["state"] == "stale" and late["execution"]["status"] == "stale"
    await call_error(
        client, "record_execution", "invalid_transition", project_id=project, process_id="b",
        output_data={"v": 1}, execution_id=execution_id,
    )  # fmt: skip

    again = await call_ok(client, "start_execution", project_id=project, process_id="b")
    failed = await call_ok(client, "fail_execution", execution_id=again["execution"]["id"], error_message="LLM timeout")
    assert failed["state"]["state"] == "failed" and failed["execution"]["error_message"] == "LLM timeout"
    await call_error(
        client, "fail_execution", "invalid_transition", execution_id=again["execution"]["id"], error_message="x"
    )
    done = await call_ok(client, "get_execution", execution_id=again["execution"]["id"])
    assert done["status"] == "failed"


async def test_finishing_checks_the_execution_belongs_to_the_process(client: Client) -> None:
    project = await diamond(client)
    started = await call_ok(client, "start_execution", project_id=project, process_id="a")
    await call_error(
        client, "record_execution", "invalid_argument", project_id=project, process_id="b",
        output_data={"v": 1}, execution_id=started["execution"]["id"], force=True,
    )  # fmt: skip
    await call_error(
        client, "record_execution", "not_found", project_id=project, process_id="a",
        output_data={"v": 1}, execution_id="00000000-0000-4000-8000-000000000000",
    )  # fmt: skip


async def test_schema_violations_list_every_path_and_write_nothing(client: Client, db: Database) -> None:
    schema = {
        "type": "object",
        "required": ["title", "items"],
        "properties": {
            "title": {"type": "string"},
            "items": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        },
    }
    await call_ok(client, "define_process", process_id="s", name="S", input_schema=schema, output_schema=schema)
    project = (await call_ok(client, "create_project", name="schemas"))["id"]
    before = await table_counts(db)
    bad = {"title": 3, "items": [{"n": 1}, {"n": "two"}, {"n": 3.5}]}
    text = await call_error(
        client, "record_execution", "schema_violation", project_id=project, process_id="s",
        output_data=bad, input_data={"title": "ok", "items": []},
    )  # fmt: skip
    for path in ("$.title", "$.items[1].n", "$.items[2].n"):
        assert f'"path": "{path}"' in text
    await call_error(client, "start_execution", "schema_violation", project_id=project, process_id="s", input_data={})
    assert await table_counts(db) == before


async def test_idempotent_replays_and_conflicting_replays(client: Client, db: Database) -> None:
    project = await diamond(client)
    first = await record(client, project, "a", 1, idempotency_key="rec-1")
    counts = await table_counts(db)
    again = await record(client, project, "a", 1, idempotency_key="rec-1")
    assert again["replayed"] is True and again["execution"]["id"] == first["execution"]["id"]
    assert again["state"]["version"] == first["state"]["version"]
    assert await table_counts(db) == counts
    text = await call_error(
        client, "record_execution", "conflict", project_id=project, process_id="a", output_data={"v": 2},
        idempotency_key="rec-1",
    )  # fmt: skip
    assert "rec-1" in text
    started = await call_ok(client, "start_execution", project_id=project, process_id="b", idempotency_key="st-1")
    replay = await call_ok(client, "start_execution", project_id=project, process_id="b", idempotency_key="st-1")
    assert replay["replayed"] is True and replay["execution"]["id"] == started["execution"]["id"]
    await call_error(client, "start_execution", "conflict", project_id=project, process_id="c", idempotency_key="st-1")
    grown = {"process_executions": counts["process_executions"] + 1, "process_states": counts["process_states"] + 1}
    assert await table_counts(db) == counts | grown  # only the one start of b


async def test_expected_version_conflicts_name_the_current_version(client: Client, db: Database) -> None:
    project = await diamond(client)
    await record(client, project, "a", 1, expected_version=0)
    before = await table_counts(db)
    text = await call_error(
        client, "record_execution", "conflict", project_id=project, process_id="a", output_data={"v": 2},
        expected_version=0,
    )  # fmt: skip
    assert "version 1" in text
    await call_error(client, "invalidate_process", "conflict", project_id=project, process_id="a", expected_version=5)
    assert await table_counts(db) == before
    await call_error(client, "invalidate_process", "invalid_transition", project_id=project, process_id="b")


async def test_unknown_ids_are_not_found(client: Client) -> None:
    project = await diamond(client)
    missing = "00000000-0000-4000-8000-000000000000"
    await call_error(client, "get_pipeline_status", "not_found", project_id=missing)
    await call_error(client, "get_process_state", "not_found", project_id=project, process_id="nope")
    await call_error(client, "start_execution", "not_found", project_id=project, process_id="nope")
    await call_error(client, "get_execution", "not_found", execution_id=missing)
    await call_error(client, "fail_execution", "not_found", execution_id=missing, error_message="x")
    await call_error(
        client, "start_execution", "not_found", project_id=project, process_id="a", prompt_version_id=missing
    )
    await call_error(client, "get_execution", "invalid_argument", execution_id="not-a-uuid")


async def test_list_executions_newest_first_with_filters(client: Client) -> None:
    project = await diamond(client)
    for v in range(3):
        await record(client, project, "a", v)
    page = await call_ok(client, "list_executions", project_id=project, process_id="a", page_size=2, include_data=True)
    assert [e["output_data"]["v"] for e in page["items"]] == [2, 1] and page["has_more"] is True
    assert page["total"] == 3
    completed = await call_ok(client, "list_executions", project_id=project, status="completed")
    assert completed["total"] == 1 and completed["items"][0]["current"] is True
    # Each record replaced the completed step's output: the older two are superseded, not current.
    superseded = await call_ok(client, "list_executions", project_id=project, status="superseded")
    assert [e["current"] for e in superseded["items"]] == [False, False]
    newest, older = completed["items"][0]["id"], superseded["items"][0]["id"]
    assert (await call_ok(client, "get_execution", execution_id=newest))["current"] is True
    assert (await call_ok(client, "get_execution", execution_id=older))["current"] is False
    everywhere = await call_ok(client, "list_executions")  # across projects: the same answer
    assert {e["id"]: e["current"] for e in everywhere["items"]}[newest] is True


async def test_resources_show_catalogue_project_and_execution(client: Client) -> None:
    project = await diamond(client)
    recorded = await record(client, project, "a", 1)
    catalogue = await client.read_resource("pipeline://processes")
    assert '"id": "d"' in catalogue.contents[0].text  # type: ignore[union-attr]
    snapshot = await client.read_resource(f"pipeline://projects/{project}")
    assert '"ready_processes"' in snapshot.contents[0].text  # type: ignore[union-attr]
    execution = await client.read_resource(f"pipeline://executions/{recorded['execution']['id']}")
    assert '"status": "completed"' in execution.contents[0].text  # type: ignore[union-attr]
    templates = await client.list_resource_templates()
    assert {t.uri_template for t in templates.resource_templates} == {
        "pipeline://pipelines/{pipeline_id}",
        "pipeline://projects/{project_id}",
        "pipeline://projects/{project_id}/graph",
        "pipeline://executions/{execution_id}",
    }


async def test_a_project_goes_in_progress_at_its_first_execution(client: Client) -> None:
    await call_ok(client, "define_process", process_id="a", name="A")
    await call_ok(client, "define_process", process_id="b", name="B", depends_on=["a"])
    started, recorded, finished = [
        (await call_ok(client, "create_project", name=name))["id"] for name in ("started", "recorded", "finished")
    ]
    await call_ok(client, "start_execution", project_id=started, process_id="a")
    await call_ok(client, "record_execution", project_id=recorded, process_id="a", output_data={})
    for project in (started, recorded):
        assert (await call_ok(client, "get_project", project_id=project))["status"] == "in_progress"
    await call_ok(client, "update_project", project_id=finished, status="completed")
    await call_ok(client, "record_execution", project_id=finished, process_id="a", output_data={})
    assert (await call_ok(client, "get_project", project_id=finished))["status"] == "in_progress"  # work resumed


async def test_a_project_is_completed_with_its_last_step_and_reopens_when_a_step_goes_stale(client: Client) -> None:
    await call_ok(client, "define_process", process_id="a", name="A")
    await call_ok(client, "define_process", process_id="b", name="B", depends_on=["a"])
    project = (await call_ok(client, "create_project", name="whole"))["id"]
    first = await call_ok(client, "record_execution", project_id=project, process_id="a", output_data={"v": 1})
    assert first["unblocked"] == ["b"] and "project_completed" not in first
    last = await call_ok(client, "record_execution", project_id=project, process_id="b", output_data={"v": 2})
    assert last["project_completed"] is True and "unblocked" not in last
    assert (await call_ok(client, "get_project", project_id=project))["status"] == "completed"
    again = await call_ok(client, "record_execution", project_id=project, process_id="a", output_data={"v": 3})
    assert again["replaced"]["execution_id"] == first["execution"]["id"] and again["unblocked"] == ["b"]
    # It replaced a completed step's output: never silent, the replaced execution is superseded, naming it.
    assert again["replaced"]["by"] and again["replaced"]["completed_at"] == first["execution"]["completed_at"]
    old = await call_ok(client, "get_execution", execution_id=first["execution"]["id"])
    assert old["status"] == "superseded" and old["superseded_by"] == again["execution"]["id"]
    assert (await call_ok(client, "get_project", project_id=project))["status"] == "in_progress"


async def test_a_refused_record_says_its_usage_was_not_logged_and_how_to_log_it(client: Client, db: Database) -> None:

    project = await diamond(client)
    usage = {"provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 900, "completion_tokens": 100}
    counts = await table_counts(db)
    text = await call_error(client, "record_execution", "schema_violation", project_id=project, process_id="a",
                            output_data={"v": "not an integer"}, usage=usage)  # fmt: skip
    assert "was NOT logged" in text
    logged_with = json.loads(text.split("call report_cost with ", 1)[1])
    assert logged_with == usage | {"project_id": project, "process_id": "a"}
    assert await table_counts(db) == counts
    await call_ok(client, "report_cost", **logged_with)
    assert (await call_ok(client, "get_cost_summary", project_id=project))["totals"]["calls"] == 1
    refused = await call_error(client, "record_execution", "not_ready", project_id=project, process_id="d",
                               output_data={"v": 1}, usage=usage)  # fmt: skip
    assert "was NOT logged" in refused
    plain = await call_error(client, "record_execution", "not_ready", project_id=project, process_id="d",
                             output_data={"v": 1})  # fmt: skip
    assert "NOT logged" not in plain


async def test_a_dry_run_names_the_steps_that_would_go_stale(client: Client) -> None:
    steps = [{"process_id": "a", "name": "A"}, {"process_id": "b", "name": "B", "depends_on": ["a"]}]
    await call_ok(client, "apply_pipeline", processes=steps)
    project = (await call_ok(client, "create_project", name="plan"))["id"]
    for pid in ("a", "b"):
        await call_ok(client, "record_execution", project_id=project, process_id=pid, output_data={})
    changed = [{**steps[0], "output_schema": {"type": "object"}}, steps[1]]
    other = (await call_ok(client, "create_project", name="only a"))["id"]
    await call_ok(client, "record_execution", project_id=other, process_id="a", output_data={})
    plan = await call_ok(client, "apply_pipeline", processes=changed, dry_run=True)
    assert plan["stale_states"] == 3 and plan["stale_steps"] == ["a", "b"] and plan["stale_projects"] == 2
    # Per project: which of its steps go stale (the first 100 projects; stale_projects counts them all).
    assert plan["stale_by_project"] == {project: ["a", "b"], other: ["a"]}
    applied = await call_ok(client, "apply_pipeline", processes=changed)
    assert applied["stale_by_project"] == plan["stale_by_project"]


async def test_define_process_changes_only_the_fields_given(client: Client) -> None:
    await call_ok(client, "define_process", process_id="a", name="A")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    await call_ok(client, "define_process", process_id="b", name="B", depends_on=["a"], output_schema=schema)
    changed = await call_ok(client, "define_process", process_id="b", description="now described")
    assert changed["changed"] == ["description"]
    listed = await call_ok(client, "list_processes", include_schemas=True)
    b = next(item for item in listed["items"] if item["id"] == "b")
    assert b["depends_on"] == ["a"] and b["output_schema"] == schema and b["name"] == "B"
    await call_ok(client, "define_process", process_id="b", clear=["output_schema", "depends_on"])
    listed = await call_ok(client, "list_processes", include_schemas=True)
    b = next(item for item in listed["items"] if item["id"] == "b")
    assert b["depends_on"] == [] and b.get("output_schema") is None and b["description"] == "now described"
    await call_error(client, "define_process", "invalid_argument", process_id="c")  # a new step needs a name
    await call_error(
        client, "define_process", "invalid_argument", process_id="b", description="x", clear=["description"]
    )


async def test_every_execution_names_the_upstream_executions_its_inputs_came_from(client: Client) -> None:
    steps = [
        {"process_id": "a", "name": "A"},
        {"process_id": "b", "name": "B"},
        {"process_id": "c", "name": "C", "depends_on": ["a", "b"]},
    ]
    await call_ok(client, "apply_pipeline", processes=steps)
    project = (await call_ok(client, "create_project", name="lineage"))["id"]
    first: dict[str, str] = {}
    for pid in ("a", "b"):
        first[pid] = (await call_ok(client, "record_execution", project_id=project, process_id=pid,
                                    output_data={"v": pid}))["execution"]["id"]  # fmt: skip
    started = await call_ok(client, "start_execution", project_id=project, process_id="c")
    execution_id = started["execution"]["id"]
    # A new output of `a` while c runs: c was still made from what it was handed at its start.
    second_a = (await call_ok(client, "record_execution", project_id=project, process_id="a",
                              output_data={"v": "a2"}))["execution"]["id"]  # fmt: skip
    await call_ok(client, "record_execution", project_id=project, process_id="c", execution_id=execution_id,
                  output_data={"v": "c"})  # fmt: skip
    got = await call_ok(client, "get_execution", execution_id=execution_id)
    assert got["inputs_from"] == {"a": first["a"], "b": first["b"]}
    # A one-call record: the outputs current when it was recorded.
    again = (await call_ok(client, "record_execution", project_id=project, process_id="c",
                           output_data={"v": "c2"}))["execution"]["id"]  # fmt: skip
    assert (await call_ok(client, "get_execution", execution_id=again))["inputs_from"] == {
        "a": second_a,
        "b": first["b"],
    }
    resource = await client.read_resource(f"pipeline://executions/{again}")
    text = resource.contents[0].text if hasattr(resource.contents[0], "text") else ""
    assert json.loads(text)["inputs_from"] == {"a": second_a, "b": first["b"]}
    # A step without dependencies has no lineage to name.
    assert "inputs_from" not in await call_ok(client, "get_execution", execution_id=first["a"])
