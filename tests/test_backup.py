"""``db backup`` (issue 17): a consistent SQLite copy while a server writes; PostgreSQL gets the pg_dump
command with the password masked."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.helpers import call_ok
from tests.test_cli import SCRIPT, run_cli

pytestmark = pytest.mark.anyio


async def test_a_backup_taken_while_a_server_writes_is_consistent_and_serves(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    params = StdioServerParameters(
        command=SCRIPT, env={"PIPELINE_STATE_DATABASE_URL": url, "XDG_DATA_HOME": str(tmp_path / "d")}
    )
    copies: list[Path] = []
    async with Client(params) as client:
        await call_ok(client, "define_process", process_id="a", name="A")
        project = (await call_ok(client, "create_project", name="busy"))["id"]
        acknowledged = 0
        done = threading.Event()

        def take_backups() -> None:
            for index in range(3):
                copy = tmp_path / f"copy{index}.db"
                result = run_cli("db", "backup", str(copy), url=url)
                assert result.returncode == 0, result.stderr
                assert "integrity ok" in result.stdout
                copies.append(copy)
            done.set()

        worker = threading.Thread(target=take_backups)
        worker.start()
        with anyio.fail_after(120):
            while not done.is_set():
                usage = {"provider": "x", "model": "y", "cost_usd": "0.001"}
                await call_ok(client, "record_execution", project_id=project, process_id="a",
                              output_data={"n": acknowledged}, usage=usage)  # fmt: skip
                acknowledged += 1
        worker.join()
    assert acknowledged > 0 and len(copies) == 3
    for copy in copies:
        with sqlite3.connect(copy) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            executions, costs = conn.execute(
                "SELECT (SELECT count(*) FROM process_executions), (SELECT count(*) FROM llm_metrics)"
            ).fetchone()
            assert executions == costs  # every execution came with its cost row, in one transaction
            (version,) = conn.execute("SELECT version FROM process_states").fetchone()
            assert version == executions  # the state's version counts exactly the executions in the copy
    # The last copy is a working database: a server opens it and answers.
    restored = Client(
        StdioServerParameters(
            command=SCRIPT,
            env={"PIPELINE_STATE_DATABASE_URL": f"sqlite:///{copies[-1]}", "XDG_DATA_HOME": str(tmp_path / "d")},
        )
    )
    async with restored as client:
        status = await call_ok(client, "get_pipeline_status", project_id=project)
        assert status["counts"]["completed"] == 1
    refused = run_cli("db", "backup", str(copies[0]), url=url)
    assert refused.returncode == 1 and "--force" in refused.stderr


def test_postgresql_backups_are_pg_dump_with_the_password_masked(tmp_path: Path) -> None:
    result = run_cli("db", "backup", str(tmp_path / "x.dump"), url="postgresql://team:s3cret@db.internal/pipelines")
    assert result.returncode == 2
    assert "pg_dump" in result.stdout and "***" in result.stdout and "db.internal/pipelines" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr
