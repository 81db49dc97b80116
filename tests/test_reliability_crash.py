"""Crash safety (docs/design.md, "Bars"): a server killed with SIGKILL in the middle of a write load.

The console script runs over stdio and gets a stream of record_execution calls (with usage; several
in flight at once) on three projects with the pipeline `a -> b -> c`. After some hundred acknowledged
calls it is killed while calls are still in flight. Then: the file passes `PRAGMA integrity_check`;
every acknowledged write is there as sent; each stored execution has its cost row; and replaying the
stored executions in commit order through the state rules gives exactly the stored states, versions and
current executions, so no execution lacks its state change and no state change lacks its execution.
Finally a new server starts on the same database and serves.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sqlite3
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from sqlalchemy import select
from sqlalchemy.engine import make_url

from mcp_server.db.engine import Database
from mcp_server.models import LLMMetrics, ProcessExecution, ProcessState
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import call_ok

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

log = logging.getLogger(__name__)

SCRIPT = Path(sys.executable).with_name("pipeline-state-mcp")
PIPELINE = {"a": [], "b": ["a"], "c": ["b"]}
PROJECTS = 3
IN_FLIGHT = 8  # requests outstanding at any moment
KILL_AFTER = 200  # acknowledged calls before the kill
COST = "0.0001"


def dependents(process_id: str) -> list[str]:
    """Every transitive dependent of a process (an oracle written apart from the server's rules)."""
    found: list[str] = []
    frontier = [process_id]
    while frontier:
        current = frontier.pop()
        for candidate, deps in PIPELINE.items():
            if current in deps and candidate not in found:
                found.append(candidate)
                frontier.append(candidate)
    return found


class RawServer:
    """The console script over stdio with hand-written JSON-RPC, so that it can be killed mid-call."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.buffer = b""

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps(message).encode() + b"\n")

    async def receive(self) -> list[dict[str, Any]]:
        """The complete messages in the next chunk of stdout (empty at end of file)."""
        assert self.process.stdout is not None
        try:
            self.buffer += await self.process.stdout.receive()
        except anyio.EndOfStream:
            return []
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    async def initialize(self) -> None:
        params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "crash", "version": "0"}}
        await self.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
        while not any(message.get("id") == 0 for message in await self.receive()):
            pass
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})


def record_call(number: int, project_id: str, process_id: str) -> dict[str, Any]:
    arguments = {
        "project_id": project_id,
        "process_id": process_id,
        "output_data": {"call": number},
        "force": True,  # c may run while b is stale: every call is a write, none is refused
        "usage": {"provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 10, "cost_usd": COST},
    }
    params = {"name": "record_execution", "arguments": arguments}
    return {"jsonrpc": "2.0", "id": number, "method": "tools/call", "params": params}


async def load_until_killed(
    server: RawServer, projects: list[str]
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]], int]:
    """Keep IN_FLIGHT calls outstanding; SIGKILL after KILL_AFTER acknowledgements.

    Returns the calls sent, the acknowledged results (including any the server had written to the pipe
    before it died) and how many calls were in flight at the kill.
    """
    rng = random.Random(6)
    sent: dict[int, dict[str, Any]] = {}
    acknowledged: dict[int, dict[str, Any]] = {}
    answered: set[int] = set()

    def take(messages: list[dict[str, Any]]) -> None:
        for message in messages:
            number = message.get("id")
            if number in sent:
                answered.add(number)
                result = message.get("result") or {}
                assert not result.get("isError") and "error" not in message, message
                acknowledged[number] = result["structuredContent"]

    while len(acknowledged) < KILL_AFTER:
        while len(sent) - len(answered) < IN_FLIGHT:
            number = len(sent) + 1
            sent[number] = record_call(number, rng.choice(projects), rng.choice(list(PIPELINE)))
            await server.send(sent[number])
        take(await server.receive())
    in_flight = len(sent) - len(answered)
    os.kill(server.process.pid, signal.SIGKILL)
    assert await server.process.wait() == -signal.SIGKILL
    while messages := await server.receive():  # what it wrote before dying was acknowledged too
        take(messages)
    return sent, acknowledged, in_flight


async def replay_matches_states(database: Database) -> int:
    """Replay every stored execution in commit order; the states must come out exactly as stored."""
    async with database.unit_of_work(write=False) as session:
        executions = list(await session.scalars(select(ProcessExecution)))
        states = list(await session.scalars(select(ProcessState)))
        costs = list(await session.scalars(select(LLMMetrics)))
    expected: dict[tuple[Any, str], dict[str, Any]] = defaultdict(lambda: {"state": "empty", "version": 0})
    # Writers of a project are serialised and take their timestamp under that lock: time order is
    # commit order.
    replaced: dict[Any, Any] = {}  # execution -> the one whose record replaced its completed output
    for execution in sorted(executions, key=lambda row: (row.completed_at, row.created_at)):
        assert execution.status in ("completed", "superseded") and execution.output_hash is not None
        own = expected[execution.project_id, execution.process_id]
        if own["state"] == "completed":
            replaced[own["current"]] = execution.id
        own.update(state="completed", version=own["version"] + 1, current=execution.id)
        for dependent in dependents(execution.process_id):
            hit = expected[execution.project_id, dependent]
            if hit["state"] in ("completed", "failed", "running"):
                hit.update(state="stale", version=hit["version"] + 1)
    stored = {(row.project_id, row.process_id): row for row in states}
    assert set(stored) == set(expected)
    for key, row in stored.items():
        want = expected[key]
        assert (row.state, row.version) == (want["state"], want["version"]), key
        assert row.current_execution_id == want.get("current"), key
    # A record over a completed step superseded the execution it replaced, in the same transaction.
    for execution in executions:
        assert (execution.status, execution.superseded_by) == (
            ("superseded", replaced[execution.id]) if execution.id in replaced else ("completed", None)
        )
    # Every execution came with its cost row (one transaction), and no cost row came alone.
    assert sorted(str(row.execution_id) for row in costs) == sorted(str(row.id) for row in executions)
    return len(executions)


def integrity_check(db_url: str) -> None:
    path = make_url(db_url).database
    assert path is not None
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    connection.close()


async def test_a_server_killed_mid_write_keeps_every_acknowledged_write_and_nothing_half_done(
    db_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=db_url, auto_migrate=False)
    async with Client(build_server(settings)) as setup:
        for process_id, deps in PIPELINE.items():
            await call_ok(setup, "define_process", process_id=process_id, name=process_id.upper(), depends_on=deps)
        projects = [(await call_ok(setup, "create_project", name=f"crash {i}"))["id"] for i in range(PROJECTS)]

    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPELINE_STATE_")}
    env |= {"PIPELINE_STATE_DATABASE_URL": db_url, "XDG_DATA_HOME": str(tmp_path / "data")}
    stderr_path = tmp_path / "killed-server.log"
    with anyio.fail_after(120), stderr_path.open("wb") as stderr:
        process = await anyio.open_process([str(SCRIPT)], env=env, cwd=tmp_path, stderr=stderr)
        try:
            server = RawServer(process)
            await server.initialize()
            sent, acknowledged, in_flight = await load_until_killed(server, projects)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert in_flight > 0  # the kill landed while calls were being written
    assert "Traceback" not in stderr_path.read_text()

    if db_url.startswith("sqlite"):
        integrity_check(db_url)
    database = Database.connect(db_url)
    try:
        async with database.unit_of_work(write=False) as session:
            stored = {str(row.id): row for row in await session.scalars(select(ProcessExecution))}
        # Every acknowledged call is there, exactly as sent; nothing is there that was never sent.
        for number, reply in acknowledged.items():
            row = stored[reply["execution"]["id"]]
            assert row.output_data == sent[number]["params"]["arguments"]["output_data"]
            assert str(row.project_id) == sent[number]["params"]["arguments"]["project_id"]
        assert len(acknowledged) <= len(stored) <= len(sent)
        assert {row.output_data["call"] for row in stored.values()} <= set(sent)
        assert await replay_matches_states(database) == len(stored)
        log.info(
            "killed with %d in flight: %d sent, %d acknowledged, %d stored",
            in_flight,
            len(sent),
            len(acknowledged),
            len(stored),
        )
    finally:
        await database.dispose()

    # A new server starts on the same database and serves, reads and writes.
    params = StdioServerParameters(command=str(SCRIPT), env=env, cwd=str(tmp_path))
    with anyio.fail_after(60), (tmp_path / "restarted-server.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            status = await call_ok(client, "get_pipeline_status", project_id=projects[0])
            before = {row["process_id"]: row["version"] for row in status["processes"]}
            reply = await call_ok(
                client, "record_execution", project_id=projects[0], process_id="a", output_data={"after": "restart"}
            )
            assert reply["state"]["version"] == before["a"] + 1
            summary = await call_ok(client, "get_cost_summary")
            spent = [Decimal((await call_ok(client, "get_project", project_id=p))["spent_usd"]) for p in projects]
    # The cost rows and the projects' running totals were written with their executions, or not at all.
    assert Decimal(summary["totals"]["cost_usd"]) == Decimal(COST) * len(stored)
    assert sum(spent) == Decimal(COST) * len(stored)
