"""``export`` / ``import`` (issue 17): a project moves from SQLite to PostgreSQL and back with every answer
of the tools unchanged; importing twice changes nothing; a clash is refused by name, nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.conftest import fresh_sqlite_url
from tests.helpers import call_ok
from tests.test_cli import run_cli

pytestmark = pytest.mark.anyio

GROUPS = ("project", "process", "provider", "model", "day", "prompt", "source")


def _client(url: str) -> Client:
    return Client(build_server(Settings(database_url=url, auto_migrate=True)))


async def _fill(url: str) -> list[str]:
    """Two pipelines, a stale branch, prompts, a reservation, priced and unpriced costs; checks (a required
    one that held ``after`` until it passed, one not required, one on an old execution)."""
    async with _client(url) as client:
        await call_ok(client, "apply_pipeline", pipeline_id="docs", processes=[
            {"process_id": "spec", "name": "Spec", "output_schema": {"type": "object"}},
            {"process_id": "draft", "name": "Draft", "depends_on": ["spec"]},
            {"process_id": "review", "name": "Review", "depends_on": ["draft"]},
        ])  # fmt: skip
        await call_ok(client, "define_process", process_id="solo", name="Solo", required_checks=["peer"])
        await call_ok(client, "define_process", process_id="after", name="After", depends_on=["solo"])
        docs = (await call_ok(client, "create_project", name="docs", pipeline_id="docs", budget_usd="3",
                              budget_policy="block", metadata={"team": "ä"}))["id"]  # fmt: skip
        plain = (await call_ok(client, "create_project", name="plain"))["id"]
        prompt = (await call_ok(client, "save_prompt_version", prompt_id="writer", user_template="Write {{x}}"))["id"]
        usage = {"provider": "anthropic", "model": "claude-sonnet-4-5", "prompt_tokens": 1234, "completion_tokens": 56,
                 "cache_read_tokens": 200}  # fmt: skip
        for round_ in range(2):
            for pid in ("spec", "draft", "review"):
                await call_ok(client, "record_execution", project_id=docs, process_id=pid, output_data={"r": round_},
                              prompt_version_id=prompt, usage=usage, reasoning="because")  # fmt: skip
        await call_ok(client, "record_execution", project_id=docs, process_id="spec", output_data={"r": 9})
        await call_ok(client, "start_execution", project_id=docs, process_id="draft", reserve_usd="0.25")
        await call_ok(client, "report_cost", provider="acme", model="x-1", prompt_tokens=5, project_id=docs)
        reported = {"provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 10, "cost_usd": "0.1"}
        solo = (await call_ok(client, "record_execution", project_id=plain, process_id="solo",
                              output_data={"ok": True}, usage=reported))["execution"]["id"]  # fmt: skip
        await call_ok(client, "record_check", execution_id=solo, name="peer", passed=False, agent="reviewer")
        await call_ok(client, "record_check", execution_id=solo, name="peer", passed=True,
                      details={"by": "ä", "score": 3})  # fmt: skip
        await call_ok(client, "record_check", execution_id=solo, name="style", passed=False, details={})
        first = (await call_ok(client, "list_executions", project_id=docs, process_id="spec"))["items"][-1]["id"]
        await call_ok(client, "record_check", execution_id=first, name="spell-check", passed=True)
        return [docs, plain]


async def _answers(url: str, projects: list[str]) -> dict[str, Any]:
    async with _client(url) as client:
        out: dict[str, Any] = {"pipelines": await call_ok(client, "list_pipelines")}
        for project in projects:
            out[project] = {
                "project": await call_ok(client, "get_project", project_id=project),
                "status": await call_ok(client, "get_pipeline_status", project_id=project),
                "executions": await call_ok(
                    client, "list_executions", project_id=project, include_data=True, page_size=100
                ),  # fmt: skip
                "checks": [],
                **{g: await call_ok(client, "get_cost_summary", project_id=project, group_by=[g]) for g in GROUPS},
            }
            for execution in out[project]["executions"]["items"]:
                found = await call_ok(client, "get_execution", execution_id=execution["id"])
                out[project]["checks"].append(found.get("checks"))
        return out


def _step(status: dict[str, Any], process_id: str) -> dict[str, Any]:
    return next(row for row in status["processes"] if row["process_id"] == process_id)


async def test_a_bundle_moves_sqlite_to_postgresql_and_back_with_every_answer_unchanged(
    sqlite_template: Path, fresh_pg_database: str, tmp_path: Path
) -> None:
    source = fresh_sqlite_url(sqlite_template, tmp_path)
    projects = await _fill(source)
    before = await _answers(source, projects)
    bundle = tmp_path / "all.jsonl"
    exported = run_cli("export", "-o", str(bundle), url=source)
    assert exported.returncode == 0, exported.stderr
    header = json.loads(bundle.read_text().splitlines()[0])
    assert header["format"] == "pipeline-state-bundle" and header["format_version"] == 2
    assert header["counts"]["project"] == 2 and header["counts"]["check"] == 3

    imported = run_cli("import", str(bundle), url=fresh_pg_database)
    assert imported.returncode == 0, imported.stderr
    assert "3 check" in imported.stdout, imported.stdout
    assert await _answers(fresh_pg_database, projects) == before
    # The check that released `after` came along: it is still released, not held again.
    assert _step(before[projects[1]]["status"], "after")["can_run"] is True
    assert [[(c["name"], c["passed"]) for c in checks or []] for checks in before[projects[1]]["checks"]] == [
        [("peer", True), ("style", False)]
    ]
    again = run_cli("import", str(bundle), url=fresh_pg_database)
    assert again.returncode == 0 and "nothing new" in again.stdout, again.stdout
    assert await _answers(fresh_pg_database, projects) == before

    # And back: PostgreSQL to a fresh SQLite file, one project at a time.
    back = tmp_path / "back"
    back.mkdir()
    target = f"sqlite:///{back / 'state.db'}"
    for project in projects:
        part = tmp_path / f"{project}.jsonl"
        assert run_cli("export", "--project", project, "-o", str(part), url=fresh_pg_database).returncode == 0
        loaded = run_cli("import", str(part), url=target)
        assert loaded.returncode == 0, loaded.stderr
    assert await _answers(target, projects) == before


async def test_a_clashing_bundle_is_refused_by_name_and_writes_nothing(sqlite_template: Path, tmp_path: Path) -> None:
    source = fresh_sqlite_url(sqlite_template, tmp_path)
    projects = await _fill(source)
    bundle = tmp_path / "docs.jsonl"
    assert run_cli("export", "--pipeline", "docs", "-o", str(bundle), url=source).returncode == 0
    lines = bundle.read_text().splitlines()
    assert json.loads(lines[0])["counts"]["project"] == 1
    # Change one project's name and one step's definition: both are clashes.
    changed = []
    for line in lines:
        record = json.loads(line)
        if record["kind"] == "project":
            record["name"] = "renamed"
        if record["kind"] == "definition" and record["id"] == "draft":
            record["depends_on"] = []
        changed.append(json.dumps(record))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(changed) + "\n")
    before = await _answers(source, projects)
    refused = run_cli("import", str(bad), url=source)
    assert refused.returncode == 1 and "conflict" in refused.stderr
    assert "definition docs/draft differs in depends_on" in refused.stderr
    assert f"project {projects[0]} differs in name" in refused.stderr
    assert await _answers(source, projects) == before
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"kind": "header", "format": "something else"}\n')
    assert run_cli("import", str(garbage), url=source).returncode == 1


async def test_db_copy_moves_a_whole_database_onto_an_empty_one_both_ways_and_verifies_it(
    sqlite_template: Path, fresh_pg_database: str, tmp_path: Path
) -> None:
    source = fresh_sqlite_url(sqlite_template, tmp_path)
    projects = await _fill(source)
    run_cli("prices", "set", "acme", "x-1", "--input", "1", "--output", "2", url=source)
    before = await _answers(source, projects)
    copied = run_cli("db", "copy", "--to", fresh_pg_database, url=source)
    assert copied.returncode == 0, copied.stderr
    assert "verified" in copied.stdout and "llm_metrics" in copied.stdout + copied.stderr
    assert await _answers(fresh_pg_database, projects) == before
    prices = run_cli("prices", "list", "--json", url=fresh_pg_database)
    assert '"model": "x-1"' in prices.stdout
    again = run_cli("db", "copy", "--to", fresh_pg_database, url=source)
    assert again.returncode == 1 and "not empty" in again.stderr
    # And back, onto a new SQLite file.
    (tmp_path / "back").mkdir()
    back = f"sqlite:///{tmp_path / 'back' / 'state.db'}"
    returned = run_cli("db", "copy", "--to", back, url=fresh_pg_database)
    assert returned.returncode == 0, returned.stderr
    assert await _answers(back, projects) == before
