"""Scratch databases: a migrated SQLite template copied per run, and throw-away PostgreSQL ones."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness import sqlite_url, work_dir

PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def migrate(url: str) -> None:
    """Bring a database to head in-process (the server's own migration code)."""
    from mcp_server.db.migrate import upgrade_to_head

    asyncio.run(upgrade_to_head(url))


def template() -> Path:
    """An empty, migrated SQLite file (made once per benchmark run, before any event loop runs)."""
    path = work_dir() / "template.db"
    if not path.exists():
        migrate(sqlite_url(path))
    return path


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def fresh_sqlite(name: str) -> Path:
    """A copy of the migrated template, replacing any earlier file of that name."""
    path = work_dir() / f"{name}.db"
    remove_sqlite(path)
    shutil.copyfile(template(), path)
    return path


def unmigrated_sqlite(name: str) -> Path:
    path = work_dir() / f"{name}.db"
    remove_sqlite(path)
    return path


async def _pg_admin(*statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        asyncio.run(_pg_admin("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "skip the PostgreSQL figure"
        return f"{type(exc).__name__}: {exc}"
    return None


@contextmanager
def scratch_postgres() -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    url = f"{base}/{name}"
    try:
        migrate(url)
        yield url
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def clean_work() -> None:
    """Remove the scratch databases (keeps the servers' log)."""
    for path in work_dir().glob("*.db*"):
        path.unlink(missing_ok=True)
