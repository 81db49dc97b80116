"""The MCP SDK's public API as this server uses it, checked by name and behaviour, so that an SDK upgrade
that changes one of these routes fails here, loudly, instead of quietly in the field.

Tools are built with ``Tool.from_function`` and handed to ``MCPServer(tools=…)``; calls go through an
override of the public ``call_tool``; prompts through overrides of the public ``list_prompts`` and
``get_prompt``, the first given the request's App by a public server middleware. The one route the SDK
has no public form of (serving an ``MCPServer`` on given streams) is in mcp_server/sdk_gap.py, checked by
tests/test_sdk_gap.py."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp_types import Prompt

from mcp_server.schemas.portable import compact_output_schema, portable_input_schema
from mcp_server.server import _LISTING_APP, PipelineStateServer, _prompt_listing_context, build_server
from mcp_server.settings import Settings
from mcp_server.tools import build_tools, toolsets
from mcp_server.tools.pipeline import record_execution


def _server(**options: Any) -> PipelineStateServer:
    return build_server(Settings(database_url="sqlite:///unused.db", auto_migrate=False, **options))


@pytest.mark.anyio
async def test_tools_list_publishes_the_tools_built_from_the_tables() -> None:
    server = _server()
    listed = {tool.name: tool for tool in await server.list_tools()}
    assert list(listed) == [entry.name for table in toolsets().values() for entry in table]
    for name, tool in server.registered_tools.items():
        assert listed[name].input_schema == tool.parameters
        assert listed[name].output_schema == tool.output_schema
        assert listed[name].annotations == tool.annotations


def test_a_built_tool_carries_the_portable_schemas_the_sdk_would_not_write() -> None:
    """``Tool.from_function`` gives the SDK's schemas; the copy ``ToolEntry.build`` makes replaces both, and
    the SDK reads them from the copy (``output_schema`` from ``fn_metadata``, read live)."""
    plain = Tool.from_function(record_execution)
    built = next(entry for entry in toolsets()["pipeline"] if entry.fn is record_execution).build()
    assert plain.fn_metadata.output_schema is not None
    assert built.parameters == portable_input_schema(plain.parameters) != plain.parameters
    assert built.output_schema == compact_output_schema(plain.fn_metadata.output_schema)
    assert built.fn_metadata.output_schema == built.output_schema
    assert built.fn is record_execution and built.context_kwarg == "ctx"


def test_read_only_leaves_the_writers_out_and_remembers_them() -> None:
    tools, hidden = build_tools(Settings(database_url="sqlite:///unused.db", read_only=True))
    writers = {entry.name for table in toolsets().values() for entry in table if not entry.read_only}
    assert hidden == writers
    assert not writers & {tool.name for tool in tools}
    assert _server(read_only=True).hidden_write_tools == writers


@pytest.mark.anyio
async def test_a_tool_added_after_construction_is_known_to_call_tool() -> None:
    server = _server()

    def ping() -> str:
        """Answers pong."""
        return "pong"

    server.add_tool(ping)
    assert server.registered_tools["ping"].parameters == Tool.from_function(ping).parameters
    assert "ping" in {tool.name for tool in await server.list_tools()}
    server.remove_tool("ping")
    assert "ping" not in server.registered_tools


@pytest.mark.anyio
async def test_the_sdk_lists_prompts_inside_the_middleware_chain_with_the_request_lifespan_context() -> None:
    """prompts/list reaches the public ``list_prompts`` inside the middleware that sets ``_LISTING_APP``."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[Any]:
        yield "the-lifespan-context"

    class Probe(MCPServer[Any]):
        async def list_prompts(self) -> list[Prompt]:
            return [Prompt(name=str(_LISTING_APP.get()))]

    probe = Probe(name="probe", lifespan=lifespan, middleware=[_prompt_listing_context])
    async with Client(probe) as client:
        assert [prompt.name for prompt in (await client.list_prompts()).prompts] == ["the-lifespan-context"]
    assert _LISTING_APP.get() is None


def test_public_overrides_keep_the_sdk_signatures() -> None:
    names = ("call_tool", "get_prompt", "list_prompts", "read_resource", "list_resources", "add_tool", "remove_tool")
    for name in names:
        ours, theirs = (
            inspect.signature(getattr(PipelineStateServer, name)),
            inspect.signature(getattr(MCPServer, name)),
        )
        assert list(ours.parameters) == list(theirs.parameters), name
    for parameter in ("tools", "middleware", "lifespan", "instructions"):
        assert parameter in inspect.signature(MCPServer.__init__).parameters


def test_our_attributes_never_shadow_the_sdks() -> None:
    """PipelineStateServer adds attributes to an SDK object: none may be one the SDK itself sets."""
    sdk = set(vars(MCPServer(name="plain")))
    ours = set(vars(_server())) - sdk
    assert ours >= {"registered_tools", "hidden_write_tools", "incidents"}
    assert not ours & sdk
