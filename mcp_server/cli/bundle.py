"""``pipeline-state-mcp export`` and ``import``: projects moved between databases as JSON Lines bundles."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

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
            return _write_file(args.output, lambda out: bundle.write(records, out))
    finally:
        await db.dispose()


def _write_file(target: Path, fill: Callable[[IO[str]], dict[str, int]]) -> dict[str, int]:
    """Write ``target`` whole or not at all, without following a link planted beside it: the bytes go to
    a new file that only this call can have made (``mkstemp``: O_CREAT | O_EXCL, a random name, mode
    0600) in the target's directory, which then replaces the target (the name, never a link's target)."""
    from mcp_server.errors import InvalidArgument

    directory = target.parent
    if not directory.is_dir():
        raise InvalidArgument(f"no directory {directory} to write {target.name} in")
    if target.is_dir():
        raise InvalidArgument(f"{target} is a directory; name the bundle file to write")
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            counts = fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return counts


async def _import(settings: Settings, path: Path) -> Any:
    from sqlalchemy.exc import DataError, IntegrityError

    from mcp_server.db.engine import Database
    from mcp_server.db.migrate import upgrade_to_head
    from mcp_server.errors import Conflict, InvalidArgument
    from mcp_server.services import bundle

    try:
        with path.open(encoding="utf-8") as lines:
            _, rows = bundle.read(lines)
    except UnicodeDecodeError:
        raise InvalidArgument(f"{path} is not UTF-8 text: not a bundle", hint="Nothing was written") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror or exc}", hint="Nothing was written") from None
    db = Database.connect(settings.url)
    try:
        if settings.auto_migrate:
            await upgrade_to_head(settings.async_database_url, engine=db.engine)
        try:
            async with db.unit_of_work() as session:
                return await bundle.load(session, rows)
        except IntegrityError as exc:
            raise Conflict(
                f"the bundle clashes with this database: {_first_line(exc)}",
                hint="Nothing was written (an idempotency key or another unique value is already used here)",
            ) from None
        except DataError as exc:
            raise InvalidArgument(
                f"the database refused a row of the bundle: {_first_line(exc)}", hint="Nothing was written"
            ) from None
    finally:
        await db.dispose()


def _first_line(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0][:200] if str(exc) else type(exc).__name__


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
