"""The human commands: demo, status and costs (tables and --json matching the tools' answers), and
pipelines as files (apply, export)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client

from tests.helpers import call_ok

pytestmark = pytest.mark.anyio

SCRIPT = str(Path(sys.executable).with_name("pipeline-state-mcp"))


def run_cli(*args: str, url: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_STATE_")}
    env["PIPELINE_STATE_DATABASE_URL"] = url
    return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_demo_tells_the_story(tmp_path: Path) -> None:
    result = run_cli("demo", url=f"sqlite:///{tmp_path / 'unused.db'}", timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "invalidated design" in out and "invalidated implementation" in out
    assert "schema_violation" in out
    total = next(line for line in out.splitlines() if line.strip("│ ").startswith("total"))
    cost = [cell.strip() for cell in total.split("│") if cell.strip()][5]
    assert float(cost) > 0
    assert not (tmp_path / "unused.db").exists()  # the demo uses its own temporary database


async def fill(client: Client) -> str:
    await call_ok(client, "define_process", process_id="a", name="A")
    await call_ok(client, "define_process", process_id="b", name="B", depends_on=["a"])
    project = str((await call_ok(client, "create_project", name="cli", budget_usd="1"))["id"])
    usage = {"provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 1000, "completion_tokens": 100}
    await call_ok(client, "record_execution", project_id=project, process_id="a", output_data={"v": 1}, usage=usage)
    await call_ok(client, "record_execution", project_id=project, process_id="b", output_data={"v": 1}, usage=usage)
    await call_ok(client, "record_execution", project_id=project, process_id="a", output_data={"v": 2}, usage=usage)
    await call_ok(client, "report_cost", provider="anthropic", model="claude-sonnet-4-5", prompt_tokens=10)
    return project


async def test_status_and_costs_json_match_the_tools(client: Client, db_url: str) -> None:
    project = await fill(client)
    status = run_cli("status", project, "--json", url=db_url)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == await call_ok(client, "get_pipeline_status", project_id=project)
    costs = run_cli("costs", "--project", project, "--group-by", "model,process", "--json", url=db_url)
    assert costs.returncode == 0, costs.stderr
    expected = await call_ok(client, "get_cost_summary", project_id=project, group_by=["model", "process"])
    assert json.loads(costs.stdout) == expected
    everything = run_cli("costs", "--group-by", "", "--json", url=db_url)
    assert json.loads(everything.stdout)["totals"]["calls"] == 4


async def test_status_and_costs_tables_are_readable(client: Client, db_url: str) -> None:
    project = await fill(client)
    table = run_cli("status", project, url=db_url)
    assert table.returncode == 0, table.stderr
    assert "stale" in table.stdout and "ready to run: b" in table.stdout
    costs = run_cli("costs", "--group-by", "model", url=db_url)
    assert "gpt-4o-mini" in costs.stdout and "total" in costs.stdout
    missing = run_cli("status", "00000000-0000-4000-8000-000000000000", url=db_url)
    assert missing.returncode == 1 and "not_found" in missing.stderr
    bad = run_cli("costs", "--group-by", "colour", url=db_url)
    assert bad.returncode == 2


def test_an_unreachable_database_is_one_clear_line_without_the_password() -> None:
    url = "postgresql://someone:hunter2-secret@127.0.0.1:1/nowhere"  # nothing listens on port 1
    for args in (("costs",), ("status", "00000000-0000-4000-8000-000000000000"), ("db", "current")):
        result = run_cli(*args, url=url)
        assert result.returncode == 1, result.stderr
        assert "cannot use the database postgresql://someone:***@127.0.0.1:1/nowhere" in result.stderr
        assert "Traceback" not in result.stderr and "hunter2-secret" not in result.stderr


PIPELINE_YAML = """\
pipeline_id: review
processes:
  - process_id: spec
    name: Spec
    output_schema: {type: object, required: [summary], properties: {summary: {type: string}}}
  - process_id: review
    name: Review
    depends_on: [spec]
    description: Read the spec and list the risks.
"""


async def test_pipeline_apply_and_export_round_trip_with_a_plan_and_a_dry_run(
    client: Client, db_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "review.yaml"
    source.write_text(PIPELINE_YAML)
    dry = run_cli("pipeline", "apply", str(source), "--dry-run", url=db_url)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing changed" in dry.stdout and "spec, review" in dry.stdout
    assert (await call_ok(client, "list_pipelines"))["items"] == [
        {"pipeline_id": "default", "processes": 0, "projects": 0}
    ]

    applied = run_cli("pipeline", "apply", str(source), url=db_url)
    assert applied.returncode == 0, applied.stderr
    listed = await call_ok(client, "list_processes", pipeline_id="review", include_schemas=True)
    assert [p["id"] for p in listed["items"]] == ["spec", "review"]
    assert listed["items"][0]["output_schema"]["required"] == ["summary"]

    # export prints the file apply reads back unchanged: applying it changes nothing.
    exported = run_cli("pipeline", "export", "review", url=db_url)
    assert exported.returncode == 0, exported.stderr
    again = tmp_path / "again.yaml"
    again.write_text(exported.stdout)
    as_json = run_cli("pipeline", "export", "review", "--json", url=db_url)
    assert json.loads(as_json.stdout)["processes"][1]["depends_on"] == ["spec"]
    project = (await call_ok(client, "create_project", name="r", pipeline_id="review"))["id"]
    await call_ok(client, "record_execution", project_id=project, process_id="spec", output_data={"summary": "s"})
    reapplied = run_cli("pipeline", "apply", str(again), url=db_url)
    assert reapplied.returncode == 0 and "unchanged    2" in reapplied.stdout, reapplied.stdout

    # Removing a step with executions is refused by name; nothing changes.
    source.write_text("pipeline_id: review\nprocesses:\n  - {process_id: review, name: Review}\n")
    refused = run_cli("pipeline", "apply", str(source), url=db_url)
    assert refused.returncode == 1 and "conflict" in refused.stderr and "['spec']" in refused.stderr
    assert "Nothing was changed" in refused.stderr
    assert len((await call_ok(client, "list_processes", pipeline_id="review"))["items"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline_id: Not A Slug\nprocesses: []\n")
    assert run_cli("pipeline", "apply", str(bad), url=db_url).returncode == 2
    bad.write_text("pipeline_id: ok\nprocesses:\n  - {process_id: x}\n")
    failed = run_cli("pipeline", "apply", str(bad), url=db_url)
    assert failed.returncode == 2 and "processes[0]" in failed.stderr and "name" in failed.stderr
