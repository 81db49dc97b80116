"""``pipeline-state-mcp db …``: schema migrations, backup, prune and copy: data that lives for months.

``db backup``: a consistent copy of the database while servers write.

SQLite: the online backup API, in one step, from a read transaction: in WAL mode that is a snapshot
that writers do not wait for, so the copy is consistent at one moment however busy the servers are.
The copy is written beside FILE and renamed into place only once it passes ``PRAGMA integrity_check``.
PostgreSQL: ``pg_dump`` is the tool for it; the command is printed with the password masked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import sqlite3
import stat
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from mcp_server.settings import Settings, mask_url

COMPANIONS = ("-wal", "-shm", "-journal", "-writers")


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _refuse_target(source: Path, target: Path, *, force: bool) -> str | None:
    """Why ``target`` must not receive a backup of ``source``, or None. The source is compared by inode, so
    no other path, symlink or hard link to it (or to its -wal, -shm, -journal or -writers companion) passes."""
    source_stat = source.stat()
    protected = [str(source.resolve()) + suffix for suffix in ("", *COMPANIONS)]
    if os.path.realpath(target) in protected:
        return f"{target} is the database being backed up (or one of its companion files)"
    try:
        target_stat = target.stat()  # follows links: a symlink to the live file is the live file
    except FileNotFoundError:
        target_stat = None
    if target_stat is not None:
        if _same_file(target_stat, source_stat):
            return f"{target} is the database being backed up (the same file)"
        for suffix in COMPANIONS:
            try:
                if _same_file(target_stat, os.stat(f"{source}{suffix}")):
                    return f"{target} is the database's {suffix[1:]} file"
            except FileNotFoundError:
                continue
        if stat.S_ISDIR(target_stat.st_mode):
            return f"{target} is a directory; name the backup file"
        if not stat.S_ISREG(target_stat.st_mode):
            return f"{target} is not a regular file"
    if os.path.lexists(target) and not force:
        return f"{target} exists; pass --force to replace it"
    if not target.parent.is_dir():
        return f"the directory {target.parent} does not exist"
    return None


def _remove_partial(partial: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{partial}{suffix}")


def _copy_into(source: Path, partial: Path) -> str:
    """The online backup of ``source`` into ``partial``, in one step; returns the integrity check's answer."""
    src = sqlite3.connect(source, timeout=30)  # the backup only reads it
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # pages=-1: one step, one snapshot
            check = str(dst.execute("PRAGMA integrity_check").fetchone()[0])
            dst.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
        finally:
            dst.close()
    finally:
        src.close()
    return check


def backup(settings: Settings, target: Path, *, force: bool = False) -> int:
    url = make_url(settings.url)
    if url.get_backend_name() != "sqlite":
        command = ["pg_dump", "--format=custom", f"--file={target}", mask_url(settings.url)]
        sys.stderr.write(
            "pipeline-state-mcp: a PostgreSQL database is backed up with pg_dump (a consistent snapshot while "
            "servers write); put the password back in place of *** or use PGPASSWORD:\n"
        )
        sys.stdout.write(shlex.join(command) + "\n")
        return 2
    source = Path(url.database or "")
    if not source.is_file():
        sys.stderr.write(f"pipeline-state-mcp: no database file at {source}\n")
        return 1
    refusal = _refuse_target(source, target, force=force)
    if refusal:
        sys.stderr.write(f"pipeline-state-mcp: {refusal}; nothing was written\n")
        return 1
    partial: Path | None = None
    try:
        # A fresh name in the target's directory, created with O_EXCL: a planted link is never followed.
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        os.close(fd)
        partial = Path(name)
        check = _copy_into(source, partial)
        if check != "ok":
            raise sqlite3.DatabaseError(f"the copy failed its integrity check ({check})")
        refusal = _refuse_target(source, target, force=force)  # again, just before the rename
        if refusal:
            raise FileExistsError(refusal)
        os.replace(partial, target)
        partial = None
    except (OSError, sqlite3.Error) as exc:
        sys.stderr.write(f"pipeline-state-mcp: the backup failed: {exc}; nothing was written\n")
        return 1
    finally:
        if partial is not None:
            _remove_partial(partial)
    size = target.stat().st_size
    sys.stdout.write(f"backed up {source} to {target} ({size / 1_048_576:.1f} MiB, integrity ok)\n")
    return 0


