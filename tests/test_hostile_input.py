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


async def test_money_never_overflows_and_summaries_stay_exact_at_any_legal_size(client: Client, db: Database) -> None:
    """A project holds up to 900 million USD; the call that would pass that is refused and writes
    nothing. Sums over many such projects (past SQLite's 64-bit integers) stay exact to 1e-10 USD."""
    projects = [(await call_ok(client, "create_project", name=f"rich {n}"))["id"] for n in range(12)]
    for project in projects:
        await call_ok(client, "report_cost", provider="x", model="y", cost_usd="899999999.9", project_id=project)
        await call_ok(client, "report_cost", provider="x", model="y", cost_usd="0.1", project_id=project)
    counts = await table_counts(db)
    text = await call_error(client, "report_cost", "invalid_argument", provider="x", model="y",
                            cost_usd="0.0000000001", project_id=projects[0])  # fmt: skip
    assert "900000000 USD" in text, text
    await call_error(client, "record_execution", "not_found", project_id=projects[0], process_id="nope",
                     output_data={})  # fmt: skip
    assert await table_counts(db) == counts
    await call_ok(client, "report_cost", provider="x", model="y", cost_usd="0.2")
    assert (await call_ok(client, "get_project", project_id=projects[0]))["spent_usd"] == "900000000"
    summary = await call_ok(client, "get_cost_summary")
    assert summary["totals"]["cost_usd"] == "10800000000.2"  # 12 × 900 million, + 0.2
    grouped = await call_ok(client, "get_cost_summary", group_by=["project"])
    assert sorted(group["cost_usd"] for group in grouped["groups"]) == ["0.2"] + ["900000000"] * 12
    huge_tokens = await call_error(client, "report_cost", "invalid_argument", provider="x", model="y",
                                   prompt_tokens=10**9 + 1)  # fmt: skip
    assert "prompt_tokens" in huge_tokens


async def test_replies_about_a_big_pipeline_stay_under_100_kb(client: Client, db: Database) -> None:
    """551 steps: 300 fanned out from one root, 150 with 100 dependencies each. Status pages, the
    cascade of 300 invalidations and the blockers of each step are bounded; paging reaches every step."""
    fan = [f"fan-{n:03d}" for n in range(300)]
    roots = [f"root-{n:03d}" for n in range(100)]
    wide = [f"wide-{n:03d}" for n in range(150)]
    async with db.unit_of_work() as session:
        repo = ProcessDefinitionRepository(session)
        await repo.create(id="hub", name="hub", depends_on=[])
        for name in [*fan]:
            await repo.create(id=name, name=name, depends_on=["hub"])
        for name in roots:
            await repo.create(id=name, name=name, depends_on=[])
        for name in wide:
            await repo.create(id=name, name=name, depends_on=roots)
    project = (await call_ok(client, "create_project", name="big"))["id"]
    await call_ok(client, "record_execution", project_id=project, process_id="hub", output_data={"v": 1})
    for name in fan:
        await call_ok(client, "record_execution", project_id=project, process_id=name, output_data={})
    reply = await client.call_tool(
        "record_execution", {"project_id": project, "process_id": "hub", "output_data": {"v": 2}}
    )
    recorded = reply.structured_content
    assert recorded is not None and recorded["invalidated_count"] == 300 and len(recorded["invalidated"]) == 100
    assert len(reply.content[0].text.encode()) < 100_000  # type: ignore[union-attr]
    seen: list[str] = []
    page = 1
    while True:
        result = await client.call_tool("get_pipeline_status", {"project_id": project, "page": page, "page_size": 200})
        assert len(result.content[0].text.encode()) < 100_000  # type: ignore[union-attr]
        status = result.structured_content
        assert status is not None and status["total"] == 551
        seen += [row["process_id"] for row in status["processes"]]
        for row in status["processes"]:
            assert len(row.get("blocked_by", [])) <= 10
            if row["process_id"].startswith("wide"):
                assert row["blocked_count"] == 100
        if not status["has_more"]:
            break
        page += 1
    assert sorted(seen) == sorted(["hub", *fan, *roots, *wide]) and page == 3
    assert status["counts"] == {"empty": 250, "running": 0, "completed": 1, "failed": 0, "stale": 300}
    assert status["ready_count"] == 400 and len(status["ready_processes"]) == 100  # 300 stale + 100 roots
    stale = await call_ok(client, "get_pipeline_status", project_id=project, state="stale", page_size=50)
    assert stale["total"] == 300 and len(stale["processes"]) == 50 and stale["has_more"] is True
    assert {row["state"] for row in stale["processes"]} == {"stale"}
