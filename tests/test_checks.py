"""Checks that gate downstream steps (issue 26, part 3; docs/design.md, "Checks"), through the real MCP
client on SQLite and PostgreSQL: a step's required checks hold its dependants until they pass on its
current execution."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from mcp import Client

from mcp_server.db.engine import Database
from tests.helpers import call_error, call_ok, table_counts

pytestmark = pytest.mark.anyio


async def gated(client: Client) -> str:
    """design (requires `review` and `tests`) -> build, design -> docs; lint alone; a new project's id."""
    steps = [
        {"process_id": "design", "name": "Design", "required_checks": ["review", "tests"]},
        {"process_id": "build", "name": "Build", "depends_on": ["design"]},
        {"process_id": "docs", "name": "Docs", "depends_on": ["design"]},
        {"process_id": "lint", "name": "Lint"},
    ]
    await call_ok(client, "apply_pipeline", processes=steps)
    return str((await call_ok(client, "create_project", name="gated"))["id"])


async def record(client: Client, project: str, pid: str, n: int = 1) -> dict[str, Any]:
    return await call_ok(client, "record_execution", project_id=project, process_id=pid, output_data={"n": n})


async def rows(client: Client, project: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    return status, {row["process_id"]: row for row in status["processes"]}


async def check(client: Client, execution: str, name: str, passed: bool, **extra: Any) -> dict[str, Any]:
    return await call_ok(client, "record_check", execution_id=execution, name=name, passed=passed, **extra)


async def test_a_missing_required_check_holds_every_dependant(client: Client, db: Database) -> None:
    project = await gated(client)
    design = (await record(client, project, "design"))["execution"]["id"]
    status, by_id = await rows(client, project)
    for pid in ("build", "docs"):
        assert by_id[pid]["can_run"] is False
        assert by_id[pid]["blocked_by"] == ["check review of design: missing", "check tests of design: missing"]
    assert by_id["design"]["checks_missing"] == ["review", "tests"] and "checks_failed" not in by_id["design"]
    assert status["ready_processes"] == ["lint"] and "design" not in status["plan"]
    state = await call_ok(client, "get_process_state", project_id=project, process_id="build")
    assert state["can_run"] is False and "check review of design: missing" in state["blocked_by"]
    mine = await call_ok(client, "get_process_state", project_id=project, process_id="design")
    assert mine["checks_missing"] == ["review", "tests"] and "checks" not in mine

    # A claim takes lint, then finds nothing: build and docs wait on the checks.
    claimed = await call_ok(client, "start_execution", project_id=project)
    assert claimed["state"]["process_id"] == "lint"
    lint = claimed["execution"]["id"]
    await call_ok(client, "record_execution", project_id=project, process_id="lint", execution_id=lint, output_data={})
    text = await call_error(client, "start_execution", "nothing_ready", project_id=project)
    assert "checks of design" in text and "record_check" in text
    # An explicit start (and a one-call record) is refused like an unready dependency, unless forced.
    before = await table_counts(db)
    text = await call_error(client, "start_execution", "not_ready", project_id=project, process_id="build")
    assert "check review of design: missing" in text
    await call_error(
        client, "record_execution", "not_ready", project_id=project, process_id="docs", output_data={"n": 1}
    )
    assert await table_counts(db) == before
    forced = await call_ok(client, "start_execution", project_id=project, process_id="build", force=True)
    assert forced["state"]["state"] == "running"
    assert design


async def test_passing_the_checks_releases_the_dependants(client: Client, db: Database) -> None:
    project = await gated(client)
    recorded = await record(client, project, "design")
    assert recorded.get("unblocked") is None and "record_check" in recorded["note"]
    design = recorded["execution"]["id"]
    first = await check(client, design, "review", True, details={"by": "alice"}, agent="reviewer")
    assert first["current"] is True and first["state"] == "completed"
    assert first["check"]["name"] == "review" and first["check"]["agent"] == "reviewer"
    assert first["held"] == ["build", "docs"] and "released" not in first
    second = await check(client, design, "tests", True)
    assert second["released"] == ["build", "docs"] and "held" not in second
    assert second["check"]["agent"]  # the MCP client, by default
    status, by_id = await rows(client, project)
    assert by_id["build"]["can_run"] is True and "blocked_by" not in by_id["build"]
    assert "checks_missing" not in by_id["design"] and status["ready_processes"] == ["build", "docs", "lint"]
    claimed = await call_ok(client, "start_execution", project_id=project)
    assert claimed["state"]["process_id"] == "build"

    execution = await call_ok(client, "get_execution", execution_id=design)
    assert [(c["name"], c["passed"]) for c in execution["checks"]] == [("review", True), ("tests", True)]
    assert execution["checks"][0]["details"] == {"by": "alice"}
    state = await call_ok(client, "get_process_state", project_id=project, process_id="design")
    assert [c["name"] for c in state["checks"]] == ["review", "tests"] and "checks_missing" not in state
    assert (await table_counts(db))["execution_checks"] == 2


async def test_a_failed_check_holds_the_dependants_and_puts_the_step_in_the_plan(client: Client, db: Database) -> None:
    project = await gated(client)
    design = (await record(client, project, "design"))["execution"]["id"]
    await check(client, design, "tests", True)
    failed = await check(client, design, "review", False, details={"summary": "the API is unversioned"})
    assert failed["held"] == ["build", "docs"]
    status, by_id = await rows(client, project)
    assert by_id["build"]["blocked_by"] == ["check review of design: failed: the API is unversioned"]
    assert by_id["design"]["checks_failed"] == ["review"] and "checks_missing" not in by_id["design"]
    assert status["plan"][0] == "design" and "build" not in status["ready_processes"]
    await call_error(client, "start_execution", "not_ready", project_id=project, process_id="build")

    graph = (await client.read_resource(f"pipeline://projects/{project}/graph")).contents[0].text  # type: ignore[union-attr]
    node = re.search(r'^    (n\d+)\["design<br/>completed · v1<br/>✗ review"\]:::completed$', graph, re.MULTILINE)
    assert node is not None and "classDef held " in graph and f"class {node.group(1)} held" in graph

    # Recorded again, the result replaces the earlier one (one row per execution and name): released.
    passed = await check(client, design, "review", True)
    assert passed["released"] == ["build", "docs"]
    assert (await table_counts(db))["execution_checks"] == 2
    status, by_id = await rows(client, project)
    assert "design" not in status["plan"] and by_id["build"]["can_run"] is True
    assert "held" not in (await client.read_resource(f"pipeline://projects/{project}/graph")).contents[0].text  # type: ignore[union-attr]


async def test_a_re_run_needs_its_checks_again_and_old_checks_gate_nothing(client: Client) -> None:
    project = await gated(client)
    old = (await record(client, project, "design", 1))["execution"]["id"]
    await check(client, old, "review", True)
    await check(client, old, "tests", True)
    await record(client, project, "build")
    new = (await record(client, project, "design", 2))["execution"]["id"]  # build goes stale
    status, by_id = await rows(client, project)
    assert by_id["build"]["state"] == "stale" and by_id["build"]["can_run"] is False
    assert by_id["design"]["checks_missing"] == ["review", "tests"]
    assert "check review of design: missing" in by_id["build"]["blocked_by"]
    # A check of the execution that is no longer current is kept, and gates nothing.
    late = await check(client, old, "review", False)
    assert late["current"] is False and "gates nothing" in late["note"] and "held" not in late
    await check(client, new, "review", True)
    await check(client, new, "tests", True)
    status, by_id = await rows(client, project)
    assert by_id["build"]["can_run"] is True and "build" in status["ready_processes"]


async def test_a_check_of_an_unknown_or_running_execution_writes_nothing(client: Client, db: Database) -> None:
    project = await gated(client)
    started = await call_ok(client, "start_execution", project_id=project, process_id="design")
    before = await table_counts(db)
    text = await call_error(
        client, "record_check", "not_found", execution_id=str(uuid.uuid4()), name="review", passed=True
    )
    assert "does not exist" in text
    running = started["execution"]["id"]
    text = await call_error(client, "record_check", "invalid_transition", execution_id=running, name="r", passed=True)
    assert "finished" in text
    for bad in ({"name": "Not A Slug"}, {"name": "review", "details": {"x": "\x00"}}, {"name": ""}):
        args = {"execution_id": started["execution"]["id"], "passed": True, **bad}
        await call_error(client, "record_check", "invalid_argument", **args)
    assert await table_counts(db) == before


async def test_a_step_without_required_checks_is_never_held(client: Client) -> None:
    for pid, deps in (("a", []), ("b", ["a"])):
        await call_ok(client, "define_process", process_id=pid, name=pid.upper(), depends_on=deps)
    project = str((await call_ok(client, "create_project", name="free"))["id"])
    a = (await record(client, project, "a"))["execution"]["id"]
    failed = await check(client, a, "review", False)  # kept, but not required: it gates nothing
    assert failed["current"] is True and "not a required check" in failed["note"] and "held" not in failed
    assert failed["released"] == ["b"]
    status, by_id = await rows(client, project)
    assert by_id["b"]["can_run"] is True and status["ready_processes"] == ["b"] and status["plan"] == ["b"]
    assert "checks_failed" not in by_id["a"]
    claimed = await call_ok(client, "start_execution", project_id=project)
    assert claimed["state"]["process_id"] == "b"
    assert [c["name"] for c in (await call_ok(client, "get_execution", execution_id=a))["checks"]] == ["review"]


async def test_prune_takes_the_checks_of_the_executions_it_removes(client: Client, db: Database, db_url: str) -> None:
    from tests.test_cli import run_cli

    project = await gated(client)
    old = (await record(client, project, "design", 1))["execution"]["id"]
    await check(client, old, "review", True)
    new = (await record(client, project, "design", 2))["execution"]["id"]
    await check(client, new, "review", True)
    pruned = run_cli("db", "prune", "--older-than", "0d", url=db_url)
    assert pruned.returncode == 0 and "removed 1 " in pruned.stdout, (pruned.stdout, pruned.stderr)
    assert (await table_counts(db))["execution_checks"] == 1
    assert [c["name"] for c in (await call_ok(client, "get_execution", execution_id=new))["checks"]] == ["review"]
