"""Hostile input, directed: the size limits, what tests/test_fuzz.py found, and what only the wire carries.

The limits on text and JSON are enforced with invalid_argument naming the field, and writes right at the
limit succeed. Values PostgreSQL cannot store (NUL characters) are refused on both databases alike; a
schema reference that leads nowhere, a time out of range once in UTC and an integer past its column are
invalid_argument, not `internal`. Over real stdio, NaN and Infinity (which the SDK's JSON parser takes),
lines that are not JSON and a client name with a NUL get answers or are dropped, and the server serves on.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_server.db.engine import Database
from mcp_server.repositories import ProcessDefinitionRepository
from mcp_server.schemas.common import MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_TEXT
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import call_error, call_ok, table_counts

pytestmark = pytest.mark.anyio

SCRIPT = Path(sys.executable).with_name("pipeline-state-mcp")


def _nested(depth: int) -> Any:
    """``depth`` containers around a string, the outermost an object: depth + 1 levels."""
    value: Any = "bottom"
    for level in range(depth):
        value = {"k": value} if (depth - level) % 2 else [value]
    return value


BIG = MAX_TEXT + 1


async def _world(client: Client) -> tuple[str, str]:
    """A project with a running execution of `a`: the ids the directed calls need."""
    await call_ok(client, "define_process", process_id="a", name="A")
    project = (await call_ok(client, "create_project", name="limits"))["id"]
    running = await call_ok(client, "start_execution", project_id=project, process_id="a")
    return project, running["execution"]["id"]


async def test_size_limits_are_enforced_with_invalid_argument_naming_the_field(client: Client, db: Database) -> None:
    project, execution = await _world(client)
    start = {"project_id": project, "process_id": "a"}
    record = {**start, "output_data": {}, "force": True}  # `a` is running: a one-call record needs force
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        ("create_project", {"name": "x" * 201}, "name", "at most 200"),
        ("create_project", {"name": "ok", "description": "x" * BIG}, "description", f"at most {MAX_TEXT}"),
        ("create_project", {"name": "ok", "metadata": {"blob": "x" * MAX_JSON_BYTES}}, "metadata", "limit is"),
        ("record_execution", {**record, "output_data": _nested(MAX_JSON_DEPTH)}, "output_data", "deeper than"),
        ("record_execution", {**record, "reasoning": "x" * BIG}, "reasoning", f"at most {MAX_TEXT}"),
        ("record_execution", {**record, "missing_info": {"x": "x" * MAX_JSON_BYTES}}, "missing_info", "limit is"),
        ("start_execution", {**start, "idempotency_key": "k" * 201}, "idempotency_key", "at most 200"),
        ("fail_execution", {"execution_id": execution, "error_message": "x" * BIG}, "error_message", "at most"),
        ("save_prompt_version", {"prompt_id": "p", "user_template": "x" * BIG}, "user_template", "at most"),
        ("report_cost", {"provider": "openai", "model": "m" * 101}, "model", "at most 100"),
        ("report_cost", {"provider": "openai", "model": "m", "prompt_tokens": -1}, "prompt_tokens", "greater than"),
        ("list_projects", {"page_size": 101}, "page_size", "less than or equal to 100"),
        ("get_prompt_version", {"prompt_id": "p", "version": 2**31}, "version", "less than or equal"),
    ]
    counts = await table_counts(db)
    for tool, arguments, field_name, why in cases:
        text = await call_error(client, tool, "invalid_argument", **arguments)
        assert text.startswith(f"Error executing tool {tool}: invalid_argument: {field_name}"), text
        assert why in text, text
    assert await table_counts(db) == counts
    # Right at the limits, the same calls succeed.
    at_limit = {"blob": "x" * (MAX_JSON_BYTES - 20)}
    await call_ok(client, "create_project", name="x" * 200, description="x" * MAX_TEXT, metadata=at_limit)
    deepest = _nested(MAX_JSON_DEPTH - 1)  # 64 levels: 63 containers around a string
    await call_ok(client, "record_execution", **{**record, "output_data": deepest}, reasoning="x" * MAX_TEXT)


async def test_nul_characters_are_refused_on_every_database_because_postgresql_cannot_store_them(
    client: Client, db: Database
) -> None:
    project, execution = await _world(client)
    start = {"project_id": project, "process_id": "a"}
    record = {**start, "output_data": {}, "force": True}  # `a` is running: a one-call record needs force
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("create_project", {"name": "a\x00b"}, "name"),
        ("create_project", {"name": "ok", "description": "\x00"}, "description"),
        ("create_project", {"name": "ok", "metadata": {"k": ["v\x00"]}}, "metadata"),
        ("create_project", {"name": "ok", "metadata": {"k\x00": 1}}, "metadata"),
        ("update_project", {"project_id": project, "name": "\x00x"}, "name"),
        ("record_execution", {**record, "output_data": {"x": "\x00"}}, "output_data"),
        ("record_execution", {**record, "reasoning": "\x00"}, "reasoning"),
        ("start_execution", {**start, "idempotency_key": "k\x00"}, "idempotency_key"),
        ("fail_execution", {"execution_id": execution, "error_message": "\x00"}, "error_message"),
        ("invalidate_process", {"project_id": project, "process_id": "a", "reason": "\x00"}, "reason"),
        ("save_prompt_version", {"prompt_id": "p", "system_prompt": "\x00"}, "system_prompt"),
        ("save_prompt_version", {"prompt_id": "p", "user_template": "x", "created_by": "\x00"}, "created_by"),
        ("report_cost", {"provider": "openai", "model": "gpt\x00"}, "model"),
        ("report_cost", {"provider": "openai", "model": "m", "idempotency_key": "\x00"}, "idempotency_key"),
        ("get_cost_summary", {"provider": "\x00"}, "provider"),
        ("get_cost_summary", {"process_id": "a\x00"}, "process_id"),
    ]
    counts = await table_counts(db)
    for tool, arguments, field_name in cases:
        text = await call_error(client, tool, "invalid_argument", **arguments)
        assert text.startswith(f"Error executing tool {tool}: invalid_argument: {field_name}"), text
        assert "NUL character" in text, text
    assert await table_counts(db) == counts


DANGLING_SCHEMAS = {
    "remote": {"type": "object", "properties": {"x": {"$ref": "https://example.invalid/x.json"}}},
    "missing": {"$ref": "#/$defs/missing"},
}
LOCAL_REF_SCHEMA = {"type": "object", "properties": {"x": {"$ref": "#/$defs/n"}}, "$defs": {"n": {"type": "integer"}}}


async def test_define_process_refuses_a_schema_reference_that_leads_nowhere(client: Client, db: Database) -> None:
    counts = await table_counts(db)
    for process_id, schema in DANGLING_SCHEMAS.items():
        text = await call_error(
            client, "define_process", "invalid_argument", process_id=process_id, name=process_id, output_schema=schema
        )
        assert "output_schema refers to" in text and "cannot be resolved" in text, text
    assert await table_counts(db) == counts
    await call_ok(client, "define_process", process_id="local", name="local", output_schema=LOCAL_REF_SCHEMA)


async def test_a_stored_schema_reference_that_leads_nowhere_is_invalid_argument_when_data_reaches_it(
    client: Client, db: Database
) -> None:
    # Definitions stored before define_process checked references (or written by other tools).
    async with db.unit_of_work() as session:
        for process_id, schema in DANGLING_SCHEMAS.items():
            await ProcessDefinitionRepository(session).create(
                id=process_id, name=process_id, depends_on=[], output_schema=schema
            )
    await call_ok(client, "define_process", process_id="local", name="local", output_schema=LOCAL_REF_SCHEMA)
    project = (await call_ok(client, "create_project", name="refs"))["id"]
    counts = await table_counts(db)
    for process_id in DANGLING_SCHEMAS:
        text = await call_error(
            client,
            "record_execution",
            "invalid_argument",
            project_id=project,
            process_id=process_id,
            output_data={"x": 1},
        )
        assert f"output_schema of process {process_id!r}" in text and "cannot be resolved" in text, text
        assert "define_process" in text
    assert await table_counts(db) == counts
    # Nothing is fetched: a reference inside the schema works; a schema with a dangling reference is
    # unusable as a whole (the validator is built from all of it), whatever the data.
    await call_ok(client, "record_execution", project_id=project, process_id="local", output_data={"x": 1})
    await call_error(
        client, "record_execution", "schema_violation", project_id=project, process_id="local", output_data={"x": "1"}
    )
    await call_error(
        client, "record_execution", "invalid_argument", project_id=project, process_id="remote", output_data={"y": 1}
    )


async def test_a_time_out_of_range_once_in_utc_is_invalid_argument(client: Client) -> None:
    for field_name, moment in (("since", "0001-01-01T00:00:00+14:00"), ("until", "9999-12-31T23:59:59-14:00")):
        text = await call_error(client, "get_cost_summary", "invalid_argument", **{field_name: moment})
        assert text.startswith(f"Error executing tool get_cost_summary: invalid_argument: {field_name}: "), text
    summary = await call_ok(client, "get_cost_summary", since="0001-01-01T00:00:00", until="9999-12-31T23:59:59")
    assert summary["totals"]["calls"] == 0


WIRE_CALLS: list[tuple[int, bytes, str | None]] = [
    # (id, the raw line, the error code expected; None: success). NaN and Infinity are not JSON, but
    # the SDK's parser takes them: they reach the tools, and PostgreSQL's JSONB would refuse them.
    (1, b'{"name": "create_project", "arguments": {"name": "p", "metadata": {"x": NaN}}}', "invalid_argument"),
    (2, b'{"name": "record_execution", "arguments": {"project_id": "@P", "process_id": "a", '
        b'"output_data": [Infinity]}}', "invalid_argument"),
    (3, b'{"name": "record_execution", "arguments": {"project_id": "@P", "process_id": "a", '
        b'"output_data": {"k\\u0000": 1}}}', "invalid_argument"),
    (4, b'{"name": "create_project", "arguments": {"name": "fine", "budget_usd": NaN}}', "invalid_argument"),
    (5, b'{"name": "save_prompt_version", "arguments": {"prompt_id": "p", "temperature": -Infinity}}',
        "invalid_argument"),
    (6, b'{"name": "record_execution", "arguments": {"project_id": "@P", "process_id": "a", '
        b'"output_data": {"ok": 1.5e308}}}', None),
]  # fmt: skip
GARBAGE = [
    b"this is not json",
    b"\xff\xfe\x00 not utf-8",
    b'{"jsonrpc": "2.0", "id": 99, "method": "tools/call"',
    b"[1, 2]",
]


@pytest.mark.slow
async def test_hostile_json_on_the_wire_gets_tool_errors_and_the_stdio_server_keeps_serving(
    db_url: str, db: Database, tmp_path: Path
) -> None:
    async with Client(build_server(Settings(database_url=db_url, auto_migrate=False))) as setup:
        await call_ok(setup, "define_process", process_id="a", name="A")
        project = (await call_ok(setup, "create_project", name="wire"))["id"]
    counts = await table_counts(db)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPELINE_STATE_")}
    env |= {"PIPELINE_STATE_DATABASE_URL": db_url, "XDG_DATA_HOME": str(tmp_path / "data")}
    initialize = (
        b'{"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", '
        b'"capabilities": {}, "clientInfo": {"name": "evil\\u0000client", "version": "1"}}}\n'
        b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n'
    )
    lines = [
        b'{"jsonrpc": "2.0", "id": %d, "method": "tools/call", "params": %s}'
        % (number, params.replace(b"@P", project.encode()))
        for number, params, _ in WIRE_CALLS
    ]
    last = len(WIRE_CALLS) + 1
    final = b'{"name": "create_project", "arguments": {"name": "after the garbage"}}'
    payload = initialize + b"\n".join([*GARBAGE, *lines, *GARBAGE]) + b"\n"
    payload += b'{"jsonrpc": "2.0", "id": %d, "method": "tools/call", "params": %s}\n' % (last, final)
    stderr_path = tmp_path / "stderr.log"
    replies: dict[int, dict[str, Any]] = {}
    with anyio.fail_after(60), stderr_path.open("wb") as stderr:
        process = await anyio.open_process([str(SCRIPT)], env=env, cwd=tmp_path, stderr=stderr)
        async with process:
            assert process.stdin is not None and process.stdout is not None
            await process.stdin.send(payload)
            buffer = b""
            while not set(range(last + 1)) <= set(replies):
                buffer += await process.stdout.receive()
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    message = json.loads(line)  # stdout carries nothing but JSON-RPC
                    replies[message["id"]] = message
            await process.stdin.aclose()
            assert await process.wait() == 0
    for number, _, code in WIRE_CALLS:
        result = replies[number]["result"]
        text = result["content"][0]["text"]
        if code is None:
            assert result["isError"] is False, text
        else:
            assert result["isError"] is True and text.split(": ")[1] == code, text
    created = replies[last]["result"]["structuredContent"]
    assert created["created_by"] == "evilclient/1"  # the client's name, minus what no database can store
    after = await table_counts(db)
    assert (after["projects"], after["process_executions"]) == (
        counts["projects"] + 1,
        counts["process_executions"] + 1,
    )
    assert "Traceback" not in stderr_path.read_text()
