"""The one place this server reaches past the MCP SDK's public API, and why.

``MCPServer`` serves a connection only on transports it opens itself (``run_stdio_async`` on the SDK's
stdio streams, ``streamable_http_app``, ``sse_app``). mcp_server/transport/stdio.py brings its own stdio
streams (lines past 4 MiB refused unread, a JSON-RPC error for every invalid line), and the SDK has no public
call that serves an ``MCPServer`` on given streams: its own ``run_stdio_async`` and in-memory ``Client``
run the low-level server the ``MCPServer`` holds, as :func:`serve_streams` does.

tests/test_sdk_gap.py checks each assumption made here, so an SDK upgrade that moves one fails there.
"""

from __future__ import annotations

from typing import Any

from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.mcpserver import MCPServer


def lowlevel_server(server: MCPServer[Any]) -> Server[Any]:
    """The low-level ``Server`` that holds ``server``'s handlers, middleware and lifespan."""
    lowlevel: Server[Any] = server._lowlevel_server
    return lowlevel


async def serve_streams(server: MCPServer[Any], read_stream: Any, write_stream: Any) -> None:
    """Serve one connection of ``server`` on a transport's streams (``mcp.shared``'s ReadStream of
    ``SessionMessage | Exception`` and WriteStream of ``SessionMessage``), as ``run_stdio_async`` does
    on the SDK's stdio streams."""
    lowlevel = lowlevel_server(server)
    await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


def add_request_handler(server: MCPServer[Any], method: str, params_type: type[Any], handler: Any) -> None:
    """Serve ``method`` with ``handler(ctx, params)`` through the low-level server's public
    ``add_request_handler``: ``MCPServer`` has no call for ``resources/subscribe`` and ``resources/unsubscribe``,
    and the low-level server advertises ``resources.subscribe`` once the method is served."""
    lowlevel_server(server).add_request_handler(method, params_type, handler)


def advertise_list_changed(server: MCPServer[Any], options: NotificationOptions) -> None:
    """The 2025-11-25 handshake says ``listChanged`` where ``options`` does. Every SDK transport (stdio, HTTP,
    the in-memory client) builds the ``initialize`` answer with ``create_initialization_options()`` and no
    ``NotificationOptions``, and ``MCPServer`` takes none, so the low-level server's method gets them as its
    default. (2026-07-28 sessions derive these flags from ``subscriptions/listen`` being served.)"""
    lowlevel = lowlevel_server(server)
    original = lowlevel.create_initialization_options

    def create(
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> Any:
        return original(notification_options or options, experimental_capabilities, extensions)

    setattr(lowlevel, "create_initialization_options", create)  # noqa: B010 - an instance's method, replaced
