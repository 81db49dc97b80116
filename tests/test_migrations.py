"""Migrations: up, down, up again; no drift from the models; offline DDL; concurrent start-ups."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from mcp_server.db.base import Base
from mcp_server.db.engine import create_engine
from mcp_server.db.migrate import SCHEMA_HEAD, alembic_config, current_revision, run_alembic, upgrade_to_head
from mcp_server.settings import to_async_url

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "projects",
    "budget_alerts",
    "execution_checks",
    "pipeline_budgets",
    "process_definitions",
    "process_executions",
    "process_states",
    "prompt_versions",
    "llm_metrics",
    "llm_prices",
    "revisions",
    "alembic_version",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    url: str = request.getfixturevalue("fresh_pg_database")
    return url


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def test_schema_head_constant_matches_alembic() -> None:
    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() == SCHEMA_HEAD


async def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    url = to_async_url(empty_url)
    assert await upgrade_to_head(url) is True
    assert await _tables(url) == TABLES
    assert await upgrade_to_head(url) is False  # already at head: nothing to do
    await run_alembic(url, "downgrade", "base")
    assert await _tables(url) == {"alembic_version"}
    assert await upgrade_to_head(url) is True
    assert await _tables(url) == TABLES
    engine = create_engine(url)
    try:
        assert await current_revision(engine) == SCHEMA_HEAD
    finally:
        await engine.dispose()


async def test_models_and_migrations_do_not_drift(empty_url: str) -> None:
    await upgrade_to_head(empty_url)
    engine = create_engine(empty_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///offline.db", ["CREATE TABLE projects", "CREATE TABLE llm_metrics", "TEXT"]),
        ("postgresql://offline@localhost/db", ["CREATE TABLE projects", "JSONB", "UUID", "VARCHAR(100)[]"]),
    ],
)
def test_offline_mode_prints_ddl(url: str, expected: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(ROOT / "alembic.ini"),
            "-x",
            f"url={url}",
            "upgrade",
            "head",
            "--sql",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for fragment in expected:
        assert fragment in result.stdout
    assert not (tmp_path / "offline.db").exists()


CONCURRENT_MIGRATE = """
import asyncio, sys
from mcp_server.db.migrate import upgrade_to_head
sys.stdin.readline()  # wait for the starting gun so that every process races
print(asyncio.run(upgrade_to_head(sys.argv[1])))
"""


@pytest.mark.slow
def test_eight_processes_migrate_one_fresh_database_once(empty_url: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_MIGRATE, empty_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    for proc in procs:  # every interpreter is up before any of them starts migrating
        assert proc.stdin is not None
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    results = [out.strip() for out, _ in outputs]
    assert sorted(results) == ["False"] * 7 + ["True"], results


async def test_alembic_version_has_one_row_after_concurrent_style_reruns(empty_url: str) -> None:
    for _ in range(3):
        await upgrade_to_head(empty_url)
    engine = create_engine(empty_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        assert [r[0] for r in rows] == [SCHEMA_HEAD]
    finally:
        await engine.dispose()


async def _write_0001_rows(url: str) -> dict[str, str]:
    """A small history written at revision 0001 (a chain a -> b, costs, a prompt): through Core on the
    reflected 0001 tables, as that release's server left them."""
    import json
    import uuid
    from datetime import UTC, datetime

    from sqlalchemy import MetaData

    ids = {name: str(uuid.uuid4()) for name in ("project", "e1", "e2", "e3", "prompt", "m1", "m2", "s1", "s2")}
    now = datetime(2026, 11, 1, tzinfo=UTC)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:

            def insert(sync: Connection) -> None:
                meta = MetaData()
                meta.reflect(sync)
                t = meta.tables
                stamp = {"created_at": now, "updated_at": now}
                sync.execute(t["projects"].insert(), [{"id": ids["project"], "name": "old", "status": "in_progress",
                    "metadata": json.dumps({}), "budget_usd": 50_000_000_000, "spent_usd": 3_000_000_000,
                    "unpriced_calls": 1, "is_deleted": False, **stamp}])  # fmt: skip
                sync.execute(t["process_definitions"].insert(), [
                    {"id": "a", "name": "A", "order_index": 0, "depends_on": "[]", **stamp},
                    {"id": "b", "name": "B", "order_index": 0, "depends_on": json.dumps(["a"]), **stamp},
                ] if sync.dialect.name == "sqlite" else [
                    {"id": "a", "name": "A", "order_index": 0, "depends_on": [], **stamp},
                    {"id": "b", "name": "B", "order_index": 0, "depends_on": ["a"], **stamp},
                ])  # fmt: skip
                sync.execute(t["prompt_versions"].insert(), [{"id": ids["prompt"], "prompt_id": "p", "version": 1,
                    "user_template": "x", "content_hash": "h" * 64, "created_at": now}])  # fmt: skip
                data = (lambda v: json.dumps(v)) if sync.dialect.name == "sqlite" else (lambda v: v)
                sync.execute(t["process_executions"].insert(), [
                    {"id": ids[e], "project_id": ids["project"], "process_id": pid, "input_data": data({}),
                     "output_data": data({"v": v}), "output_hash": str(v) * 64, "status": "completed",
                     "started_at": now, "completed_at": now, "prompt_version_id": ids["prompt"], **stamp}
                    for e, pid, v in (("e1", "a", 1), ("e2", "a", 2), ("e3", "b", 3))
                ])  # fmt: skip
                sync.execute(t["process_states"].insert(), [
                    {"id": ids["s1"], "project_id": ids["project"], "process_id": "a", "state": "completed",
                     "version": 2, "current_execution_id": ids["e2"], "invalidated_at": None,
                     "invalidated_by_process_id": None, "invalidation_reason": None, "last_updated_at": now},
                    {"id": ids["s2"], "project_id": ids["project"], "process_id": "b", "state": "stale", "version": 2,
                     "current_execution_id": ids["e3"], "invalidated_at": now, "invalidated_by_process_id": "a",
                     "invalidation_reason": "upstream 'a' has a new output", "last_updated_at": now},
                ])  # fmt: skip
                sync.execute(t["llm_metrics"].insert(), [
                    {"id": ids["m1"], "project_id": ids["project"], "process_id": "a", "execution_id": ids["e1"],
                     "provider": "openai", "model": "gpt-4o", "prompt_tokens": 10, "completion_tokens": 5,
                     "total_tokens": 15, "cache_read_tokens": 0, "cache_write_tokens": 0,
                     "cost_usd": 3_000_000_000, "cost_source": "reported", "created_at": now},
                    {"id": ids["m2"], "project_id": ids["project"], "process_id": "b", "execution_id": ids["e3"],
                     "provider": "acme", "model": "x", "prompt_tokens": 1, "completion_tokens": 1,
                     "total_tokens": 2, "cache_read_tokens": 0, "cache_write_tokens": 0,
                     "cost_usd": None, "cost_source": "unpriced", "created_at": now},
                ])  # fmt: skip

            await conn.run_sync(insert)
    finally:
        await engine.dispose()
    return ids


