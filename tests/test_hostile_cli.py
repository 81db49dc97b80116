"""Hostile round 3 (issue 30), the command line: inputs and targets that must never turn the CLI against the
database it manages or the terminal it prints to. Every test drives the real command on real databases."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from sqlalchemy import text

from mcp_server.cli.pipeline import load_text
from mcp_server.cli.tables import visible
from mcp_server.db.engine import Database
from mcp_server.services.copy import TABLES
from tests.conftest import fresh_sqlite_url
from tests.helpers import call_ok, table_counts
from tests.test_cli import SCRIPT, fill, run_cli

pytestmark = pytest.mark.anyio

COPIED = {table.name for table in TABLES}


def _no_partials(*directories: Path) -> list[str]:
    return [p.name for d in directories for p in d.iterdir() if ".partial" in p.name]


def _refused_backup_targets(tmp_path: Path, live: Path) -> list[tuple[str, Path]]:
    """Every way to name the live database (or a companion, or a directory) as a backup target."""
    (tmp_path / "link.db").symlink_to(live)
    os.link(live, tmp_path / "hard.db")
    (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "sub").mkdir()
    return [
        ("the file itself", live),
        ("another spelling", tmp_path / "sub" / ".." / live.name),
        ("a symlinked directory", tmp_path / "alias" / live.name),
        ("a symlink", tmp_path / "link.db"),
        ("a hard link", tmp_path / "hard.db"),
        ("the WAL", Path(f"{live}-wal")),
        ("the shared memory", Path(f"{live}-shm")),
        ("the writers' gate", Path(f"{live}-writers")),
        ("a directory", tmp_path / "sub"),
    ]


async def test_a_backup_never_overwrites_the_live_database_while_a_server_writes(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    url = f"sqlite:///{live}"
    params = StdioServerParameters(
        command=SCRIPT, env={"PIPELINE_STATE_DATABASE_URL": url, "XDG_DATA_HOME": str(tmp_path / "d")}
    )
    outcomes: list[tuple[str, int, str]] = []
    async with Client(params) as client:
        await call_ok(client, "define_process", process_id="a", name="A")
        project = (await call_ok(client, "create_project", name="busy"))["id"]
        usage = {"provider": "x", "model": "y", "cost_usd": "0.001"}
        await call_ok(client, "record_execution", project_id=project, process_id="a", output_data={}, usage=usage)
        targets = _refused_backup_targets(tmp_path, live)
        done = threading.Event()

        def attack() -> None:
            for label, target in targets:
                result = run_cli("db", "backup", str(target), "--force", url=url)
                outcomes.append((label, result.returncode, result.stderr))
            done.set()

        worker = threading.Thread(target=attack)
        worker.start()
        written = 1
        with anyio.fail_after(180):
            while not done.is_set():
                await call_ok(client, "record_execution", project_id=project, process_id="a",
                              output_data={"n": written}, usage=usage)  # fmt: skip
                written += 1
        worker.join()
        summary = await call_ok(client, "get_cost_summary", project_id=project)
        assert summary["totals"]["calls"] == written
    for label, returncode, stderr in outcomes:
        assert returncode == 1, (label, stderr)
        assert "nothing was written" in stderr and "Traceback" not in stderr, (label, stderr)
    assert len(outcomes) == len(targets)
    with sqlite3.connect(live) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM process_executions").fetchone()[0] == written
    assert (tmp_path / "sub").is_dir() and _no_partials(tmp_path, tmp_path / "sub") == []


def test_a_failed_backup_leaves_nothing_and_a_planted_link_is_never_followed(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    url = f"sqlite:///{live}"
    assert run_cli("db", "upgrade", url=url).returncode == 0
    missing = run_cli("db", "backup", str(tmp_path / "nowhere" / "copy.db"), url=url)
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "nowhere").exists()

    # The old code wrote through `.copy.db.partial`: a link planted there must not redirect the backup.
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".copy.db.partial").symlink_to(victim)
    done = run_cli("db", "backup", str(out / "copy.db"), url=url)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious" and (out / ".copy.db.partial").is_symlink()
    with sqlite3.connect(out / "copy.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert {p.name for p in out.iterdir()} == {"copy.db", ".copy.db.partial"}

    # --force onto an ordinary existing file still replaces it; a link there is replaced, not written through.
    (out / "victim-link.db").symlink_to(victim)
    forced = run_cli("db", "backup", str(out / "victim-link.db"), "--force", url=url)
    assert forced.returncode == 0, forced.stderr
    assert victim.read_text() == "precious" and not (out / "victim-link.db").is_symlink()
    assert _no_partials(out) == [".copy.db.partial"]


PIPELINE = """\
pipeline_id: docs
processes:
  - {process_id: draft, name: Draft}
  - {process_id: edit, name: Edit, depends_on: [draft]}
