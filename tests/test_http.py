"""Streamable HTTP: the console script as a real server process on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcp_server.db.engine import Database
from tests.helpers import call_ok, table_counts

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SCRIPT = Path(sys.executable).parent / "pipeline-state-mcp"
TOKEN = "test-token-0123456789"
CREATE = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "create_project", "arguments": {}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _env(db_url: str, tmp_path: Path, token: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPELINE_STATE_")}
    env |= {"PIPELINE_STATE_DATABASE_URL": db_url, "XDG_DATA_HOME": str(tmp_path / "data"), **(extra or {})}
    if token is not None:
        env["PIPELINE_STATE_AUTH_TOKEN"] = token
    return env


@asynccontextmanager
async def _serve(
    db_url: str,
    tmp_path: Path,
    *options: str,
    token: str | None = TOKEN,
    host: str = "127.0.0.1",
    extra: dict[str, str] | None = None,
) -> AsyncIterator[str]:
    """Run ``pipeline-state-mcp serve --transport http`` until the block ends; yield its /mcp URL."""
    port = _free_port(host)
    command = [str(SCRIPT), "serve", "--transport", "http", "--host", host, "--port", str(port), *options]
    stdout_path, stderr_path = tmp_path / f"http-{port}.out", tmp_path / f"http-{port}.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        env = _env(db_url, tmp_path, token, extra)
        process = await anyio.open_process(command, env=env, stdout=stdout, stderr=stderr)
        try:
            with anyio.fail_after(30):
                while True:  # bounded poll: until the port accepts connections or the server dies
                    assert process.returncode is None, stderr_path.read_text()
                    try:
                        await (await anyio.connect_tcp(host, port)).aclose()
                        break
                    except OSError:
                        await anyio.sleep(0.05)
            yield f"http://{host}:{port}/mcp"
        finally:
            process.terminate()
            with anyio.fail_after(20):
                await process.wait()
    # Even over HTTP, logs (uvicorn's access log included) go to stderr, never stdout.
    assert stdout_path.read_bytes() == b""


@asynccontextmanager
async def _client(url: str, token: str | None = TOKEN) -> AsyncIterator[Client]:
    """The SDK's streamable HTTP client, sending the bearer token on every request."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


async def test_a_call_succeeds_with_the_bearer_token_and_gets_401_without_it(
    db_url: str, db: Database, tmp_path: Path
) -> None:
    async with _serve(db_url, tmp_path) as url:
        with anyio.fail_after(60):
            async with _client(url) as client:
                project = await call_ok(client, "create_project", name="over http")
                assert await call_ok(client, "get_project", project_id=project["id"]) == project
            counts = await table_counts(db)

            refused = {
                "no header": {},
                "wrong token": {"Authorization": "Bearer not-the-token"},
                "token prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
                "other scheme": {"Authorization": f"Basic {TOKEN}"},
                "bare token": {"Authorization": TOKEN},
            }
            async with httpx2.AsyncClient(timeout=30) as http:
                for case, headers in refused.items():
                    body = {**CREATE, "params": {"name": "create_project", "arguments": {"name": case}}}
                    response = await http.post(url, json=body, headers=MCP_HEADERS | headers)
                    assert response.status_code == 401, case
                    assert response.headers["www-authenticate"].startswith("Bearer")
                    assert TOKEN not in response.text
            # The SDK's client cannot even connect with a wrong token (its error comes in task groups).
            with pytest.raises(BaseExceptionGroup) as caught:
                async with _client(url, token="wrong") as client:
                    await client.list_tools()
            assert caught.group_contains(MCPError, depth=None)
            assert await table_counts(db) == counts


async def test_stateless_mode_serves_two_clients_at_once(db_url: str, db: Database, tmp_path: Path) -> None:
    async with _serve(db_url, tmp_path, "--stateless") as url:
        created: list[dict[str, Any]] = []

        async def work(name: str) -> None:
            async with _client(url) as client:
                created.append(await call_ok(client, "create_project", name=name))
                await call_ok(client, "save_prompt_version", prompt_id="shared", user_template=f"from {name}")

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(work, "first")
                group.start_soon(work, "second")
            async with _client(url) as client:
                listed = await call_ok(client, "list_projects")
                versions = await call_ok(client, "list_prompt_versions", prompt_id="shared")
    assert {item["id"] for item in listed["items"]} == {project["id"] for project in created}
    assert sorted(item["version"] for item in versions["items"]) == [1, 2]
    assert (await table_counts(db))["projects"] == 2


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
async def test_a_foreign_host_or_origin_is_rejected_on_loopback(tmp_path: Path, host: str) -> None:
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    async with _serve(db_url, tmp_path, token=None, host=host) as url:
        port = url.split(":")[2].split("/")[0]
        with anyio.fail_after(60):
            async with httpx2.AsyncClient(timeout=30) as http:
                rebound = await http.post(url, json=CREATE, headers=MCP_HEADERS | {"Host": f"evil.example:{port}"})
                assert rebound.status_code == 421
                framed = await http.post(url, json=CREATE, headers=MCP_HEADERS | {"Origin": "http://evil.example"})
                assert framed.status_code == 403
            # Without a token, loopback needs none: the server's own address is accepted.
            async with _client(url, token=None) as client:
                assert (await call_ok(client, "list_projects"))["total"] == 0


