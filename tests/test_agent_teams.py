"""A team of agents on one pipeline: claims, leases, expiry, fencing, retries (docs/design.md, "Agent teams").

The whole-team tests run real server processes over stdio (one per worker, as one per client session
is the normal case) on one SQLite file and on PostgreSQL; the rules are also tried through the SDK's
in-memory client on both databases.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from sqlalchemy import func, select

from mcp_server.db.engine import Database
from mcp_server.models import ProcessExecution, Project
from tests.helpers import call_error, call_ok

pytestmark = pytest.mark.anyio

SCRIPT = Path(sys.executable).parent / "pipeline-state-mcp"
WORKERS = 6
STEPS = 30


def _steps(count: int) -> list[dict[str, Any]]:
    """A DAG: three chains that meet every fifth step, so workers wait on each other now and then."""
    steps = []
    for number in range(count):
        depends = [f"s{number - 3:02d}"] if number >= 3 else []
        if number % 5 == 4 and number >= 5:
            depends.append(f"s{number - 1:02d}")
        steps.append({"process_id": f"s{number:02d}", "name": f"Step {number}", "depends_on": depends})
    return steps


def _error(result: Any) -> str | None:
    if not result.is_error:
        return None
    return str(result.content[0].text)


def _env(db_url: str, tmp_path: Path, name: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPELINE_STATE_")}
    return env | {
        "PIPELINE_STATE_DATABASE_URL": db_url,
        "PIPELINE_STATE_TOOLSETS": "worker",
        "XDG_DATA_HOME": str(tmp_path / f"data-{name}"),
    }


async def _setup(db_url: str, steps: list[dict[str, Any]], **project: Any) -> str:
    from mcp_server.server import build_server
    from mcp_server.settings import Settings

    async with Client(build_server(Settings(database_url=db_url))) as client:
        await call_ok(client, "apply_pipeline", pipeline_id="team", processes=steps)
        created = await call_ok(client, "create_project", name="team work", pipeline_id="team", **project)
    return str(created["id"])


async def _worker(db_url: str, tmp_path: Path, name: str, project: str, log: list[tuple[str, str, str]]) -> None:
    """Claim → record until nothing_ready says every step is done; wait while others run."""
    params = StdioServerParameters(command=str(SCRIPT), env=_env(db_url, tmp_path, name), cwd=str(tmp_path))
    with (tmp_path / f"{name}.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            while True:
                claimed = await client.call_tool("start_execution", {"project_id": project})
                problem = _error(claimed)
                if problem is not None:
                    assert "nothing_ready" in problem, problem
                    details = json.loads(problem.split("details: ", 1)[1])
                    if details["remaining"] == 0:
                        return
                    assert details["running"] or details["waiting"], problem
                    await anyio.sleep(0.05)
                    continue
                reply = claimed.structured_content
                assert reply is not None
                step, execution = reply["state"]["process_id"], reply["execution"]["id"]
                log.append((name, step, "claimed"))
                recorded = await client.call_tool(
                    "record_execution",
                    {"project_id": project, "process_id": step, "execution_id": execution, "output_data": {"by": name}},
                )
                assert _error(recorded) is None, _error(recorded)
                log.append((name, step, "recorded"))


@pytest.mark.slow
async def test_six_workers_share_a_30_step_pipeline_each_step_done_exactly_once(
    db_url: str, tmp_path: Path, db: Database
) -> None:
    project = await _setup(db_url, _steps(STEPS))
    log: list[tuple[str, str, str]] = []
    with anyio.fail_after(300):
        async with anyio.create_task_group() as group:
            for number in range(WORKERS):
                group.start_soon(_worker, db_url, tmp_path, f"w{number}", project, log)
    claimed = Counter(step for _, step, what in log if what == "claimed")
    assert sorted(claimed) == [f"s{number:02d}" for number in range(STEPS)]
    assert set(claimed.values()) == {1}, "a step was claimed twice"
    by_worker = Counter(name for name, _, what in log if what == "recorded")
    assert len(by_worker) >= 2, f"the work was not shared: {by_worker}"
    async with db.unit_of_work(write=False) as session:
        query = select(ProcessExecution.status, func.count()).group_by(ProcessExecution.status)
        statuses = {row[0]: row[1] for row in (await session.execute(query)).all()}
    assert statuses == {"completed": STEPS}


async def test_a_killed_worker_loses_its_step_and_hold_then_its_late_finish_is_fenced(
    db_url: str, tmp_path: Path, db: Database
) -> None:
    project = await _setup(db_url, _steps(2), budget_usd="1.00", budget_policy="block")
    usage = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100}
    params = StdioServerParameters(command=str(SCRIPT), env=_env(db_url, tmp_path, "dead"), cwd=str(tmp_path))
    with anyio.fail_after(120), (tmp_path / "dead.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as dead:
            held = await call_ok(dead, "start_execution", project_id=project, reserve_usd="0.60", lease_seconds=2)
            # The server process dies holding the step and 0.60 of a 1.00 budget.
            server = _server_pid()
            os.kill(server, signal.SIGKILL)
            with pytest.raises(Exception):  # noqa: B017 - the connection is gone, however the SDK says it
                await dead.call_tool("renew_lease", {"execution_id": held["execution"]["id"], "lease_token": "x"})
    step, lost = held["state"]["process_id"], held["execution"]["id"]
    from mcp_server.server import build_server
    from mcp_server.settings import Settings

    async with Client(build_server(Settings(database_url=db_url))) as other:
        second = await call_ok(other, "start_execution", project_id=project, reserve_usd="0.30")  # s01: free
        assert second["state"]["process_id"] != step
        refused = await call_error(other, "start_execution", "nothing_ready", project_id=project)
        assert lost in refused and "lease_expires_at" in refused
        await anyio.sleep(2.2)
        again = await call_ok(other, "start_execution", project_id=project, reserve_usd="0.50")
        assert again["state"]["process_id"] == step and again["attempt"] == 2
        assert again["took_over"] == lost  # the claim expired the dead holder's lease and says whose
        assert again["lease_token"] != held["lease_token"]
        await call_ok(
            other,
            "record_execution",
            project_id=project,
            process_id=step,
            execution_id=again["execution"]["id"],
            output_data={"by": "survivor"},
        )
        late = await call_error(
            other,
            "record_execution",
            "lease_expired",
            project_id=project,
            process_id=step,
            execution_id=lost,
            output_data={"by": "the dead"},
            usage=usage,
        )
        assert again["execution"]["id"] in late and "the usage sent is logged against it as rework" in late
        state = await call_ok(other, "get_process_state", project_id=project, process_id=step)
        assert state["current_execution_id"] == again["execution"]["id"]
        assert state["current_output"] == {"by": "survivor"}
        kept = await call_ok(other, "get_execution", execution_id=lost)
        assert kept["status"] == "expired" and kept["output_data"] == {"by": "the dead"} and kept["current"] is False
        summary = await call_ok(other, "get_cost_summary", project_id=project)
        assert summary["totals"]["calls"] == 1
        assert summary["totals"]["superseded_cost_usd"] == summary["totals"]["cost_usd"] != "0"
    async with db.unit_of_work(write=False) as session:
        row = await session.get(Project, uuid.UUID(project))
        assert row is not None
        # Only the other worker's 0.30 is held: the dead worker's 0.60 went back when its lease passed.
        assert str(row.reserved_usd.normalize()) == "0.3"


def _server_pid() -> int:
    """The pid of the one server process this test started (a child of this process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and "pipeline-state-mcp" in command:
            found.append(int(entry.name))
    assert len(found) == 1, found
    return found[0]


async def _claim(client: Client, project: str, **arguments: Any) -> dict[str, Any]:
    return await call_ok(client, "start_execution", project_id=project, **arguments)


async def test_renew_lease_keeps_a_step_held_past_its_first_lease(client: Client) -> None:
    await call_ok(client, "apply_pipeline", pipeline_id="p", processes=_steps(1))
    project = (await call_ok(client, "create_project", name="renew", pipeline_id="p"))["id"]
    held = await _claim(client, project, lease_seconds=1)
    for _ in range(3):
        await anyio.sleep(0.6)
        renewed = await call_ok(
            client,
            "renew_lease",
            execution_id=held["execution"]["id"],
            lease_token=held["lease_token"],
            lease_seconds=1,
        )
        assert renewed["lease_expires_at"] > held["lease_expires_at"]
    await call_error(client, "start_execution", "nothing_ready", project_id=project)  # still held at 1.8 s
    held_state = await call_ok(client, "get_process_state", project_id=project, process_id="s00")
    assert "lease_expired" not in held_state
    await call_error(
        client, "renew_lease", "invalid_argument", execution_id=held["execution"]["id"], lease_token="forged"
    )
    await anyio.sleep(1.2)
    state = await call_ok(client, "get_process_state", project_id=project, process_id="s00")
    assert state["state"] == "running" and state["can_run"] is True  # its lease passed: claimable
    assert state["running_execution_id"] == held["execution"]["id"] and state["lease_expires_at"] is not None
    assert state["lease_expired"] is True
    row = (await call_ok(client, "get_pipeline_status", project_id=project))["processes"][0]
    assert row["execution_id"] == held["execution"]["id"] and row["lease_expired"] is True and row["started_by"]
    late = await call_error(
        client, "renew_lease", "lease_expired", execution_id=held["execution"]["id"], lease_token=held["lease_token"]
    )
    assert "expired" in late
    # Nobody claimed it meanwhile: the late finish is accepted and completes the step.
    done = await call_ok(
        client,
        "record_execution",
        project_id=project,
        process_id="s00",
        execution_id=held["execution"]["id"],
        output_data={"v": 1},
    )
    assert done["state"]["state"] == "completed" and done["execution"]["status"] == "completed"
    assert "error_message" not in done["execution"] and "nobody took the step over" in done["note"]


async def test_max_attempts_gives_a_step_up_and_backoff_delays_its_claim(client: Client) -> None:
    steps = [{"process_id": "flaky", "name": "Flaky", "max_attempts": 2, "retry_backoff_seconds": 1}]
    await call_ok(client, "apply_pipeline", pipeline_id="p", processes=steps)
    project = (await call_ok(client, "create_project", name="retries", pipeline_id="p"))["id"]
    first = await _claim(client, project)
    assert first["attempt"] == 1
    await call_ok(client, "fail_execution", execution_id=first["execution"]["id"], error_message="boom")
    waiting = await call_error(client, "start_execution", "nothing_ready", project_id=project)
    assert '"retry_at"' in waiting and "flaky" in waiting
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    assert status["processes"][0]["retry_at"] is not None and status["ready_processes"] == []
    await anyio.sleep(1.1)
    second = await _claim(client, project)
    assert second["attempt"] == 2
    await call_ok(client, "fail_execution", execution_id=second["execution"]["id"], error_message="boom again")
    gave_up = await call_error(client, "start_execution", "nothing_ready", project_id=project)
    assert "gave up" in gave_up
    refused = await call_error(client, "start_execution", "invalid_transition", project_id=project, process_id="flaky")
    assert "max_attempts" in refused
    forced = await _claim(client, project, process_id="flaky", force=True)
    assert forced["attempt"] == 1
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    assert status["processes"][0]["execution_id"] == forced["execution"]["id"]


async def test_a_timeout_caps_every_renewal(client: Client) -> None:
    steps = [{"process_id": "slow", "name": "Slow", "timeout_seconds": 1}]
    await call_ok(client, "apply_pipeline", pipeline_id="p", processes=steps)
    project = (await call_ok(client, "create_project", name="timeouts", pipeline_id="p"))["id"]
    held = await _claim(client, project, lease_seconds=600)
    renewed = await call_ok(
        client, "renew_lease", execution_id=held["execution"]["id"], lease_token=held["lease_token"], lease_seconds=600
    )
    assert renewed["capped_by_timeout"] is True
    assert renewed["lease_expires_at"] == held["lease_expires_at"]
    await anyio.sleep(1.1)
    again = await _claim(client, project)  # start-to-close passed: the step is free again
    assert again["state"]["process_id"] == "slow" and again["attempt"] == 2


async def test_forged_and_foreign_tokens_and_ids_are_refused_and_write_nothing(client: Client) -> None:
    await call_ok(client, "apply_pipeline", pipeline_id="p", processes=_steps(2))
    project = (await call_ok(client, "create_project", name="hostile", pipeline_id="p"))["id"]
    mine = await _claim(client, project)
    theirs = await _claim(client, project)
    # One execution's token does not renew another's.
    await call_error(
        client,
        "renew_lease",
        "invalid_argument",
        execution_id=theirs["execution"]["id"],
        lease_token=mine["lease_token"],
    )
    await call_error(
        client, "renew_lease", "not_found", execution_id="00000000-0000-0000-0000-000000000000", lease_token="x"
    )
    for bad in (0, 86_401, -5):
        await call_error(
            client,
            "renew_lease",
            "invalid_argument",
            execution_id=mine["execution"]["id"],
            lease_token=mine["lease_token"],
            lease_seconds=bad,
        )
        await call_error(client, "start_execution", "invalid_argument", project_id=project, lease_seconds=bad)
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    assert {row["lease_expires_at"] for row in status["processes"]} == {
        mine["lease_expires_at"],
        theirs["lease_expires_at"],
    }


async def test_the_status_command_shows_holders_and_expired_leases_and_export_keeps_the_retry_policy(
    db_url: str, client: Client
) -> None:
    from tests.test_cli import run_cli

    steps = [
        {"process_id": "held", "name": "Held", "max_attempts": 5, "timeout_seconds": 60},
        {"process_id": "lost", "name": "Lost", "retry_backoff_seconds": 30},
    ]
    await call_ok(client, "apply_pipeline", pipeline_id="p", processes=steps)
    project = (await call_ok(client, "create_project", name="shown", pipeline_id="p"))["id"]
    await call_ok(client, "start_execution", project_id=project, process_id="held")
    await call_ok(client, "start_execution", project_id=project, process_id="lost", lease_seconds=1)
    await anyio.sleep(1.1)
    shown = await anyio.to_thread.run_sync(lambda: run_cli("status", project, url=db_url))
    assert shown.returncode == 0, shown.stderr
    flat = " ".join(shown.stdout.split())
    assert "#1 (" in flat and "expired" in flat, shown.stdout
    exported = await anyio.to_thread.run_sync(lambda: run_cli("pipeline", "export", "p", url=db_url))
    assert exported.returncode == 0, exported.stderr
    assert "max_attempts: 5" in exported.stdout and "timeout_seconds: 60" in exported.stdout
    assert "retry_backoff_seconds: 30" in exported.stdout


async def test_a_claim_hands_the_claimed_steps_output_schema(client: Client) -> None:
    schema = {"type": "object", "required": ["title"], "properties": {"title": {"type": "string"}}}
    steps = [{"process_id": "outline", "name": "Outline", "output_schema": schema}]
    await call_ok(client, "apply_pipeline", pipeline_id="schemas", processes=steps)
    project = (await call_ok(client, "create_project", name="claims", pipeline_id="schemas"))["id"]
    claimed = await call_ok(client, "start_execution", project_id=project)
    assert claimed["state"]["process_id"] == "outline" and claimed["output_schema"] == schema
    await call_ok(client, "fail_execution", execution_id=claimed["execution"]["id"], error_message="retry")
    named = await call_ok(client, "start_execution", project_id=project, process_id="outline", force=True)
    assert "output_schema" not in named  # the agent named the step: it has its definition
