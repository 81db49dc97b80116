"""``pipeline-state-mcp export`` and ``import``: projects moved between databases as JSON Lines bundles."""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

from mcp_server.settings import Settings


def add_parsers(commands: Any) -> None:
    export = commands.add_parser("export", help="write projects (with their pipeline, history and costs) as a bundle")
    export.add_argument("--project", type=uuid.UUID, action="append", default=[], help="this project (repeatable)")
    export.add_argument("--pipeline", help="the projects of this pipeline, and its definitions")
    export.add_argument("-o", "--output", type=Path, help="the bundle file (default: stdout)")
    load = commands.add_parser("import", help="load a bundle into the configured database, in one transaction")
    load.add_argument("file", type=Path)


async def _export(settings: Settings, args: argparse.Namespace) -> dict[str, int]:
    from mcp_server.db.engine import Database
    from mcp_server.services import bundle

    db = Database.connect(settings.url)
    try:
        async with db.unit_of_work(write=False) as session:
            records = await bundle.export(session, project_ids=args.project, pipeline_id=args.pipeline)
            if args.output is None:
                return bundle.write(records, sys.stdout)
            partial = args.output.with_name(f".{args.output.name}.partial")
            with partial.open("w", encoding="utf-8") as out:
                counts = bundle.write(records, out)
            partial.replace(args.output)
            return counts
    finally:
        await db.dispose()


async def _import(settings: Settings, path: Path) -> Any:
    from sqlalchemy.exc import IntegrityError

    from mcp_server.db.engine import Database
    from mcp_server.db.migrate import upgrade_to_head
    from mcp_server.errors import Conflict
    from mcp_server.services import bundle

    with path.open(encoding="utf-8") as lines:
        _, records = bundle.read(lines)
    db = Database.connect(settings.url)
    try:
        if settings.auto_migrate:
            await upgrade_to_head(settings.async_database_url, engine=db.engine)
        try:
            async with db.unit_of_work() as session:
                return await bundle.load(session, records)
        except IntegrityError as exc:
            reason = str(exc.orig).splitlines()[0][:200]
            raise Conflict(
                f"the bundle clashes with this database: {reason}",
                hint="Nothing was written (an idempotency key or another unique value is already used here)",
            ) from None
    finally:
        await db.dispose()


def run_bundle(settings: Settings, args: argparse.Namespace) -> int:
    import anyio

    from mcp_server.errors import DomainError

    try:
        if args.command == "export":
            counts = anyio.run(_export, settings, args)
            summary = ", ".join(f"{count} {kind}" for kind, count in counts.items()) or "nothing"
            sys.stderr.write(f"exported {summary}\n")
            return 0
        if not args.file.is_file():
            sys.stderr.write(f"pipeline-state-mcp: no bundle at {args.file}\n")
            return 2
        report = anyio.run(_import, settings, args.file)
    except DomainError as exc:
        sys.stderr.write(exc.render() + "\n")
        return 1
    inserted = ", ".join(f"{count} {kind}" for kind, count in report.inserted.items()) or "nothing new"
    unchanged = sum(report.unchanged.values())
    sys.stdout.write(f"imported {inserted}; {unchanged} row(s) already here and identical\n")
    return 0
