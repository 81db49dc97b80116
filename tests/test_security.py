"""Security: what tests/test_http.py does not cover over HTTP, and secrets (docs/design.md, "MCP surface").

HTTP: a body above the SDK's request limit is refused with 413 (declared or streamed), a body under
it but above our JSON limit is a tool error, both write nothing; a non-loopback bind with a token
serves, but only with the token. Secrets: with a PostgreSQL URL carrying a password (a private instance
that checks it), no log line at DEBUG, no reply and no error message contains the password, right or
wrong; `db current` and the stdio start banner print the URL masked.
"""

from __future__ import annotations

import json
import logging
import os
import pty
import select
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp_types import TextContent

from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import call_error, call_ok
from tests.private_pg import PASSWORD, PrivatePostgres, private_postgres

SCRIPT = Path(sys.executable).with_name("pipeline-state-mcp")
TOKEN = "security-test-token-5b1d"
WRONG_PASSWORD = "Wr0ng/p@ss:word%"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPELINE_STATE_")}
    return env | extra


@asynccontextmanager
async def http_server(db_url: str, tmp_path: Path, *, host: str, token: str | None) -> AsyncIterator[str]:
    """``pipeline-state-mcp serve --transport http --stateless`` until the block ends; yields a loopback URL."""
    port = _free_port()
    env = _env(PIPELINE_STATE_DATABASE_URL=db_url, XDG_DATA_HOME=str(tmp_path / "data"))
    if token is not None:
        env["PIPELINE_STATE_AUTH_TOKEN"] = token
    command = [str(SCRIPT), "serve", "--transport", "http", "--stateless", "--host", host, "--port", str(port)]
    with (tmp_path / f"http-{port}.err").open("wb") as stderr:
        process = await anyio.open_process(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            with anyio.fail_after(30):
                while True:  # bounded poll until the port accepts connections
                    assert process.returncode is None, (tmp_path / f"http-{port}.err").read_text()
                    try:
                        await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                        break
                    except OSError:
                        await anyio.sleep(0.05)
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            process.terminate()
            with anyio.fail_after(20):
                await process.wait()


def _create_project_body(size: int) -> bytes:
    """A tools/call create_project request of exactly ``size`` bytes (padded inside the description)."""
    message: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "create_project", "arguments": {"name": "big", "description": ""}},
    }
    bare = len(json.dumps(message).encode())
    message["params"]["arguments"]["description"] = "x" * (size - bare)
    body = json.dumps(message).encode()
    assert len(body) == size
    return body