def test_a_non_loopback_bind_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    env = _env(f"sqlite:///{tmp_path / 'state.db'}", tmp_path, token=None)
    command = [str(SCRIPT), "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stdout == ""
    assert "PIPELINE_STATE_AUTH_TOKEN" in done.stderr and "0.0.0.0" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state.db").exists()  # refused before touching the database


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "flood", "version": "1"}},
}


async def test_idle_sessions_expire_and_open_sessions_are_capped(db_url: str, tmp_path: Path) -> None:
    """A flood of stateful sessions cannot hold memory: past the cap new ones are refused, and idle ones
    are closed after PIPELINE_STATE_HTTP_SESSION_IDLE_TIMEOUT (their id then answers 404)."""
    # Idle for 3 s: the 30 openings below take well under that even on a loaded machine (with 1 s, the first
    # session could be closed as idle during the flood and make room for a 21st).
    extra = {"PIPELINE_STATE_HTTP_SESSION_IDLE_TIMEOUT": "3", "PIPELINE_STATE_HTTP_MAX_SESSIONS": "20"}
    async with _serve(db_url, tmp_path, extra=extra) as url:
        headers = MCP_HEADERS | {"Authorization": f"Bearer {TOKEN}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            opened: list[str] = []
            refused = 0
            for _ in range(30):
                response = await http.post(url, json=INITIALIZE)
                if response.status_code == 200:
                    opened.append(response.headers["mcp-session-id"])
                else:
                    refused += 1
            assert len(opened) <= 20 and refused >= 10, (len(opened), refused)
            await anyio.sleep(4.5)  # past the idle timeout
            listed = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            gone = await http.post(url, json=listed, headers={"mcp-session-id": opened[0]})
            assert gone.status_code == 404, gone.text
            fresh = await http.post(url, json=INITIALIZE)  # room again once the idle ones are closed
            assert fresh.status_code == 200, fresh.text


async def test_sigterm_stops_the_http_server_within_5_s_with_a_stream_open(db_url: str, tmp_path: Path) -> None:
    port = _free_port("127.0.0.1")
    command = [str(SCRIPT), "serve", "--transport", "http", "--port", str(port)]
    with (tmp_path / "err.log").open("wb") as stderr:
        process = await anyio.open_process(command, env=_env(db_url, tmp_path, TOKEN), stderr=stderr)
        async with process:
            url = f"http://127.0.0.1:{port}/mcp"
            headers = MCP_HEADERS | {"Authorization": f"Bearer {TOKEN}"}
            async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
                with anyio.fail_after(30):
                    while True:
                        try:
                            response = await http.post(url, json=INITIALIZE)
                            break
                        except httpx2.TransportError:
                            await anyio.sleep(0.05)
                session = {"mcp-session-id": response.headers["mcp-session-id"]}
                async with http.stream("GET", url, headers=session | {"Accept": "text/event-stream"}) as stream:
                    assert stream.status_code == 200, stream.status_code  # the server holds this stream open
                    process.terminate()
                    with anyio.fail_after(5):
                        await process.wait()


async def _closed_by_server(stream: anyio.abc.SocketStream) -> bool:
    """True once the server closed the connection (end of stream or reset) without answering."""
    try:
        return await stream.receive() == b""  # pragma: no cover - an answer is a failure
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
        return True


async def _response(stream: anyio.abc.SocketStream) -> bytes:
    """One whole response with a Content-Length: its head and body."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive()
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += await stream.receive()
    return received


async def test_a_half_sent_request_is_cut_off_and_others_are_served(db_url: str, tmp_path: Path) -> None:
    """Slowloris: a client that sends half a request line (or nothing, or half of its second request) and
    stalls is disconnected after PIPELINE_STATE_HTTP_HEADER_TIMEOUT; meanwhile a real client's session,
    idle longer than that between calls and holding its event stream open, works throughout."""
    extra = {"PIPELINE_STATE_HTTP_HEADER_TIMEOUT": "1"}
    async with _serve(db_url, tmp_path, extra=extra) as url:
        port = int(url.split(":")[2].split("/")[0])
        streams = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(3)]
        stalled, _, second = streams  # the second of them sends nothing at all
        try:
            await stalled.send(b"POST /mcp HT")
            await second.send(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # answered (401), then half another
            assert (await _response(second)).startswith(b"HTTP/1.1 401")
            await second.send(b"GET /mcp HTTP/1.1\r\nHost: 12")
            with anyio.fail_after(60):
                async with _client(url) as client:
                    project = await call_ok(client, "create_project", name="while stalled")
                    await anyio.sleep(2.5)  # longer than the timeout: a session is not a stalled request
                    got = await call_ok(client, "get_project", project_id=project["id"])
                    assert got["name"] == "while stalled"
            with anyio.fail_after(10):  # 1 s timeout; the bound leaves room for a loaded machine
                for stream in streams:
                    assert await _closed_by_server(stream)
        finally:
            for stream in streams:
                await stream.aclose()