async def test_a_populated_0001_database_upgrades_with_every_figure_and_downgrades_while_one_pipeline(
    empty_url: str,
) -> None:
    from mcp import Client

    from mcp_server.server import build_server
    from mcp_server.settings import Settings
    from tests.helpers import call_error, call_ok

    url = to_async_url(empty_url)
    await run_alembic(url, "upgrade", "0001")
    ids = await _write_0001_rows(url)
    assert await upgrade_to_head(url) is True

    async def figures() -> dict[str, Any]:
        async with Client(build_server(Settings(database_url=empty_url, auto_migrate=False))) as client:
            project = ids["project"]
            status = await call_ok(client, "get_pipeline_status", project_id=project)
            costs = await call_ok(client, "get_cost_summary", project_id=project, group_by=["process", "prompt"])
            listed = await call_ok(client, "list_executions", project_id=project, include_data=True)
            state = await call_ok(client, "get_process_state", project_id=project, process_id="b")
            return {"status": status, "costs": costs, "executions": listed, "b": state}

    after = await figures()
    assert after["status"]["pipeline_id"] == "default"
    rows = {p["process_id"]: p for p in after["status"]["processes"]}
    assert (rows["a"]["state"], rows["a"]["version"]) == ("completed", 2)
    assert (rows["b"]["state"], rows["b"]["version"], rows["b"]["invalidated_by_process_id"]) == ("stale", 2, "a")
    assert after["status"]["cost"]["spent_usd"] == "0.3" and after["status"]["cost"]["budget_usd"] == "5"
    totals = after["costs"]["totals"]
    assert (totals["calls"], totals["cost_usd"], totals["unpriced_calls"], totals["total_tokens"]) == (2, "0.3", 1, 17)
    assert totals["superseded_cost_usd"] == "0.3" and totals["superseded_unpriced_calls"] == 1
    assert {e["id"] for e in after["executions"]["items"]} == {ids["e1"], ids["e2"], ids["e3"]}
    assert after["b"]["inputs"] == {"a": {"v": 2}}

    # Back to 0001 and up again: nothing changes while only `default` exists.
    await run_alembic(url, "downgrade", "0001")
    assert await upgrade_to_head(url) is True
    assert await figures() == after

    # With another pipeline, the downgrade is refused with the reason, and the database stays at head.
    async with Client(build_server(Settings(database_url=empty_url, auto_migrate=False))) as client:
        await call_ok(client, "define_process", pipeline_id="blue", process_id="a", name="A")
        await call_error(client, "create_project", "not_found", name="x", pipeline_id="red")
    with pytest.raises(RuntimeError, match="blue"):
        await run_alembic(url, "downgrade", "0001")
    engine = create_engine(url)
    try:
        assert await current_revision(engine) == SCHEMA_HEAD
    finally:
        await engine.dispose()
