"""Hostile schemas and data through a real client, on both databases: schemas whose references multiply the
work of a check (refused when defined, and when used if stored before), legit recursive schemas that still
work, violation replies that stay small whatever the data, and a slow check that holds neither the event
loop nor the write lock."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest
from mcp import Client

from mcp_server.db.engine import Database
from mcp_server.repositories import ProcessDefinitionRepository
from mcp_server.server import build_server
from mcp_server.services import validation
from mcp_server.services.validation import MAX_APPLIED, MAX_ECHO, MAX_VIOLATIONS, applied_size
from mcp_server.settings import Settings
from tests.helpers import call_error, call_ok, table_counts

pytestmark = pytest.mark.anyio

# Hang guards only: every call here answers in well under a second when it works.
GUARD = 60


def doubling(depth: int) -> dict[str, Any]:
    """About 1.2 KB at depth 18: each definition refers twice to the one below, so checking a value that
    matches none of them visits 2^depth leaves."""
    defs: dict[str, Any] = {"a0": {"type": "string"}}
    for i in range(1, depth + 1):
        defs[f"a{i}"] = {"anyOf": [{"$ref": f"#/$defs/a{i - 1}"}, {"$ref": f"#/$defs/a{i - 1}"}]}
    return {"$defs": defs, "$ref": f"#/$defs/a{depth}"}


RECURSIVE = {
    "itself": {"$ref": "#"},
    "tree": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}},
    "binary": {"type": "object", "properties": {"left": {"$ref": "#"}, "right": {"$ref": "#"}}},
    "any_json": {
        "anyOf": [
            {"type": ["string", "number", "boolean", "null"]},
            {"type": "array", "items": {"$ref": "#"}},
            {"type": "object", "additionalProperties": {"$ref": "#"}},
        ]
    },
    "dynamic": {
        "$dynamicAnchor": "node",
        "type": "object",
        "properties": {"kids": {"type": "array", "items": {"$dynamicRef": "#node"}}},
    },
}


def _details(text: str) -> dict[str, Any]:
    found, _ = json.JSONDecoder().raw_decode(text.split("\ndetails: ", 1)[1])
    assert isinstance(found, dict)
    return found


def test_the_measure_follows_references_and_bounds_recursion() -> None:
    assert applied_size(doubling(8)) == 2**10 - 2
    for depth in (12, 14, 22, 60):
        with pytest.raises(ValueError, match=f"more than {MAX_APPLIED:,} subschemas"):
            applied_size(doubling(depth))
    for schema in RECURSIVE.values():
        assert applied_size(schema) < 10
    # Recursion that branches on the same value doubles at every level of the data: refused too.
    with pytest.raises(ValueError, match="subschemas"):
        applied_size({"type": "array", "items": {"anyOf": [{"$ref": "#"}, {"$ref": "#"}]}})
    with pytest.raises(ValueError, match="subschemas"):
        mutual = {"$id": "urn:x", "anyOf": [{"$ref": "urn:y"}, {"$ref": "urn:y"}]}
        applied_size({"$defs": {"x": mutual, "y": {"$id": "urn:y", "items": {"$ref": "urn:x"}}}, "$ref": "urn:x"})
    chain = {"$defs": {f"a{i}": {"$ref": f"#/$defs/a{i + 1}"} for i in range(3000)}, "$ref": "#/$defs/a0"}
    with pytest.raises(ValueError, match="chain of references"):
        applied_size(chain)


@pytest.mark.parametrize("depth", [14, 18, 22])
async def test_a_doubling_schema_is_refused_when_defined(client: Client, db: Database, depth: int) -> None:
    schema = doubling(depth)
    assert len(json.dumps(schema)) < 1_600
    counts = await table_counts(db)
    with anyio.fail_after(GUARD):
        for field in ("output_schema", "input_schema"):
            text = await call_error(client, "define_process", "invalid_argument", process_id="evil", name="evil",
                                    **{field: schema})  # fmt: skip
            assert field in text and f"more than {MAX_APPLIED:,} subschemas" in text, text
        steps = [{"process_id": "ok", "name": "ok"}, {"process_id": "evil", "name": "evil", "output_schema": schema}]
        text = await call_error(client, "apply_pipeline", "invalid_argument", processes=steps)
        assert "evil.output_schema" in text and f"the limit is {MAX_APPLIED:,}" in text, text
    assert await table_counts(db) == counts


async def test_recursive_schemas_still_check_data(client: Client) -> None:
    project = (await call_ok(client, "create_project", name="recursive"))["id"]
    good = {"kids": [{"kids": []}], "left": {"right": {}}}
    with anyio.fail_after(GUARD):
        await call_ok(client, "apply_pipeline", processes=[
            {"process_id": name.replace("_", "-"), "name": name, "output_schema": schema}
            for name, schema in RECURSIVE.items()
        ])  # fmt: skip
        for name in RECURSIVE:
            await call_ok(client, "record_execution", project_id=project, process_id=name.replace("_", "-"),
                          output_data=good)  # fmt: skip
        text = await call_error(client, "record_execution", "schema_violation", project_id=project, process_id="tree",
                                output_data={"kids": [{"kids": [{"kids": 3}]}]})  # fmt: skip
        assert "$.kids[0].kids[0].kids" in text, text


async def test_a_definition_stored_before_the_limit_is_refused_when_used(client: Client, db: Database) -> None:
    async with db.unit_of_work() as session:
        await ProcessDefinitionRepository(session).create(
            id="old", name="old", depends_on=[], output_schema=doubling(22)
        )
    project = (await call_ok(client, "create_project", name="old"))["id"]
    counts = await table_counts(db)
    with anyio.fail_after(GUARD):  # checking data against it would take minutes
        for _ in range(2):  # the second call goes through the check made ahead of the lock
            text = await call_error(client, "record_execution", "invalid_argument", project_id=project,
                                    process_id="old", output_data={"v": 1})  # fmt: skip
            assert "output_schema of process 'old'" in text and f"{MAX_APPLIED:,}" in text, text
            assert "Redefine the process" in text
    assert await table_counts(db) == counts


async def test_a_reply_lists_the_first_violations_and_counts_them_all(client: Client, db: Database) -> None:
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "string"}}, "big": {"type": "integer"}},
        "additionalProperties": False,
    }
    await call_ok(client, "define_process", process_id="s", name="S", input_schema=schema, output_schema=schema)
    project = (await call_ok(client, "create_project", name="flood"))["id"]
    counts = await table_counts(db)
    with anyio.fail_after(GUARD):
        flood = await call_error(client, "record_execution", "schema_violation", project_id=project, process_id="s",
                                 output_data={"items": list(range(60_000))})  # fmt: skip
        huge = await call_error(client, "start_execution", "schema_violation", project_id=project, process_id="s",
                                input_data={"big": "x" * 900_000, "k" * 90_000: 1})  # fmt: skip
    assert len(flood.encode()) < 10_000, len(flood)
    assert "60000 problem(s), the first 20 listed" in flood
    details = _details(flood)
    assert details["violation_count"] == 60_000 and len(details["violations"]) == MAX_VIOLATIONS
    assert details["violations"][0] == {"path": "$.items[0]", "message": '0 is not of type "string"'}
    assert len(huge.encode()) < 3_000, len(huge)
    listed = _details(huge)["violations"]
    assert _details(huge)["violation_count"] == 2 and len(listed) == 2
    assert all(len(v["message"]) < MAX_ECHO + 40 for v in listed), listed
    assert any("more characters)" in v["message"] for v in listed), listed
    assert await table_counts(db) == counts


class Gate:
    """Holds every check of data carrying ``{"slow": true}`` on its worker thread until opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        real = validation._find

        def gated(schema_json: str, data: Any) -> Any:
            if isinstance(data, dict) and data.get("slow") is True:
                self.entered.set()
                self.opened.wait(GUARD)
            return real(schema_json, data)

        monkeypatch.setattr(validation, "_find", gated)


