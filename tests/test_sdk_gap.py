"""mcp_server/sdk_gap.py, the one module that reaches past the SDK's public API: each assumption it makes is
checked here by name and by behaviour, so an SDK upgrade that breaks one fails here first."""

from __future__ import annotations

import inspect
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.mcpserver import MCPServer
from mcp.server.runner import ServerRunner
from mcp.shared.message import SessionMessage

from mcp_server.sdk_gap import add_request_handler, advertise_list_changed, lowlevel_server, serve_streams


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


def test_a_request_handler_added_through_the_gap_is_served_and_advertised() -> None:
    server: MCPServer[Any] = MCPServer(name="gap")
    assert lowlevel_server(server).get_capabilities().resources.subscribe is False  # type: ignore[union-attr]

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        return types.EmptyResult()

    add_request_handler(server, "resources/subscribe", types.SubscribeRequestParams, subscribe)
    assert lowlevel_server(server).get_request_handler("resources/subscribe") is not None
    assert lowlevel_server(server).get_capabilities().resources.subscribe is True  # type: ignore[union-attr]


def test_list_changed_options_reach_every_transports_handshake() -> None:
    """Every transport calls create_initialization_options() without NotificationOptions; the replaced
    method gives them, and still takes the SDK's parameters."""
    for source in (MCPServer.run_stdio_async, serve_streams):  # the in-memory client: tests/test_live.py
        assert ".create_initialization_options()" in inspect.getsource(source)
    assert "create_initialization_options()" in inspect.getsource(ServerRunner)
    server: MCPServer[Any] = MCPServer(name="gap")
    advertise_list_changed(server, NotificationOptions(prompts_changed=True, resources_changed=True))
    capabilities = lowlevel_server(server).create_initialization_options().capabilities
    assert capabilities.prompts and capabilities.prompts.list_changed is True
    assert capabilities.resources and capabilities.resources.list_changed is True
    assert capabilities.tools and capabilities.tools.list_changed is False
    explicit = lowlevel_server(server).create_initialization_options(NotificationOptions(tools_changed=True))
    assert explicit.capabilities.tools and explicit.capabilities.tools.list_changed is True
