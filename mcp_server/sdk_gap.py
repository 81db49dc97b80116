"""The one place this server reaches past the MCP SDK's public API, and why.

``MCPServer`` serves a connection only on transports it opens itself (``run_stdio_async`` on the SDK's
stdio streams, ``streamable_http_app``, ``sse_app``). mcp_server/stdio.py brings its own stdio streams
(lines past 4 MiB refused unread, a JSON-RPC error for every invalid line), and the SDK has no public
call that serves an ``MCPServer`` on given streams: its own ``run_stdio_async`` and in-memory ``Client``
run the low-level server the ``MCPServer`` holds, as :func:`serve_streams` does.

tests/test_sdk_gap.py checks each assumption made here, so an SDK upgrade that moves one fails there.
"""

from __future__ import annotations

from typing import Any

from mcp.server.lowlevel import Server
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