@pytest.mark.parametrize("seen_before", [True, False])
async def test_a_slow_check_holds_neither_the_loop_nor_the_write_lock(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, seen_before: bool
) -> None:
    """While one client's data is being checked, another client of the same server reads, and (once the
    server knows the step's schema, so the check runs before the write lock) writes to another project."""
    gate = Gate(monkeypatch)
    server = build_server(settings)
    schema = {"type": "object", "properties": {"slow": {"type": "boolean"}}}
    async with Client(server) as slow_client, Client(server) as other:
        await call_ok(slow_client, "define_process", process_id="checked", name="Checked", output_schema=schema)
        slow_project = (await call_ok(slow_client, "create_project", name="slow"))["id"]
        other_project = (await call_ok(other, "create_project", name="other"))["id"]
        if seen_before:
            await call_ok(slow_client, "record_execution", project_id=slow_project, process_id="checked",
                          output_data={"slow": False})  # fmt: skip
        finished: list[dict[str, Any]] = []

        async def slow_record() -> None:
            finished.append(await call_ok(slow_client, "record_execution", project_id=slow_project,
                                          process_id="checked", output_data={"slow": True}))  # fmt: skip

        try:
            with anyio.fail_after(GUARD):
                async with anyio.create_task_group() as group:
                    group.start_soon(slow_record)
                    assert await anyio.to_thread.run_sync(gate.entered.wait, GUARD)
                    assert (await call_ok(other, "get_project", project_id=slow_project))["name"] == "slow"
                    await call_ok(other, "list_projects")
                    if seen_before:
                        await call_ok(other, "record_execution", project_id=other_project, process_id="checked",
                                      output_data={"v": 1})  # fmt: skip
                    assert not finished, "the slow check finished before the other calls were answered"
                    gate.opened.set()
        finally:
            gate.opened.set()
        assert finished and finished[0]["state"]["state"] == "completed"


async def test_errors_that_name_many_steps_stay_small(client: Client) -> None:
    unknown = [
        {"process_id": f"p{i}", "name": "p", "depends_on": [f"{'q' * 90}{i}x{j}" for j in range(100)]}
        for i in range(40)
    ]
    text = await call_error(client, "apply_pipeline", "invalid_argument", processes=unknown)
    assert len(text) < 5_000 and "and 3980 more" in text, text[:300]
    ring = [{"process_id": f"s{i:03d}", "name": "s", "depends_on": [f"s{(i + 1) % 300:03d}"]} for i in range(300)]
    text = await call_error(client, "apply_pipeline", "invalid_argument", processes=ring)
    assert len(text) < 2_000 and "more) ->" in text, text


async def test_large_data_against_a_branching_schema_lists_the_first_problem_only(client: Client) -> None:
    """Listing every violation costs the validator superlinear time with anyOf (20,000 items against a
    6-level doubling: minutes); past a budget only the first violation found is listed."""
    six = doubling(6)
    schema = {"$defs": six["$defs"], "properties": {"v": {"type": "array", "items": {"$ref": six["$ref"]}}}}
    await call_ok(client, "define_process", process_id="wide", name="wide", output_schema=schema)
    project = (await call_ok(client, "create_project", name="wide"))["id"]
    with anyio.fail_after(GUARD):
        text = await call_error(client, "record_execution", "schema_violation", project_id=project, process_id="wide",
                                output_data={"v": [1] * 20_000})  # fmt: skip
    assert "the first problem found is listed" in text, text
    details = _details(text)
    assert details["violation_count"] is None and [v["path"] for v in details["violations"]] == ["$.v[0]"]
