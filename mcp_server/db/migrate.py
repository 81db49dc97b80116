"""Bring a database to the head revision, safely when many processes start at once (docs/design.md, "Command line").

Start-up is on the hot path, so the check "already at head?" is one plain query and Alembic is
imported only when there is work to do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mcp_server.db.engine import SQLITE_BEGIN, create_engine

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

# The newest revision in migrations/versions; tests/test_migrations.py checks it against Alembic.
SCHEMA_HEAD = "0010"
# pg_advisory_xact_lock key: "pipeline-state-mcp migrate", any constant shared by all instances.
PG_MIGRATION_LOCK = 0x7073_6D63_7000_0001


def migrations_dir() -> Path:
    """The Alembic scripts: shipped inside the wheel, or the repository's top-level folder."""
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "migrations"


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _read_revision(connection: Connection) -> str | None:
    from sqlalchemy import inspect

    if not inspect(connection).has_table("alembic_version"):
        return None
    row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        try:
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
        except DBAPIError:
            return None  # no alembic_version table yet: a fresh database
        return None if row is None else str(row[0])


@asynccontextmanager
async def _migration_lock(conn: AsyncConnection) -> AsyncIterator[None]:
    """A transaction that holds the migration lock until it commits or rolls back."""
    if conn.dialect.name != "sqlite":
        async with conn.begin():
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
            yield
        return
    # One exclusive transaction holds the whole migration: the other processes wait on busy_timeout,
    # then find the schema at head and do nothing. SQLite rebuilds a table to change it (batch mode),
    # and dropping the old copy of a table that others reference fails while foreign keys are enforced:
    # they are switched off for the migration (only possible outside a transaction) and each migration
    # that rebuilds tables runs PRAGMA foreign_key_check before it commits.
    await conn.execution_options(**{SQLITE_BEGIN: "EXCLUSIVE"})
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    await raw.execute("PRAGMA foreign_keys = OFF")
    try:
        async with conn.begin():
            yield
    finally:
        await raw.execute("PRAGMA foreign_keys = ON")


def _upgrade_locked(connection: Connection, url: str) -> bool:
    """Run inside the lock: re-read the revision (another process may have migrated) and upgrade. A
    revision this code does not know was written by a newer release: refused in words, never migrated."""
    current = _read_revision(connection)
    if current == SCHEMA_HEAD:
        return False
    from alembic import command
    from alembic.script import ScriptDirectory

    known = {script.revision for script in ScriptDirectory.from_config(alembic_config(url)).walk_revisions()}
    if current is not None and current not in known:
        from mcp_server.errors import NotMigrated

        raise NotMigrated(
            f"the database's schema is at revision {current}, which this server does not know (its newest is "
            f"{SCHEMA_HEAD}): a newer pipeline-state-mcp migrated it; nothing was written",
            hint="Retrying will not help: ask the operator to run the newer pipeline-state-mcp (or a later one) "
            "on this database, or to restore a backup made before that upgrade",
        )

    command.upgrade(alembic_config(url, connection), "head")
    return True


async def upgrade_to_head(url: str, *, engine: AsyncEngine | None = None) -> bool:
    """Migrate to head; return True if this call applied migrations. Safe under concurrency."""
    own_engine = engine is None
    engine = engine if engine is not None else create_engine(url)
    try:
        if await current_revision(engine) == SCHEMA_HEAD:
            return False
        async with engine.connect() as conn, _migration_lock(conn):
            migrated: bool = await conn.run_sync(_upgrade_locked, url)
        if migrated:
            log.info("database schema migrated to %s", SCHEMA_HEAD)
        return migrated
    finally:
        if own_engine:
            await engine.dispose()


async def run_alembic(url: str, action: str, *args: Any) -> None:
    """Run an Alembic command (upgrade, downgrade, current, history) on the URL's database."""
    from alembic import command

    if action == "history":
        command.history(alembic_config(url), *args)
        return
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def _run(sync_conn: Connection) -> None:
                getattr(command, action)(alembic_config(url, sync_conn), *args)

            async with _migration_lock(conn):
                await conn.run_sync(_run)
    finally:
        await engine.dispose()