def _projects(db_path: Path) -> int:
    """Projects stored so far (0 while the server is still creating its schema in the background)."""
    with sqlite3.connect(db_path) as connection:
        found = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'projects'")
        count: int = connection.execute("SELECT count(*) FROM projects").fetchone()[0] if found.fetchone() else 0
    connection.close()
    return count


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_body_over_the_request_limit_is_413_and_one_under_it_but_too_big_is_a_tool_error(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "state.db"
    limit = DEFAULT_MAX_REQUEST_BODY_SIZE
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with http_server(f"sqlite:///{db_path}", tmp_path, host="127.0.0.1", token=TOKEN) as url:
        with anyio.fail_after(60):
            async with httpx2.AsyncClient(timeout=30) as http:
                over = _create_project_body(limit + 1)
                declared = await http.post(url, content=over, headers=HEADERS | auth)
                assert declared.status_code == 413

                async def stream() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
                    for start in range(0, len(over), 65536):
                        yield over[start : start + 65536]

                streamed = await http.post(url, content=stream(), headers=HEADERS | auth)
                assert streamed.status_code == 413
                # Without the token the body is never read: 401 comes first.
                anonymous = await http.post(url, content=over, headers=HEADERS)
                assert anonymous.status_code == 401

                # At the limit the request is read, and the argument limits answer with a tool error.
                at_limit = await http.post(url, content=_create_project_body(limit), headers=HEADERS | auth)
                assert at_limit.status_code == 200
                reply = _json_rpc_reply(at_limit)
                assert reply["result"]["isError"] is True
                text = reply["result"]["content"][0]["text"]
                assert text.startswith("Error executing tool create_project: invalid_argument: description"), text

                accepted = await http.post(url, content=_create_project_body(2000), headers=HEADERS | auth)
                assert _json_rpc_reply(accepted)["result"]["isError"] is False
    assert _projects(db_path) == 1  # only the last, ordinary request wrote


def _json_rpc_reply(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC reply in a streamable HTTP response (plain JSON or one SSE event)."""
    if response.headers.get("content-type", "").startswith("application/json"):
        reply: dict[str, Any] = response.json()
        return reply
    data = [line[len("data:") :] for line in response.text.splitlines() if line.startswith("data:")]
    assert data, response.text
    parsed: dict[str, Any] = json.loads(data[-1])
    return parsed


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_non_loopback_bind_with_a_token_serves_only_callers_with_the_token(tmp_path: Path) -> None:
    db_path = tmp_path / "state.db"
    async with http_server(f"sqlite:///{db_path}", tmp_path, host="0.0.0.0", token=TOKEN) as url:
        body = _create_project_body(500)
        with anyio.fail_after(60):
            async with httpx2.AsyncClient(timeout=30) as http:
                for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"bearer {TOKEN}x"}):
                    refused = await http.post(url, content=body, headers=HEADERS | headers)
                    assert refused.status_code == 401
                assert _projects(db_path) == 0
                served = await http.post(url, content=body, headers=HEADERS | {"Authorization": f"Bearer {TOKEN}"})
                assert served.status_code == 200 and _json_rpc_reply(served)["result"]["isError"] is False
    assert _projects(db_path) == 1


# --- Secrets -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as instance:
        yield instance


def _leaks(text: str) -> list[str]:
    """The forms of either password (raw or URL-encoded) found in ``text``."""
    forms = {form for secret in (PASSWORD, WRONG_PASSWORD) for form in (secret, quote(secret, safe=""), quote(secret))}
    return sorted(form for form in forms if form in text)


def _text(result: Any) -> str:
    return "\n".join(part.text for part in result.content if isinstance(part, TextContent))


@pytest.mark.anyio
@pytest.mark.slow
async def test_no_debug_log_line_or_reply_of_a_stdio_server_carries_the_database_password(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    env = {
        "PIPELINE_STATE_DATABASE_URL": postgres.url(),
        "PIPELINE_STATE_LOG_LEVEL": "DEBUG",
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    params = StdioServerParameters(command=str(SCRIPT), env=env, cwd=str(tmp_path))
    replies: list[str] = []
    errlog_path = tmp_path / "server.log"
    with anyio.fail_after(60), errlog_path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            replies.append(json.dumps([tool.model_dump() for tool in (await client.list_tools()).tools]))
            project = await call_ok(client, "create_project", name="secret keeper")
            replies.append(json.dumps(project))
            for tool, arguments in (
                ("get_project", {"project_id": "not-a-uuid"}),
                ("record_execution", {"project_id": project["id"], "process_id": "nope", "output_data": {}}),
                ("get_cost_summary", {"group_by": ["project"]}),
                ("no_such_tool", {}),
            ):
                replies.append(_text(await client.call_tool(tool, arguments)))
    logs = errlog_path.read_text()
    assert "DEBUG" in logs  # the server did log at DEBUG
    assert _leaks(logs) == []
    assert _leaks("\n".join(replies)) == []


@pytest.mark.anyio
async def test_a_wrong_password_is_unavailable_and_never_echoed(
    postgres: PrivatePostgres, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(database_url=postgres.url(password=WRONG_PASSWORD), auto_migrate=False)
    with caplog.at_level(logging.DEBUG):
        async with Client(build_server(settings)) as client:
            for tool, arguments in (("create_project", {"name": "x"}), ("list_projects", {})):
                text = await call_error(client, tool, "unavailable", **arguments)
                assert _leaks(text) == []
                assert "127.0.0.1" not in text and str(postgres.port) not in text
    assert _leaks(caplog.text) == []
    assert _leaks(" ".join(str(record.exc_info) for record in caplog.records)) == []


def test_a_server_that_cannot_log_in_serves_unavailable_without_printing_the_password(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    env = _env(
        PIPELINE_STATE_DATABASE_URL=postgres.url(password=WRONG_PASSWORD),
        PIPELINE_STATE_LOG_LEVEL="DEBUG",
        XDG_DATA_HOME=str(tmp_path / "data"),
    )
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "list_projects", "arguments": {}}}
    lines = "".join(json.dumps(message) + "\n" for message in (initialize, initialized, call))
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        server = subprocess.Popen(
            [str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True
        )
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(lines)
        server.stdin.flush()
        replies: dict[int, Any] = {}
        while 1 not in replies:  # bounded by the answer: a refused login fails fast
            line = server.stdout.readline()
            assert line, "the server closed stdout before answering the call"
            message = json.loads(line)
            if "id" in message:
                replies[message["id"]] = message
        server.stdin.close()
        out = line + server.stdout.read()
        server.stdout.close()
        assert server.wait(timeout=60) == 0
    # The server stays up (the database may come back) and every call says the database is unreachable.
    assert replies[1]["result"]["isError"] is True
    assert "unavailable" in replies[1]["result"]["content"][0]["text"]
    logs = stderr_path.read_text()
    assert "password authentication failed" in logs  # the log says why, without the password
    assert _leaks(out + logs + json.dumps(replies)) == []


def test_db_current_prints_the_url_masked(postgres: PrivatePostgres, tmp_path: Path) -> None:
    for url in (postgres.url(), postgres.url(password=WRONG_PASSWORD)):
        env = _env(PIPELINE_STATE_DATABASE_URL=url, PIPELINE_STATE_LOG_LEVEL="DEBUG", XDG_DATA_HOME=str(tmp_path))
        done = subprocess.run([str(SCRIPT), "db", "current"], env=env, capture_output=True, text=True, timeout=60)
        assert f"database: postgresql://postgres:***@127.0.0.1:{postgres.port}/postgres" in done.stderr
        assert _leaks(done.stdout + done.stderr) == []
        assert done.returncode == (0 if url == postgres.url() else 1)


def test_a_password_in_the_query_string_is_masked_too(postgres: PrivatePostgres, tmp_path: Path) -> None:
    # libpq-style ?password= is a working way to pass it (the command connects), so it is masked as well.
    url = f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres?password={quote(PASSWORD, safe='')}"
    env = _env(PIPELINE_STATE_DATABASE_URL=url, XDG_DATA_HOME=str(tmp_path))
    done = subprocess.run([str(SCRIPT), "db", "current"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"database: postgresql://postgres@127.0.0.1:{postgres.port}/postgres?password=***" in done.stderr
    assert _leaks(done.stdout + done.stderr) == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://alice:s3cret@db:5432/app", "postgresql://alice:***@db:5432/app"),
        # SQLAlchemy reads the password up to the first "@": it may hold "/", "?" and ":".
        ("postgresql://alice:s3/c?r:et@db/app", "postgresql://alice:***@db/app"),
        ("postgres://:s3cret@db/app", "postgres://:***@db/app"),
        (
            "postgresql://alice@db/app?sslmode=require&password=s3cret",
            "postgresql://alice@db/app?sslmode=require&password=***",
        ),
        ("postgresql://alice@db/app", "postgresql://alice@db/app"),
        ("sqlite:////data/a@b/state.db", "sqlite:////data/a@b/state.db"),
    ],
)
def test_display_urls_hide_every_form_of_password(url: str, shown: str) -> None:
    assert Settings(database_url=url).display_url == shown


def test_the_stdio_start_banner_on_a_terminal_prints_the_url_masked(postgres: PrivatePostgres, tmp_path: Path) -> None:
    env = _env(PIPELINE_STATE_DATABASE_URL=postgres.url(), XDG_DATA_HOME=str(tmp_path / "data"))
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [str(SCRIPT)], stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path
    )
    os.close(terminal)
    banner = b""
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        while b"demo" not in banner and time.monotonic() < deadline:  # bounded read of the banner
            ready, _, _ = select.select([process.stderr], [], [], 1)
            if ready:
                chunk = os.read(process.stderr.fileno(), 4096)
                if not chunk:
                    break
                banner += chunk
    finally:
        process.terminate()
        process.communicate(timeout=30)
        os.close(controller)
    text = banner.decode()
    assert f"database: postgresql://postgres:***@127.0.0.1:{postgres.port}/postgres" in text, text
    assert _leaks(text) == []
