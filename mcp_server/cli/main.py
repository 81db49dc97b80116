"""Command line: ``pipeline-state-mcp [serve|db|status|costs|demo]``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from mcp_server.settings import Settings


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pipeline-state-mcp")
    except PackageNotFoundError:
        return "0+unknown"


def configure_logging(level: str) -> None:
    """Logs go to stderr only: stdout belongs to the protocol."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # The SDK logs every tool error (an agent's bad argument, a `busy`) at INFO: one line per call.
    # The client already has each error; the server logs incidents (see server.IncidentLog).
    if logging.getLevelName(level) > logging.DEBUG:
        logging.getLogger("mcp.server.mcpserver.server").setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline-state-mcp",
        description="MCP server that keeps the state of multi-step LLM pipelines and logs LLM cost.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run the MCP server (the default command)")
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--stateless", action="store_true", help="stateless streamable HTTP (no sessions)")

    from mcp_server.cli.db import add_parsers as add_db_parsers

    add_db_parsers(commands)

    from mcp_server.cli.views import add_parsers

    add_parsers(commands)
    from mcp_server.cli.pipeline import add_parsers as add_pipeline_parsers

    add_pipeline_parsers(commands)
    from mcp_server.cli.prices import add_parsers as add_price_parsers

    add_price_parsers(commands)
    from mcp_server.cli.bundle import add_parsers as add_bundle_parsers

    add_bundle_parsers(commands)
    from mcp_server.cli.ui import add_parsers as add_ui_parsers

    add_ui_parsers(commands)
    commands.add_parser("demo", help="run an example pipeline end to end over stdio on a temporary database")
    return parser


def _only_reads(args: argparse.Namespace) -> bool:
    """Commands that never migrate: status, costs, export, pipeline export, db prune (see _database_failure)."""
    action = getattr(args, "action", None)
    return args.command in ("status", "costs", "export") or (args.command, action) in (
        ("pipeline", "export"),
        ("db", "prune"),
    )


def _missing_sqlite_file(settings: Settings) -> bool:
    """The configured database is a SQLite file that does not exist (opening it would create it)."""
    from sqlalchemy.engine import make_url

    if not settings.is_sqlite:
        return False
    database = make_url(settings.async_database_url).database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return False
    return not Path(database).expanduser().exists()


def _offline_command(settings: Settings, args: argparse.Namespace) -> int:
    """The database commands: an unreachable database is one clear line, not a traceback."""
    from sqlalchemy.exc import DBAPIError

    if _only_reads(args) and _missing_sqlite_file(settings):  # a reading command creates no empty file
        sys.stderr.write(
            f"pipeline-state-mcp: there is no database at {settings.display_url}: "
            "run `pipeline-state-mcp db upgrade` to create it (or set PIPELINE_STATE_DATABASE_URL)\n"
        )
        return 1
    try:
        if args.command == "db":
            from mcp_server.cli.db import run_db

            return run_db(settings, args)
        if args.command == "pipeline":
            from mcp_server.cli.pipeline import run_pipeline

            return run_pipeline(settings, args)
        if args.command in ("export", "import"):
            from mcp_server.cli.bundle import run_bundle

            return run_bundle(settings, args)
        if args.command == "prices":
            from mcp_server.cli.prices import run_prices

            return run_prices(settings, args)
        from mcp_server.cli.views import run_view

        return run_view(settings, args)
    except (DBAPIError, OSError) as exc:
        return _database_failure(settings, exc)


def _database_failure(settings: Settings, exc: BaseException) -> int:
    """One line on stderr, exit 1. A database not migrated (or older than this code) is told to run
    `db upgrade`: the reading commands (status, costs, export, pipeline export) never migrate, since they
    also run against read-only copies and backups, and `db prune` deletes rows, not schema changes; the
    commands that write definitions or rows (import, pipeline apply, prices) migrate first unless
    PIPELINE_STATE_AUTO_MIGRATE=false."""
    from mcp_server.errors import NotMigrated, database_error, describe_cause

    mapped = database_error(exc)
    where = settings.display_url
    if isinstance(mapped, NotMigrated):
        sys.stderr.write(
            f"pipeline-state-mcp: the database at {where} is not migrated ({describe_cause(exc)}): "
            "run `pipeline-state-mcp db upgrade`\n"
        )
        return 1
    kind = f"{mapped.code}: " if mapped is not None else ""
    sys.stderr.write(f"pipeline-state-mcp: cannot use the database {where}: {kind}{describe_cause(exc)}\n")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:  # a configuration mistake: say which variable, never echo its value
        for error in exc.errors(include_input=False, include_url=False):
            field = ".".join(str(part) for part in error["loc"])
            where = f"PIPELINE_STATE_{field.upper()}: " if field else ""  # a check across settings names its own
            sys.stderr.write(f"pipeline-state-mcp: {where}{error['msg']}\n")
        return 2
    configure_logging(settings.log_level)
    if args.command in ("db", "status", "costs", "pipeline", "prices", "export", "import"):
        return _offline_command(settings, args)
    if args.command == "demo":
        from mcp_server.cli.demo import main_demo

        return main_demo()
    if args.command == "ui":
        from mcp_server.cli.ui import run_ui

        return run_ui(settings, args)
    from mcp_server.cli.serve import serve

    return serve(settings, args)


if __name__ == "__main__":
    sys.exit(main())