def prune(settings: Settings, *, older_than: str, project_id: uuid.UUID | None, dry_run: bool) -> int:
    """``db prune --older-than AGE``: superseded executions go, their cost rows stay (see services.lifecycle)."""
    import anyio

    from mcp_server.db.engine import Database
    from mcp_server.errors import DomainError
    from mcp_server.services import lifecycle

    try:
        age = lifecycle.parse_age(older_than)
    except DomainError as exc:
        sys.stderr.write(exc.render() + "\n")
        return 2

    async def run() -> dict[str, object]:
        db = Database.connect(settings.url)
        try:
            report = await lifecycle.prune(db, older_than=age, project_id=project_id, dry_run=dry_run)
            return report.as_dict()
        finally:
            await db.dispose()

    result = anyio.run(run)
    verb = "would remove" if dry_run else "removed"
    sys.stdout.write(
        f"{verb} {result['executions_removed']} superseded execution(s) older than {older_than} in "
        f"{result['projects']} project(s), created before {result['cutoff']}; "
        f"{result['cost_rows_detached']} cost row(s) kept, detached; "
        f"{int(result['data_bytes_freed']) / 1_048_576:.2f} MiB of execution data freed"  # type: ignore[call-overload]
        + (" (dry run: nothing changed)" if dry_run else " (reusable by the database; VACUUM shrinks a SQLite file)")
        + "\n"
    )
    return 0


def copy(settings: Settings, to_url: str) -> int:
    """``db copy --to URL``: every row onto an empty database at schema head, with a progress bar, then a
    check that rows per table, cost totals and state versions are equal."""
    import anyio
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from mcp_server.db.engine import Database
    from mcp_server.errors import DomainError
    from mcp_server.services.copy import copy_database

    with Progress(TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(), transient=False) as bar:
        tasks: dict[str, Any] = {}

        def progress(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=total or 1)
            bar.update(tasks[table], completed=done if total else 1)

        async def run() -> Any:
            source = Database.connect(settings.url)
            try:
                return await copy_database(source, to_url, progress=progress)
            finally:
                await source.dispose()

        try:
            report = anyio.run(run)
        except DomainError as exc:  # it may quote a row's key: shown, never sent to the terminal
            from mcp_server.cli.tables import visible

            sys.stderr.write(visible(exc.render(), keep="\n") + "\n")
            return 1
    if report.differences:
        sys.stderr.write("the copy differs from the source: " + "; ".join(report.differences) + "\n")
        return 1
    rows = sum(report.rows.values())
    sys.stdout.write(
        f"copied {rows} rows from {settings.display_url} to {mask_url(to_url)}; verified: rows per table, "
        "cost totals and state versions are equal\n"
    )
    return 0


def add_parsers(commands: Any) -> None:
    db = commands.add_parser("db", help="manage the database schema (Alembic)")
    db_actions = db.add_subparsers(dest="action", required=True)
    up = db_actions.add_parser("upgrade", help="upgrade the schema (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    down = db_actions.add_parser("downgrade", help="downgrade the schema (e.g. -1 or base)")
    down.add_argument("revision")
    db_actions.add_parser("current", help="show the database's revision")
    db_actions.add_parser("history", help="list the revisions")
    prune = db_actions.add_parser("prune", help="delete old superseded executions (every cost figure stays)")
    prune.add_argument("--older-than", required=True, help="age like 90d, 12h or 0d")
    prune.add_argument("--project", type=uuid.UUID, help="only this project's executions")
    prune.add_argument("--dry-run", action="store_true", help="only report what would be removed")
    copy = db_actions.add_parser("copy", help="copy the whole database onto an empty one, then verify it")
    copy.add_argument("--to", required=True, dest="to_url", help="the target database URL (e.g. postgresql://…)")
    backup = db_actions.add_parser("backup", help="a consistent copy of the SQLite file while servers write")
    backup.add_argument("file", type=Path)
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")


def run_db(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "backup":
        return backup(settings, args.file, force=args.force)
    if args.action == "copy":
        return copy(settings, args.to_url)
    if args.action == "prune":
        return prune(settings, older_than=args.older_than, project_id=args.project, dry_run=args.dry_run)
    from mcp_server.db.migrate import run_alembic

    logging.getLogger("alembic").setLevel(logging.INFO)
    extra: list[str] = [args.revision] if args.action in ("upgrade", "downgrade") else []
    sys.stderr.write(f"database: {settings.display_url}\n")
    asyncio.run(run_alembic(settings.async_database_url, args.action, *extra))
    return 0
