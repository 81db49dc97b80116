"""The installed console script over stdio: a real subprocess, the SDK's client, the MCP Inspector."""

from __future__ import annotations

import json
import os
import pty
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import Implementation, TextContent

from mcp_server.db.engine import Database
from tests.conftest import IN_CI
from tests.helpers import CONTRACT_TOOLS, CONTRACT_TOOLSETS, call_error, call_ok, table_counts

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SCRIPT = Path(sys.executable).parent / "pipeline-state-mcp"
PROJECT_AND_PROMPT_TOOLS = {*CONTRACT_TOOLSETS["projects"], *CONTRACT_TOOLSETS["prompts"]}


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, str]:
    """What the server process needs: a temporary SQLite file and a data dir that is not ours."""
    return {
        "PIPELINE_STATE_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }


def _full_env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPELINE_STATE_")}
    return env | extra


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[Any]:
    with (tmp_path / "server-stderr.log").open("w+") as log:
        yield log


async def test_console_script_serves_tools_end_to_end_over_stdio(
    server_env: dict[str, str], errlog: Any, tmp_path: Path
) -> None:
    params = StdioServerParameters(command=str(SCRIPT), env=server_env, cwd=str(tmp_path))
    transport = stdio_client(params, errlog=errlog)
    with anyio.fail_after(60):
        async with Client(transport, client_info=Implementation(name="stdio-test", version="1")) as client:
            assert client.server_info is not None and client.server_info.name == "pipeline-state"
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert names >= PROJECT_AND_PROMPT_TOOLS

            project = await call_ok(client, "create_project", name="over stdio", budget_usd="1.25")
            assert project["created_by"] == "stdio-test/1"
            assert await call_ok(client, "get_project", project_id=project["id"]) == project
            await call_error(client, "get_project", "invalid_argument", project_id="nope")

            saved = await call_ok(client, "save_prompt_version", prompt_id="greet", user_template="Hi {{name}}")
            assert (saved["version"], saved["placeholders"]) == (1, ["name"])
            versions = await call_ok(client, "list_prompt_versions", prompt_id="greet")
            assert [item["version"] for item in versions["items"]] == [1]
            prompts = (await client.list_prompts()).prompts
            assert [(p.name, [a.name for a in p.arguments or []]) for p in prompts] == [("greet", ["name"])]
            rendered = await client.get_prompt("greet", {"name": "Ada"})
            assert [m.content.text for m in rendered.messages if isinstance(m.content, TextContent)] == ["Hi Ada"]

    database = Database.connect(server_env["PIPELINE_STATE_DATABASE_URL"])
    try:
        counts = await table_counts(database)
    finally:
        await database.dispose()
    assert (counts["projects"], counts["prompt_versions"]) == (1, 1)
    errlog.seek(0)
    assert "Traceback" not in errlog.read()


async def _read_responses(process: Process, ids: set[int]) -> tuple[list[bytes], bytes]:
    """Read stdout lines until every id in ``ids`` has its response; return the lines and any rest."""
    assert process.stdout is not None
    buffer = b""
    lines: list[bytes] = []
    answered: set[int] = set()
    while not ids <= answered:
        buffer += await process.stdout.receive()
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            lines.append(line)
            message = json.loads(line)
            if "id" in message and ("result" in message or "error" in message):
                answered.add(message["id"])
    return lines, buffer


def _requests(*calls: dict[str, Any]) -> bytes:
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "0"},
        },
    }
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    messages = [initialize, initialized]
    for number, (name, arguments) in enumerate((c["name"], c["arguments"]) for c in calls):
        params = {"name": name, "arguments": arguments}
        messages.append({"jsonrpc": "2.0", "id": number + 1, "method": "tools/call", "params": params})
    return b"".join(json.dumps(message).encode() + b"\n" for message in messages)


async def test_stdout_carries_nothing_but_protocol_messages(server_env: dict[str, str], tmp_path: Path) -> None:
    env = _full_env(server_env | {"PIPELINE_STATE_LOG_LEVEL": "DEBUG"})
    calls = [
        {"name": "create_project", "arguments": {"name": "p"}},
        {"name": "get_project", "arguments": {"project_id": "not-a-uuid"}},
        {"name": "no_such_tool", "arguments": {}},
        {"name": "save_prompt_version", "arguments": {"prompt_id": "p", "user_template": "{{x}}"}},
    ]
    stderr_path = tmp_path / "stderr.log"
    with anyio.fail_after(60), stderr_path.open("wb") as stderr:
        process = await anyio.open_process([str(SCRIPT)], env=env, cwd=tmp_path, stderr=stderr)
        async with process:
            assert process.stdin is not None and process.stdout is not None
            await process.stdin.send(_requests(*calls))
            lines, rest = await _read_responses(process, {0, 1, 2, 3, 4})
            await process.stdin.aclose()
            async for chunk in process.stdout:
                rest += chunk
            assert await process.wait() == 0
    lines += [line for line in rest.split(b"\n") if line]
    messages = [json.loads(line) for line in lines]
    assert all(message["jsonrpc"] == "2.0" for message in messages)
    by_id = {message["id"]: message for message in messages if "id" in message}
    assert by_id[1]["result"]["isError"] is False
    assert by_id[2]["result"]["isError"] is True
    assert by_id[3]["result"]["isError"] is True
    assert by_id[4]["result"]["structuredContent"]["version"] == 1
    logs = stderr_path.read_text()
    assert "DEBUG" in logs and "migrated" in logs  # the logs exist, on stderr


