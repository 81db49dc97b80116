"""``pipeline-state-mcp serve``: stdio (default) or streamable HTTP with a bearer token
(mcp_server/transport)."""

from __future__ import annotations

import argparse
import logging
import sys

from mcp_server.settings import Settings

log = logging.getLogger(__name__)


def _announce(settings: Settings) -> None:
    sys.stderr.write(
        "pipeline-state-mcp: an MCP server speaking JSON-RPC on stdin/stdout.\n"
        f"  database: {settings.display_url}\n"
        "  connect a client, e.g.: claude mcp add pipeline-state -- pipeline-state-mcp\n"
        "  or try it: pipeline-state-mcp demo   (Ctrl-C to quit)\n"
    )


def serve(settings: Settings, args: argparse.Namespace) -> int:
    transport = getattr(args, "transport", "stdio")
    if transport == "http":
        from mcp_server.transport.http import http_app, run_http

        app = http_app(settings, host=args.host, stateless=args.stateless)
        log.info(
            "serving streamable HTTP on http://%s:%s/mcp (database %s)", args.host, args.port, settings.display_url
        )
        # timeout_graceful_shutdown: SIGTERM stops the server within seconds even with streams open.
        run_http(app, settings, host=args.host.strip("[]"), port=args.port, timeout_graceful_shutdown=2)
        return 0
    if sys.stdin.isatty():
        _announce(settings)
    import anyio

    from mcp_server.server import build_server
    from mcp_server.transport import stdio

    anyio.run(stdio.serve, build_server(settings))
    return 0
