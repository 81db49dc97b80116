"""Live state over MCP: titles, completions, list changes and resource updates, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from mcp import Client

pytestmark = pytest.mark.anyio


async def test_every_tool_resource_and_template_has_a_title(client: Client) -> None:
    tools = (await client.list_tools()).tools
    resources = (await client.list_resources()).resources
    templates = (await client.list_resource_templates()).resource_templates
    assert tools and resources and templates
    for item in [*tools, *resources, *templates]:
        assert item.title and item.title.strip() and len(item.title) <= 40, item.name
    assert {tool.title for tool in tools} >= {"Record execution", "Get pipeline status"}
    assert all(tool.annotations and tool.annotations.title == tool.title for tool in tools)