async def test_stdio_server_exits_when_stdin_closes_during_a_call(server_env: dict[str, str], tmp_path: Path) -> None:
    # Closing stdin cancels the calls in flight, and the process exits. Holding the SQLite write lock
    # here parks create_project inside BEGIN IMMEDIATE meanwhile: cancelled there, it writes nothing.
    env = _full_env(server_env)
    calls = [
        {"name": "list_processes", "arguments": {}},
        {"name": "create_project", "arguments": {"name": "parked"}},
        {"name": "list_projects", "arguments": {}},
    ]
    database = tmp_path / "state.db"
    with anyio.fail_after(60):
        process = await anyio.open_process([str(SCRIPT)], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
        async with process:
            assert process.stdin is not None and process.stdout is not None
            initialize, initialized, warm, *tool_calls = _requests(*calls).splitlines(keepends=True)
            await process.stdin.send(initialize + initialized + warm)
            await _read_responses(process, {0, 1})  # a first call has waited for the migrated file
            lock = sqlite3.connect(database, isolation_level=None)
            try:
                lock.execute("BEGIN IMMEDIATE")
                await process.stdin.send(b"".join(tool_calls))
                # list_projects only reads (WAL), so it answers while create_project, sent first
                # and run concurrently, waits on the lock.
                await _read_responses(process, {3})
                await process.stdin.aclose()
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            async for _ in process.stdout:
                pass
            assert await process.wait() == 0
    with sqlite3.connect(database) as check:
        # The call was cancelled with its client gone: its transaction rolled back.
        assert check.execute("SELECT name FROM projects").fetchall() == []


async def test_started_on_a_terminal_the_server_introduces_itself_on_stderr(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    controller, terminal = pty.openpty()
    try:
        with anyio.fail_after(30):
            process = await anyio.open_process([str(SCRIPT)], env=_full_env(server_env), cwd=tmp_path, stdin=terminal)
            async with process:
                assert process.stderr is not None and process.stdout is not None
                said = b""
                while b"demo" not in said:
                    said += await process.stderr.receive()
                process.terminate()
                await process.wait()
                stdout = b"".join([chunk async for chunk in process.stdout])
    finally:
        os.close(controller)
        os.close(terminal)
    assert b"MCP server" in said and str(tmp_path / "state.db").encode() in said
    assert stdout == b""


def test_version_and_help(tmp_path: Path) -> None:
    from importlib.metadata import version

    env = _full_env({"XDG_DATA_HOME": str(tmp_path)})
    shown = subprocess.run([str(SCRIPT), "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"pipeline-state-mcp {version('pipeline-state-mcp')}"
    helped = subprocess.run([str(SCRIPT), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0
    assert "serve" in helped.stdout and "db" in helped.stdout
    serve = subprocess.run([str(SCRIPT), "serve", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert serve.returncode == 0
    for option in ("--transport", "--host", "--port", "--stateless"):
        assert option in serve.stdout
    bad = subprocess.run([str(SCRIPT), "serve", "--transport", "smoke"], env=env, capture_output=True, timeout=60)
    assert bad.returncode == 2 and bad.stdout == b""
    assert not (tmp_path / "pipeline-state-mcp").exists()  # none of these created a database


INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"


def _inspector_run(server_env: dict[str, str], *method: str) -> subprocess.CompletedProcess[str]:
    npx = shutil.which("npx")
    assert npx is not None
    env_flags = [flag for key, value in server_env.items() for flag in ("-e", f"{key}={value}")]
    command = [npx, "-y", INSPECTOR, "--cli", *env_flags, str(SCRIPT), *method]
    # The first run downloads the Inspector: give it time.
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_full_env({}))
    assert done.returncode == 0, done.stderr
    return done


def _inspector(server_env: dict[str, str], *method: str) -> Any:
    return json.loads(_inspector_run(server_env, *method).stdout)


@pytest.mark.skipif(shutil.which("npx") is None and not IN_CI, reason="npx is not installed (CI requires it)")
def test_mcp_inspector_cli_lists_and_calls_the_tools(server_env: dict[str, str]) -> None:
    listed = _inspector(server_env, "--method", "tools/list")
    names = {tool["name"] for tool in listed["tools"]}
    assert names >= PROJECT_AND_PROMPT_TOOLS
    assert all("inputSchema" in tool and "outputSchema" in tool for tool in listed["tools"])
    called = _inspector(
        server_env, "--method", "tools/call", "--tool-name", "create_project", "--tool-arg", "name=inspected"
    )
    assert called["isError"] is False
    assert called["structuredContent"]["name"] == "inspected"
    assert called["structuredContent"]["created_by"].startswith("inspector")


@pytest.mark.skipif(shutil.which("npx") is None and not IN_CI, reason="npx is not installed (CI requires it)")
@pytest.mark.parametrize("read_only", ["false", "true"])
def test_mcp_inspector_finds_every_schema_portable(server_env: dict[str, str], read_only: str) -> None:
    """MCP Inspector 2.12's schema-portability check: 0 errors and 0 warnings, input and output schemas."""
    env = server_env | {"PIPELINE_STATE_READ_ONLY": read_only, "PIPELINE_STATE_LOG_LEVEL": "WARNING"}
    done = _inspector_run(env, "--method", "tools/list", "--strict", "--format", "json")
    envelope = json.loads(done.stdout)
    assert len(envelope["result"]["tools"]) == (11 if read_only == "true" else len(CONTRACT_TOOLS))
    # --strict with --format json puts every finding (warnings included) in the envelope.
    assert "schemaFindings" not in envelope, json.dumps(envelope["schemaFindings"], indent=1)
    assert "Schema portability" not in done.stderr, done.stderr
