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
    "process_definitions",
    "process_executions",
    "process_states",
    "prompt_versions",
    "llm_metrics",
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
