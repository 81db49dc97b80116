"""``pipeline-state-mcp ui``: the read-only dashboard on the configured database (mcp_server/ui)."""

from __future__ import annotations

import argparse
import sys

from mcp_server.settings import Settings
from mcp_server.transport.http import header_timeout, is_loopback, run_http

DEFAULT_PORT = 8765


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ui = commands.add_parser("ui", help="a read-only web dashboard of projects, pipelines and costs")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (non-loopback needs PIPELINE_STATE_AUTH_TOKEN)")
    ui.add_argument("--port", type=int, default=DEFAULT_PORT)


def run_ui(settings: Settings, args: argparse.Namespace) -> int:
    token = settings.auth_token.get_secret_value() if settings.auth_token else None
    if not is_loopback(args.host) and not token:
        sys.stderr.write(
            f"pipeline-state-mcp: refusing to serve the dashboard on non-loopback host {args.host!r} without "
            "PIPELINE_STATE_AUTH_TOKEN; set a token (the browser signs in with it) or bind 127.0.0.1\n"
        )
        return 2
    header_timeout()  # a bad PIPELINE_STATE_HTTP_HEADER_TIMEOUT stops here, before the database is opened
    from mcp_server.db.engine import Database
    from mcp_server.ui.web import build_app

    database = Database.connect(settings.url, read_only=True)
    # On loopback, a request must name a loopback host: a web page elsewhere cannot rebind a name to it.
    hosts = ["127.0.0.1", "localhost", "[::1]", args.host] if is_loopback(args.host) else None
    app = build_app(database, token=token, allowed_hosts=hosts)
    sys.stderr.write(f"pipeline-state-mcp ui: http://{args.host}:{args.port}/ (read-only) on {settings.display_url}\n")
    # Open pages hold their change feed (server-sent events) open: shutdown ends them after 2 s.
    run_http(app, settings, host=args.host, port=args.port, timeout_graceful_shutdown=2)
    return 0
