"""mcp_server/sdk_gap.py, the one module that reaches past the SDK's public API: each assumption it makes is
checked here by name and by behaviour, so an SDK upgrade that breaks one fails here first."""

from __future__ import annotations

import inspect
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.message import SessionMessage

from mcp_server.sdk_gap import lowlevel_server, serve_streams


def test_the_low_level_server_is_the_one_holding_the_mcp_servers_handlers() -> None:
    server: MCPServer[Any] = MCPServer(name="gap")
    lowlevel = lowlevel_server(server)
    assert isinstance(lowlevel, Server)
    assert lowlevel.middleware is server.middleware  # the public property reads the same object
    for method in ("tools/list", "tools/call", "prompts/list", "resources/read"):
        assert lowlevel.get_request_handler(method) is not None, method


def test_the_sdk_serves_its_own_stdio_the_same_way() -> None:
    run = inspect.signature(Server.run)
    assert list(run.parameters)[1:4] == ["read_stream", "write_stream", "initialization_options"]
    assert "self._lowlevel_server.run(" in inspect.getsource(MCPServer.run_stdio_async)


def _request(request_id: int, method: str, params: dict[str, Any] | None = None) -> SessionMessage:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return SessionMessage(types.jsonrpc_message_adapter.validate_python(body, by_name=False))


@pytest.mark.anyio
async def test_serve_streams_answers_on_the_given_streams_and_ends_with_them() -> None:
    server: MCPServer[Any] = MCPServer(name="gap")

    @server.tool()
    def echo(text: str) -> str:
        """Echo."""
        return text

    to_server, server_in = anyio.create_memory_object_stream[SessionMessage | Exception](10)
    server_out, from_server = anyio.create_memory_object_stream[SessionMessage](10)
    initialize = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    replies: dict[Any, Any] = {}
    with anyio.fail_after(10):
        async with to_server, server_in, server_out, from_server, anyio.create_task_group() as group:
            group.start_soon(serve_streams, server, server_in, server_out)
            await to_server.send(_request(1, "initialize", initialize))
            replies[1] = (await from_server.receive()).message
            notice = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await to_server.send(SessionMessage(types.jsonrpc_message_adapter.validate_python(notice)))
            await to_server.send(_request(2, "tools/call", {"name": "echo", "arguments": {"text": "hi"}}))
            replies[2] = (await from_server.receive()).message
            await to_server.aclose()  # the read side ends: the server returns
    assert isinstance(replies[1], types.JSONRPCResponse) and replies[1].result["serverInfo"]["name"] == "gap"
    assert isinstance(replies[2], types.JSONRPCResponse)
    assert replies[2].result["content"][0]["text"] == "hi"
