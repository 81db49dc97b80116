"""Thin MCP adapters, one module per toolset, each with ``register(registrar)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_server.settings import Settings

if TYPE_CHECKING:
    from mcp_server.server import PipelineStateServer


def register_toolsets(server: PipelineStateServer, settings: Settings) -> None:
    """Register the enabled toolsets (PIPELINE_STATE_TOOLSETS), writers left out when read-only."""
    from mcp_server.tools import costs, pipeline, projects, prompts, resources
    from mcp_server.tools.base import Registrar

    registrar = Registrar(server, read_only=settings.read_only)
    modules = {"projects": projects, "pipeline": pipeline, "prompts": prompts, "costs": costs}
    for name, module in modules.items():
        if name in settings.enabled_toolsets:
            module.register(registrar)
    if "pipeline" in settings.enabled_toolsets:
        resources.register(server)
