"""Fixtures: a fresh, migrated database per test on SQLite and on PostgreSQL.

PostgreSQL comes from PIPELINE_STATE_TEST_POSTGRES_URL (default postgres@127.0.0.1:5432/test).
With CI=true a missing PostgreSQL fails the run; elsewhere its tests are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mcp import Client
from sqlalchemy.engine import make_url

from mcp_server.db.engine import Database
from mcp_server.db.migrate import upgrade_to_head
from mcp_server.server import build_server
from mcp_server.settings import Settings

PG_ADMIN_URL = os.environ.get("PIPELINE_STATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DIALECTS = ("sqlite", "postgresql")
T = TypeVar("T")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a thread of its own. A fixture may be asked for from inside a
    running event loop (``request.getfixturevalue`` in an async test), where ``asyncio.run`` refuses: the
    PostgreSQL probe then failed, and every PostgreSQL test of the process was skipped (or failed in CI)."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _pg_admin(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _pg_url(database: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_available() -> bool:
    try:
        run_blocking(_pg_admin(PG_ADMIN_URL, "SELECT 1"))
    except (OSError, TimeoutError, Exception) as exc:  # noqa: BLE001 - any failure means "not reachable"
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {PG_ADMIN_URL}: {exc!r}")
        return False
    return True


def require_postgres(pg_available: bool) -> None:
    if not pg_available:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} (set PIPELINE_STATE_TEST_POSTGRES_URL)")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    run_blocking(upgrade_to_head(f"sqlite:///{path}"))
    return path


class PgDatabases:
    """Copies of the migrated template, made one ahead of the test that takes it and dropped after it on a
    thread of their own: creating and dropping a database each take PostgreSQL a good part of a second,
    which the tests need not wait for. Each copy is still a new database, used by one test only."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-databases")
        self.pending: list[Future[None]] = []
        self.ahead = self._create()

    def _create(self) -> tuple[str, Future[None]]:
        name = f"pst_{uuid.uuid4().hex[:16]}"
        # WAL_LOG (PostgreSQL 15's default) copies a small template without FILE_COPY's two checkpoints.
        statement = f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'
        return name, self.worker.submit(asyncio.run, _pg_admin(PG_ADMIN_URL, statement))

    def take(self) -> str:
        name, created = self.ahead
        self.ahead = self._create()
        created.result()
        return name

    def drop(self, name: str) -> None:
        self.pending.append(self.worker.submit(asyncio.run, _pg_admin(PG_ADMIN_URL, _drop(name))))

    def close(self) -> None:
        name, created = self.ahead
        self.pending.append(created)
        self.drop(name)
        self.worker.shutdown(wait=True)
        for done in self.pending:
            done.result()  # a drop that failed fails the session, as it failed its test before


def _drop(name: str) -> str:
    return f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'


@pytest.fixture(scope="session")
def pg_template(pg_available: bool) -> Iterator[str]:
    require_postgres(pg_available)
    # One per process: each pytest-xdist worker has its own.
    name = f"pst_template_{os.getpid()}"
    run_blocking(_pg_admin(PG_ADMIN_URL, _drop(name), f'CREATE DATABASE "{name}"'))
    run_blocking(upgrade_to_head(_pg_url(name)))
    yield name
    run_blocking(_pg_admin(PG_ADMIN_URL, _drop(name)))


@pytest.fixture(scope="session")
def pg_databases(pg_template: str) -> Iterator[PgDatabases]:
    databases = PgDatabases(pg_template)
    try:
        yield databases
    finally:
        databases.close()


def fresh_sqlite_url(template: Path, directory: Path) -> str:
    path = directory / "state.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def fresh_pg_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty (unmigrated) PostgreSQL database, dropped after the test."""
    require_postgres(request.getfixturevalue("pg_available"))
    name = f"pst_{uuid.uuid4().hex[:16]}"
    run_blocking(_pg_admin(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    yield _pg_url(name)
    run_blocking(_pg_admin(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=DIALECTS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The plain URL of a fresh database at head, isolated from every other test."""
    if request.param == "sqlite":
        yield fresh_sqlite_url(request.getfixturevalue("sqlite_template"), tmp_path)
        return
    databases: PgDatabases = request.getfixturevalue("pg_databases")
    name = databases.take()
    yield _pg_url(name)
    databases.drop(name)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database.connect(db_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, auto_migrate=False)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    """The SDK's in-memory client connected to a server on this test's database."""
    async with Client(build_server(settings)) as connected:
        yield connected
