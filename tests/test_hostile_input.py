"""Hostile input through a real client, on both databases: schemas that try to fetch URLs or read files,
patterns that backtrack forever, self-referential schemas, misspelt arguments."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_server.db.engine import Database
from mcp_server.repositories import ProcessDefinitionRepository
from tests.helpers import call_error, call_ok, table_counts

pytestmark = pytest.mark.anyio


class Listener:
    """A TCP listener on loopback that counts every connection made to it (a fetch would be one)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    try:
        yield found
    finally:
        found.close()


def _hostile_schemas(url: str, secret: Path) -> dict[str, dict[str, Any]]:
    """Every place a reference can hide, pointing at a URL or a local file."""
    file = secret.as_uri()
    return {
        "ref-url": {"$ref": url},
        "ref-file": {"$ref": file},
        "dynamic-ref": {"$dynamicRef": file},
        "under-enum": {"type": "object", "properties": {"enum": {"$ref": url}}},
        "under-default": {"type": "object", "properties": {"default": {"$ref": file}}},
        "under-const": {"type": "object", "properties": {"const": {"$ref": url}}},
        "under-examples": {"properties": {"examples": {"items": {"$ref": file}}}},
        "defs-enum": {"$defs": {"enum": {"$ref": url}}, "$ref": "#/$defs/enum"},
        "nested-id": {"$id": "https://attacker.example/root", "properties": {"x": {"$ref": "other.json"}}},
        "pattern-props": {"patternProperties": {"^x": {"$ref": file}}},
        "dev-zero": {"$ref": "file:///dev/zero"},
    }


async def test_no_schema_can_make_the_server_fetch_a_url_or_read_a_file(
    client: Client, db: Database, listener: Listener, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"const": "the-secret-value"}))
    url = f"http://127.0.0.1:{listener.port}/schema.json"
    counts = await table_counts(db)
    with anyio.fail_after(30):
        for name, schema in _hostile_schemas(url, secret).items():
            text = await call_error(client, "define_process", "invalid_argument", process_id=name, name=name,
                                    input_schema=schema)  # fmt: skip
            assert "input_schema" in text and "the-secret-value" not in text, text
        # A remote $schema is only a label: accepted, never fetched.
        await call_ok(client, "define_process", process_id="meta", name="meta", output_schema={"$schema": url})
    assert await table_counts(db) != counts  # only "meta" was written
    assert listener.connections == 0


async def test_a_stored_hostile_schema_is_refused_when_data_reaches_it_and_nothing_is_fetched(
    client: Client, db: Database, listener: Listener, tmp_path: Path
) -> None:
    """Definitions written before any check (or by another tool) cannot make validation fetch either."""
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"const": "the-secret-value"}))
    schemas = _hostile_schemas(f"http://127.0.0.1:{listener.port}/s.json", secret)
    async with db.unit_of_work() as session:
        for name, schema in schemas.items():
            await ProcessDefinitionRepository(session).create(id=name, name=name, depends_on=[], output_schema=schema)
    project = (await call_ok(client, "create_project", name="hostile"))["id"]
    counts = await table_counts(db)
    with anyio.fail_after(30):
        for name in schemas:
            text = await call_error(
                client, "record_execution", "invalid_argument", project_id=project, process_id=name,
                output_data={"x": "the-secret-value", "enum": 1},
            )  # fmt: skip
            assert f"output_schema of process {name!r}" in text and "the-secret-value" not in text, text
    assert await table_counts(db) == counts
    assert listener.connections == 0


CATASTROPHIC = {
    "nested": {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}},
    "overlap": {"type": "object", "patternProperties": {"(x+x+)+y": {"type": "integer"}}},
}


async def test_catastrophic_patterns_answer_at_once_and_block_no_one(client: Client) -> None:
    for name, schema in CATASTROPHIC.items():
        await call_ok(client, "define_process", process_id=name, name=name, output_schema=schema)
    project = (await call_ok(client, "create_project", name="regex"))["id"]
    evil = {"nested": {"s": "a" * 40 + "!"}, "overlap": {"x" * 40: "not an integer"}}
    # A backtracking engine takes longer than the age of the universe on these; a hang is a failure.
    with anyio.fail_after(20):
        nested = await call_error(client, "record_execution", "schema_violation", project_id=project,
                                  process_id="nested", output_data=evil["nested"])  # fmt: skip
        assert "$.s" in nested
        await call_ok(client, "record_execution", project_id=project, process_id="overlap", output_data=evil["overlap"])
        # While the evil inputs are being checked, other calls go on.
        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(_evil_record, client, project, evil["nested"])
            await call_ok(client, "list_projects")


async def _evil_record(client: Client, project: str, output: dict[str, Any]) -> None:
    await call_error(client, "record_execution", "schema_violation", project_id=project, process_id="nested",
                     output_data=output)  # fmt: skip


async def test_backtracking_only_patterns_are_refused_when_defined(client: Client, db: Database) -> None:
    counts = await table_counts(db)
    for pattern in ("(?=a)b", "(a)\\1", "(?<!x)y"):
        text = await call_error(client, "define_process", "invalid_argument", process_id="p", name="p",
                                output_schema={"type": "string", "pattern": pattern})  # fmt: skip
        assert "linear-time" in text and pattern.replace("\\", "\\\\") in text, text
    assert await table_counts(db) == counts


async def test_self_referential_schemas_validate_within_bounds(client: Client) -> None:
    schemas = {
        "itself": {"$ref": "#"},
        "cycle": {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        "tree": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}},
    }
    project = (await call_ok(client, "create_project", name="recursive"))["id"]
    with anyio.fail_after(20):
        for name, schema in schemas.items():
            await call_ok(client, "define_process", process_id=name, name=name, output_schema=schema)
            await call_ok(client, "record_execution", project_id=project, process_id=name,
                          output_data={"kids": [{"kids": []}]})  # fmt: skip
        await call_error(client, "record_execution", "schema_violation", project_id=project, process_id="tree",
                         output_data={"kids": [{"kids": 3}]})  # fmt: skip


async def test_a_misspelt_argument_is_refused_naming_the_closest_known_one(client: Client, db: Database) -> None:
    await call_ok(client, "define_process", process_id="a", name="A")
    project = (await call_ok(client, "create_project", name="typo"))["id"]
    counts = await table_counts(db)
    text = await call_error(client, "record_execution", "invalid_argument", project_id=project, process_id="a",
                            output_data={}, expected_versoin=3)  # fmt: skip
    assert "'expected_versoin'" in text and "expected_version" in text, text
    huge = await call_error(client, "create_project", "invalid_argument", name="x", blob="y" * 5_000_000)
    assert "'blob'" in huge and len(huge) < 1_000
    assert await table_counts(db) == counts
