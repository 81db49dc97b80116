"""``pipeline-state-mcp status`` and ``costs``: what agents recorded, as tables or JSON for scripts."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import datetime
from typing import Any

from mcp_server.settings import Settings

GROUPS = ("project", "process", "provider", "model", "day", "prompt", "source", "agent")


def add_parsers(commands: Any) -> None:
    status = commands.add_parser("status", help="show a project's pipeline: states, readiness, invalidations")
    status.add_argument("project_id", type=uuid.UUID)
    status.add_argument("--json", action="store_true", help="print the get_pipeline_status JSON")
    status.add_argument("--graph", action="store_true", help="print the pipeline as a Mermaid flowchart")
    costs = commands.add_parser("costs", help="show LLM cost, grouped, with totals and the cost of rework")
    costs.add_argument("--project", type=uuid.UUID, help="only this project")
    costs.add_argument("--process", help="only this process")
    costs.add_argument("--provider")
    costs.add_argument("--model")
    costs.add_argument("--since", type=datetime.fromisoformat, help="ISO date/time (UTC if no zone), inclusive")
    costs.add_argument("--until", type=datetime.fromisoformat, help="ISO date/time (UTC if no zone), exclusive")
    costs.add_argument(
        "--group-by", default="model", help=f"comma list of {', '.join(GROUPS)} (default model; '' for totals)"
    )
    costs.add_argument("--json", action="store_true", help="print the get_cost_summary JSON")


async def _graph(settings: Settings, project_id: uuid.UUID) -> str:
    from mcp_server.db.engine import Database
    from mcp_server.services import status

    db = Database.connect(settings.url)
    try:
        async with db.unit_of_work(write=False) as session:
            return await status.graph(session, project_id)
    finally:
        await db.dispose()


async def _status(settings: Settings, project_id: uuid.UUID) -> dict[str, Any]:
    from mcp_server.db.engine import Database
    from mcp_server.schemas.portable import reply_data
    from mcp_server.services import status

    db = Database.connect(settings.url)
    try:
        async with db.unit_of_work(write=False) as session:
            result = await status.pipeline_status(session, project_id, page_size=None)  # every step
            return reply_data(result)  # type: ignore[no-any-return]
    finally:
        await db.dispose()


async def _costs(settings: Settings, args: argparse.Namespace, group_by: list[str]) -> dict[str, Any]:
    from mcp_server.db.engine import Database
    from mcp_server.schemas.cost import CostFilters
    from mcp_server.schemas.portable import reply_data
    from mcp_server.services import costs

    filters = CostFilters(
        project_id=args.project,
        process_id=args.process,
        provider=args.provider,
        model=args.model,
        since=args.since,
        until=args.until,
    )
    db = Database.connect(settings.url)
    try:
        async with db.unit_of_work(write=False) as session:
            result = await costs.summary(session, filters, group_by)  # type: ignore[arg-type]
            return reply_data(result)  # type: ignore[no-any-return]
    finally:
        await db.dispose()


def run_view(settings: Settings, args: argparse.Namespace) -> int:
    import anyio

    from mcp_server.cli.tables import cost_table, status_table, visible
    from mcp_server.errors import DomainError

    try:
        if args.command == "status" and args.graph:
            sys.stdout.write(visible(anyio.run(_graph, settings, args.project_id), keep="\n"))
            return 0
        if args.command == "status":
            data = anyio.run(_status, settings, args.project_id)
            table = status_table(data)
        else:
            group_by = [g.strip() for g in args.group_by.split(",") if g.strip()]
            unknown = sorted(set(group_by) - set(GROUPS))
            if unknown:
                sys.stderr.write(visible(f"unknown --group-by {unknown}; choose from {', '.join(GROUPS)}") + "\n")
                return 2
            data = anyio.run(_costs, settings, args, group_by)
            table = cost_table(data, group_by)
    except DomainError as exc:
        sys.stderr.write(visible(exc.render(), keep="\n") + "\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")  # ASCII: every control character escaped
        return 0
    _print_view(args, table, data)
    return 0


def _print_view(args: argparse.Namespace, table: Any, data: dict[str, Any]) -> None:
    """The table, and under a status its cost and what can run next; agent text only as rich Text."""
    from rich.console import Console

    from mcp_server.cli.tables import line, text

    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    if args.command != "status":
        return
    if data.get("cost"):
        cost = data["cost"]
        parts: list[Any] = ["cost so far $", text(cost.get("spent_usd"))]
        if cost.get("budget_usd"):
            parts += [" of $", text(cost["budget_usd"]), " (reserved $", text(cost.get("reserved_usd"))]
            parts += [", remaining $", text(cost["remaining_usd"]), ", policy ", text(cost.get("policy")), ")"]
        console.print(line(*parts))
    console.print(line("ready to run: ", text(", ".join(data["ready_processes"]) or "(nothing)")))