"""


async def _data_rows(url: str) -> dict[str, int]:
    database = Database.connect(url)
    try:
        counts = await table_counts(database)
    finally:
        await database.dispose()
    return {name: count for name, count in counts.items() if name in COPIED and count}


async def test_db_copy_is_all_or_nothing_and_names_the_database_that_refused(
    sqlite_template: Path, fresh_pg_database: str, tmp_path: Path
) -> None:
    source = fresh_sqlite_url(sqlite_template, tmp_path)
    source_file = tmp_path / "state.db"
    (tmp_path / "docs.yaml").write_text(PIPELINE)
    assert run_cli("pipeline", "apply", str(tmp_path / "docs.yaml"), url=source).returncode == 0
    assert run_cli("prices", "set", "acme", "x-1", "--input", "1", "--output", "2", url=source).returncode == 0
    # SQLite keeps a value of any length (or with a NUL); PostgreSQL refuses both. The prices are copied last.
    for bad, expected in (("'m' || char(0)", "refused a row of llm_prices"), ("printf('%.300c', 'm')", "300 char")):
        with sqlite3.connect(source_file) as conn:
            conn.execute(f"UPDATE llm_prices SET model = {bad}")  # noqa: S608 - the test's own literals
        failed = run_cli("db", "copy", "--to", fresh_pg_database, url=source)
        assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
        assert expected in failed.stderr and "nothing was copied" in failed.stderr, failed.stderr
        assert "cannot use the database sqlite" not in failed.stderr  # the source is not to blame for this
        assert "\x00" not in failed.stderr
        assert await _data_rows(fresh_pg_database) == {}  # all or nothing: the target is as empty as it was
    assert "target postgresql://" in failed.stderr and "llm_prices.model" in failed.stderr
    with sqlite3.connect(source_file) as conn:
        conn.execute("UPDATE llm_prices SET model = 'x-1'")
    retried = run_cli("db", "copy", "--to", fresh_pg_database, url=source)
    assert retried.returncode == 0, retried.stderr
    assert await _data_rows(fresh_pg_database) == {"process_definitions": 2, "llm_prices": 1}


async def _fail(client: Client, project: str, process: str, message: str) -> str:
    started = await call_ok(client, "start_execution", project_id=project, process_id=process)
    await call_ok(client, "fail_execution", execution_id=started["execution"]["id"], error_message=message)
    return str(started["execution"]["id"])


async def test_prune_keeps_the_execution_that_explains_a_current_failure(client: Client, db_url: str) -> None:
    await call_ok(client, "define_process", process_id="a", name="A")
    await call_ok(client, "define_process", process_id="b", name="B")
    project = (await call_ok(client, "create_project", name="broken"))["id"]
    await call_ok(client, "record_execution", project_id=project, process_id="a", output_data={"v": 1})
    first = await _fail(client, project, "a", "first try: rate limited")
    last = await _fail(client, project, "a", "the schema of the upstream changed")
    recovered = await _fail(client, project, "b", "flaky")
    await call_ok(client, "record_execution", project_id=project, process_id="b", output_data={"v": 1})
    state = await call_ok(client, "get_process_state", project_id=project, process_id="a")
    assert state["state"] == "failed"

    pruned = run_cli("db", "prune", "--older-than", "0d", url=db_url)
    assert pruned.returncode == 0, pruned.stderr
    left = {e["id"] for e in (await call_ok(client, "list_executions", project_id=project, page_size=100))["items"]}
    assert last in left  # why `a` is failed: still there, with its message
    assert first not in left and recovered not in left  # superseded failures go as before
    explained = await call_ok(client, "get_execution", execution_id=last)
    assert explained["error_message"] == "the schema of the upstream changed"

    for age in ("999999d", "999999h", "36501d"):
        refused = run_cli("db", "prune", "--older-than", age, url=db_url)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert "36500d" in refused.stderr
    assert run_cli("db", "prune", "--older-than", "36500d", "--dry-run", url=db_url).returncode == 0


# An OSC 52 clipboard write, a screen clear, an 8-bit CSI, a bidi override, and rich markup.
HOSTILE = "[/]x\x1b]52;c;cHduZWQ=\x07\x1b[2J\x9b31m\u202e[bold red]y"
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


async def _plant(db: Database, statement: str) -> None:
    """Agent text as an older server or an import may have stored it, whatever the tools now accept."""
    async with db.unit_of_work() as session:
        await session.execute(text(statement), {"hostile": HOSTILE})


def _shown_safely(output: str, column: int | None) -> None:
    """No raw control character anywhere; the text shown as written (when ``column``: that column's cells,
    which the table wraps over several lines, joined; a narrow column ends in … where it is cut)."""
    assert not any(char in output for char in RAW), repr(output)
    shown = visible(HOSTILE)
    if column is not None:
        output = "".join(row.split("│")[column].strip() for row in output.splitlines() if row.count("│") > column)
        shown = shown[:14]  # the markup-like text as it is and the ESC spelled out
    assert shown in output, output


async def test_human_views_show_agent_text_and_never_send_markup_or_escapes(
    client: Client, db: Database, db_url: str
) -> None:
    project = await fill(client)
    await call_ok(client, "invalidate_process", project_id=project, process_id="b", reason="upstream")
    assert run_cli("prices", "set", "acme", "x-1", "--input", "1", "--output", "2", url=db_url).returncode == 0
    await _plant(db, "UPDATE projects SET name = :hostile")
    await _plant(db, "UPDATE process_states SET invalidation_reason = :hostile")
    await _plant(db, "UPDATE process_definitions SET name = :hostile")
    await _plant(db, "UPDATE llm_metrics SET model = :hostile, provider = :hostile")
    await _plant(db, "UPDATE llm_prices SET model = :hostile")
    views: list[tuple[tuple[str, ...], int | None]] = [
        (("status", project), None),  # the title
        (("costs", "--group-by", "model,provider"), 1),
        (("costs", "--group-by", "provider"), 1),
        (("prices", "list"), 2),
    ]
    for args, column in views:
        result = run_cli(*args, url=db_url)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr)
        _shown_safely(result.stdout, column)
    for args in (("costs", "--json"), ("prices", "list", "--json"), ("status", project, "--json")):
        result = run_cli(*args, url=db_url)
        assert result.returncode == 0 and not any(char in result.stdout for char in RAW), args
    assert json.loads(run_cli("status", project, "--json", url=db_url).stdout)["project_name"] == HOSTILE
    for args in (("pipeline", "export", "default"), ("pipeline", "export", "default", "--json")):
        exported = run_cli(*args, url=db_url)
        assert exported.returncode == 0 and not any(char in exported.stdout for char in RAW), exported.stdout
        assert load_text(exported.stdout)["processes"][0]["name"] == HOSTILE  # escaped, not lost
    graph = run_cli("status", project, "--graph", url=db_url)
    assert graph.returncode == 0 and not any(char in graph.stdout for char in RAW), graph.stdout


LAUGHS = "pipeline_id: x\nprocesses:\n  - process_id: a\n    name: A\n    output_schema:\n      $defs:\n" + "".join(
    f"        {name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (LAUGHS, "values once its aliases are expanded"),
        ("pipeline_id: x\nprocesses: &p [*p]\n", "refers to the value that contains it"),
        ("pipeline_id: x\nprocesses: []\npipeline_id: y\n", "'pipeline_id' is given twice"),
        ('{"pipeline_id": "x", "processes": [{"process_id": "a", "name": "A", "name": "B"}]}', "'name' is given"),
        ('{"pipeline_id": "x", "processes": ' + "[" * 50_000 + "]" * 50_000 + "}", "deeper than 100"),
        ("pipeline_id: x\nprocesses:\n" + "".join("  " * i + "- \n" for i in range(1, 2000)), "deeper than 100"),
        ("pipeline_id: x\nprocesses: [" + '{"a": ' * 5000 + "1" + "}" * 5000 + "]", "deeper than 100"),
    ],
    ids=[
        "billion-laughs",
        "recursive-alias",
        "duplicate-yaml-key",
        "duplicate-json-key",
        "deep-json",
        "deep-yaml",
        "deep-objects",
    ],  # fmt: skip
)
def test_pipeline_files_are_bounded_and_refused_clearly(tmp_path: Path, content: str, expected: str) -> None:
    source = tmp_path / "pipeline.yaml"
    source.write_text(content)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    for extra in ((), ("--dry-run",)):
        result = run_cli("pipeline", "apply", str(source), *extra, url=url, timeout=20)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert expected in result.stderr, result.stderr


async def test_a_dry_run_fails_when_the_apply_would_be_refused(client: Client, db_url: str, tmp_path: Path) -> None:
    source = tmp_path / "docs.yaml"
    source.write_text(PIPELINE)
    assert run_cli("pipeline", "apply", str(source), url=db_url).returncode == 0
    project = (await call_ok(client, "create_project", name="d", pipeline_id="docs"))["id"]
    for process in ("draft", "edit"):
        await call_ok(client, "record_execution", project_id=project, process_id=process, output_data={})
    source.write_text("pipeline_id: docs\nprocesses:\n  - {process_id: draft, name: Draft}\n")
    dry = run_cli("pipeline", "apply", str(source), "--dry-run", url=db_url)
    assert dry.returncode == 1 and "would be refused" in dry.stderr and "['edit']" in dry.stderr, dry.stderr
    assert "refused" in dry.stdout and "dry run: nothing changed" in dry.stdout
    real = run_cli("pipeline", "apply", str(source), url=db_url)
    assert real.returncode == 1 and "conflict" in real.stderr
    # Anchors, aliases and merge keys within the bounds still work.
    source.write_text("pipeline_id: docs\nprocesses:\n  - &draft {process_id: draft, name: Draft}\n"
                      "  - {<<: *draft, process_id: edit, name: Edit, depends_on: [draft]}\n")  # fmt: skip
    fine = run_cli("pipeline", "apply", str(source), "--dry-run", url=db_url)
    assert fine.returncode == 0 and "unchanged    2" in fine.stdout, fine.stdout + fine.stderr


async def test_prices_are_stored_exactly_as_given_or_refused(client: Client, db_url: str) -> None:
    refused = [
        ("acme", "m", "1e-300", "would be stored as 0"),
        ("acme", "m", "0.00000000015", "more decimal places"),
        ("acme", "m", "NaN", "between 0"),
        ("acme", "m", "-0.5", "between 0"),
        ("", "m", "1", "provider name is empty"),
        ("acme", "   ", "1", "model name is empty"),
        ("acme", "m" * 101, "1", "at most 100"),
        ("acme", "m" * 10_000, "1", "at most 100"),
        ("a" * 51, "m", "1", "at most 50"),
        ("acme", "m\x1b[2J", "1", "control character"),
    ]
    for provider, model, price, expected in refused:
        result = run_cli("prices", "set", provider, model, "--input", price, "--output", "1", url=db_url)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (model[:20], result.stderr)
        assert expected in result.stderr and "\x1b" not in result.stderr, (model[:20], result.stderr)
    assert json.loads(run_cli("prices", "list", "--json", url=db_url).stdout)["prices"] == []
    kept = run_cli("prices", "set", "acme", "m" * 100, "--input", "0.0000000001", "--output", "0", url=db_url)
    assert kept.returncode == 0, kept.stderr
    (row,) = json.loads(run_cli("prices", "list", "--json", url=db_url).stdout)["prices"]
    assert row["input_per_mtok"] == "0.0000000001" and row["output_per_mtok"] == "0"
