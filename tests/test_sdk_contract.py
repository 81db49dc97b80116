"""The SDK's private parts this server still relies on (issue 16), each checked by name and behaviour, so
that an SDK upgrade that moves one fails here, loudly, instead of quietly in the field. Everything else
goes through public API: tools through ``add_tool`` and an override of the public ``call_tool``, prompts
through an override of the public ``get_prompt`` (it gets the request context); the SDK's public
``list_prompts`` gets no context, so listing prompts stays on the handler that does."""

from __future__ import annotations

import inspect

import pytest
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer

from mcp_server.server import PipelineStateServer, build_server
from mcp_server.settings import Settings


def _server() -> PipelineStateServer:
    return build_server(Settings(database_url="sqlite:///unused.db", auto_migrate=False))


@pytest.mark.anyio
async def test_the_tool_registry_is_the_one_tools_list_publishes() -> None:
    """tools/base.py rewrites each registered tool's schemas through ``_tool_manager``; the SDK must list
    what was written there."""
    server = _server()
    registered = server._tool_manager.get_tool("record_execution")
    assert registered is not None
    assert isinstance(registered.parameters, dict) and registered.fn_metadata.output_schema is not None
    registered.parameters = {**registered.parameters, "description": "marker"}
    listed = {tool.name: tool for tool in await server.list_tools()}
    assert listed["record_execution"].input_schema.get("description") == "marker"


def test_the_prompt_list_handler_is_where_the_sdk_calls_it() -> None:
    """prompts/list reaches ``_handle_list_prompts(ctx, params)``, bound when the low-level server is built."""
    parameters = list(inspect.signature(MCPServer._handle_list_prompts).parameters)
    assert parameters == ["self", "ctx", "params"]
    server = _server()
    assert isinstance(server._lowlevel_server, Server)
    source = inspect.getsource(MCPServer.__init__)
    assert "on_list_prompts=self._handle_list_prompts" in source


def test_the_stdio_transport_runs_the_low_level_server() -> None:
    """mcp_server/stdio.py runs ``_lowlevel_server`` on its own streams, as the SDK's run_stdio_async does."""
    server = _server()
    run = inspect.signature(server._lowlevel_server.run)
    assert list(run.parameters)[:3] == ["read_stream", "write_stream", "initialization_options"]
    assert server._lowlevel_server.create_initialization_options() is not None
    assert "self._lowlevel_server.run(" in inspect.getsource(MCPServer.run_stdio_async)


def test_public_overrides_keep_the_sdk_signatures() -> None:
    for name in ("call_tool", "get_prompt", "read_resource"):
        ours, theirs = (
            inspect.signature(getattr(PipelineStateServer, name)),
            inspect.signature(getattr(MCPServer, name)),
        )
        assert list(ours.parameters) == list(theirs.parameters), name
