"""Thin MCP adapters, one module per toolset: module-level tool functions listed in the module's ``TOOLS``
table; resources in ``resources.TEMPLATES``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_server.settings import Settings

if TYPE_CHECKING:
    from mcp.server.mcpserver.tools import Tool

    from mcp_server.server import PipelineStateServer
    from mcp_server.tools.base import ToolEntry


def toolsets() -> dict[str, tuple[ToolEntry, ...]]:
    """Every toolset's table, in the order tools/list publishes them."""
    from mcp_server.tools import costs, pipeline, projects, prompts

    return {"projects": projects.TOOLS, "pipeline": pipeline.TOOLS, "prompts": prompts.TOOLS, "costs": costs.TOOLS}


def build_tools(settings: Settings) -> tuple[list[Tool], set[str]]:
    """The tools of the enabled toolsets (PIPELINE_STATE_TOOLSETS), and the names of the writers left
    out because the server runs read-only."""
    tools: list[Tool] = []
    hidden: set[str] = set()
    for name, table in toolsets().items():
        whole = name in settings.enabled_toolsets
        for entry in table:
            if not whole and entry.name not in settings.preset_tools:
                continue
            if settings.read_only and not entry.read_only:
                hidden.add(entry.name)
            else:
                tools.append(entry.build())
    return tools, hidden


def register_resources(server: PipelineStateServer, settings: Settings) -> None:
    """The pipeline resources, with the ``pipeline`` toolset."""
    from mcp_server.tools import resources

    if "pipeline" in settings.enabled_toolsets:
        resources.register(server)
