"""Registration with annotations and toolset/read-only filtering, and per-call helpers."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations

from mcp_server.app import App
from mcp_server.schemas.common import ACTOR_MAX
from mcp_server.schemas.portable import compact_output_schema, portable_input_schema

if TYPE_CHECKING:
    from mcp_server.server import PipelineStateServer

F = TypeVar("F", bound=Callable[..., Any])


class Registrar:
    """Adds a toolset's tools to the server, leaving out writers in read-only mode."""

    def __init__(self, server: PipelineStateServer, *, read_only: bool) -> None:
        self.server = server
        self.read_only = read_only

    def tool(
        self, *, title: str, read_only: bool, destructive: bool = False, idempotent: bool = False
    ) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            if self.read_only and not read_only:
                self.server.hidden_write_tools.add(fn.__name__)
                return fn
            self.server.add_tool(
                fn,
                # One paragraph: the docstring's line breaks are layout, and each one costs the model a token.
                description=" ".join(inspect.cleandoc(fn.__doc__ or "").split()),
                annotations=ToolAnnotations(
                    title=title,
                    read_only_hint=read_only,
                    destructive_hint=destructive if not read_only else False,
                    idempotent_hint=idempotent or read_only,
                    open_world_hint=False,
                ),
            )
            # Schemas every provider SDK loads (see mcp_server.schemas.portable); the SDK reads both live.
            registered = self.server._tool_manager.get_tool(fn.__name__)
            assert registered is not None
            registered.parameters = portable_input_schema(registered.parameters)
            registered.fn_metadata.output_schema = compact_output_schema(registered.fn_metadata.output_schema)
            return fn

        return decorator


def app_of(ctx: Context[App]) -> App:
    app: App = ctx.request_context.lifespan_context
    return app


def actor_of(ctx: Context[App]) -> str | None:
    """``name/version`` of the MCP client, when it identified itself at initialisation."""
    try:
        params = ctx.session.client_params
    except (AttributeError, RuntimeError):
        return None
    if params is None or params.client_info is None:
        return None
    info = params.client_info
    label = f"{info.name}/{info.version}" if info.version else info.name
    # The client names itself: keep what PostgreSQL can store (no NUL) and what the column holds.
    return label.replace("\x00", "")[:ACTOR_MAX] or None
