"""One map from database and driver errors to the codes agents see: busy, unavailable, not migrated (run
`db upgrade`), everything else internal; logged with the cause's message and never a password; and one
list of error codes that the instructions, docs/tools.md and these tests read."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import pkgutil
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

import mcp_server
from mcp_server import errors
from mcp_server.db.engine import Database
from mcp_server.db.migrate import run_alembic
from mcp_server.errors import Busy, DomainError, NotMigrated, Unavailable, database_error, describe_cause, error_codes
from mcp_server.server import INSTRUCTIONS, build_server
from mcp_server.settings import Settings, to_async_url
from tests.conftest import fresh_sqlite_url
from tests.helpers import call_error, call_ok

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(Path(sys.executable).with_name("pipeline-state-mcp"))
SECRET = "s3cret-Pw-42"
READING_COMMANDS = (
    ("status", "00000000-0000-4000-8000-000000000000"),
    ("costs",),
    ("export", "-o", "bundle.jsonl"),
    ("db", "prune", "--older-than", "0d"),
)


class _Driver(Exception):
    """A driver error as asyncpg raises them: a message and a SQLSTATE."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _wrapped(error: type[Any], orig: BaseException) -> Any:
    return error("SELECT 1", {}, orig)


# --- one list of codes ----------------------------------------------------------------------------------


def test_the_instructions_name_exactly_the_error_codes() -> None:
    listed = re.search(r"Errors start with a stable code \(([^)]*)\)", INSTRUCTIONS)
    assert listed is not None
    assert tuple(part.strip() for part in listed.group(1).split(",")) == error_codes()


def test_docs_tools_md_names_exactly_the_error_codes() -> None:
    text = (ROOT / "docs" / "tools.md").read_text()
    sentence = text[text.index("with one of the codes") : text.index("Null fields are left out")]
    assert tuple(re.findall(r"`([a-z_]+)`", sentence)) == error_codes()


def test_the_list_holds_every_error_class_and_internal_last() -> None:
    codes = error_codes()
    assert len(codes) == len(set(codes))
    assert codes[-1] == "internal"
    assert {"busy", "unavailable", "budget_exceeded", "read_only", "not_found"} <= set(codes)
    defined = {cls.code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, DomainError)}
    assert defined == set(codes)
    assert NotMigrated.code == "unavailable"  # the operator's fix, told in the message; no new code


def test_no_error_class_outside_errors_py_brings_a_code_of_its_own() -> None:
    for module in pkgutil.walk_packages(mcp_server.__path__, "mcp_server."):
        if module.name.startswith(("mcp_server.__main__", "mcp_server.ui.static")):
            continue
        importlib.import_module(module.name)
    pending: list[type[DomainError]] = [DomainError]
    while pending:
        cls = pending.pop()
        assert cls.code in error_codes(), f"{cls.__module__}.{cls.__name__} has code {cls.code!r}: add it to errors.py"
        pending.extend(cls.__subclasses__())


# --- the map, kind by kind -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (_wrapped(OperationalError, sqlite3.OperationalError("database is locked")), Busy),
        (PoolTimeout("QueuePool limit of size 5 overflow 10 reached"), Busy),
        (_wrapped(OperationalError, _Driver("could not serialize access", "40001")), Busy),
        (_wrapped(OperationalError, _Driver("deadlock detected", "40P01")), Busy),
        (_wrapped(OperationalError, sqlite3.OperationalError("no such table: projects")), NotMigrated),
        (_wrapped(OperationalError, sqlite3.OperationalError("no such column: max_attempts")), NotMigrated),
        (_wrapped(OperationalError, sqlite3.OperationalError("table x has no column named y")), NotMigrated),
        (_wrapped(ProgrammingError, _Driver('relation "projects" does not exist', "42P01")), NotMigrated),
        (_wrapped(ProgrammingError, _Driver('column "attempt" does not exist', "42703")), NotMigrated),
        (_wrapped(OperationalError, sqlite3.OperationalError("unable to open database file")), Unavailable),
        (_wrapped(OperationalError, _Driver("the database system is starting up", "57P03")), Unavailable),
        (_wrapped(OperationalError, _Driver("connection failure", "08006")), Unavailable),
        (_wrapped(OperationalError, _Driver("password authentication failed", "28P01")), Unavailable),
        (ConnectionRefusedError(111, "Connect call failed"), Unavailable),
        (TimeoutError(), Unavailable),
    ],
)
def test_each_database_error_maps_to_one_kind(failure: BaseException, expected: type[DomainError]) -> None:
    mapped = database_error(failure)
    assert type(mapped) is expected
    assert "nothing was written" in mapped.render()


@pytest.mark.parametrize(
    "failure",
    [
        _wrapped(IntegrityError, sqlite3.IntegrityError("UNIQUE constraint failed: projects.id")),
        _wrapped(OperationalError, sqlite3.OperationalError("database disk image is malformed")),
        _wrapped(ProgrammingError, _Driver("numeric field overflow", "22003")),
        RuntimeError("a bug"),
    ],
)
def test_anything_else_is_left_to_internal(failure: BaseException) -> None:
    assert database_error(failure) is None


def test_each_kind_tells_the_agent_what_it_can_do() -> None:
    locked = database_error(_wrapped(OperationalError, sqlite3.OperationalError("database is locked")))
    missing = database_error(_wrapped(OperationalError, sqlite3.OperationalError("no such table: projects")))
    down = database_error(ConnectionRefusedError(111, "refused"))
    assert locked is not None and missing is not None and down is not None
    assert locked.render().startswith("busy: ") and "retry" in locked.render()
    assert missing.render().startswith("unavailable: ") and "`pipeline-state-mcp db upgrade`" in missing.render()
    assert "Retrying will not help" in missing.render()
    assert down.render().startswith("unavailable: ") and "Retry in a moment" in down.render()


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://alice:{SECRET}@db.example:5432/app",
        f"postgresql+asyncpg://alice:{SECRET}/with:odd@chars@db.example/app",
        f"postgresql://alice@db.example/app?sslmode=require&password={SECRET}",
    ],
)
def test_describe_cause_masks_every_url_it_quotes(url: str) -> None:
    text = describe_cause(ValueError(f"could not parse {url} as a URL"))
    assert SECRET not in text and "***" in text
    assert text.startswith("ValueError: could not parse ")


def test_describe_cause_names_the_driver_error_and_its_first_line() -> None:
    wrapped = _wrapped(OperationalError, sqlite3.OperationalError("no such table: projects\nmore"))
    assert describe_cause(wrapped) == "OperationalError: no such table: projects"


# --- end to end: unmigrated databases, a locked file, secrets --------------------------------------------


def _empty_sqlite(tmp_path: Path) -> str:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    return f"sqlite:///{path}"


def _with_password(url: str) -> str:
    """The URL with a password (trust authentication ignores it): it must appear nowhere."""
    return make_url(url).set(password=SECRET).render_as_string(hide_password=False)


async def _assert_not_migrated_from_tools(url: str, caplog: pytest.LogCaptureFixture, cause: str) -> None:
    with caplog.at_level(logging.WARNING):
        async with Client(build_server(Settings(database_url=url, auto_migrate=False))) as client:
            for tool, arguments in (("create_project", {"name": "x"}), ("list_projects", {})):
                text = await call_error(client, tool, "unavailable", **arguments)
                assert "`pipeline-state-mcp db upgrade`" in text and "Retrying will not help" in text
                assert "missing: table projects" in text and "needs schema revision" in text
                assert SECRET not in text and "sqlite" not in text.lower() and "127.0.0.1" not in text
    logged = [record.getMessage() for record in caplog.records]
    assert any("is not migrated" in line and cause in line for line in logged), logged
    assert SECRET not in caplog.text


async def test_an_unmigrated_sqlite_file_says_run_db_upgrade(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await _assert_not_migrated_from_tools(_empty_sqlite(tmp_path), caplog, "no such table")


async def test_an_unmigrated_postgresql_database_says_run_db_upgrade(
    fresh_pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _assert_not_migrated_from_tools(_with_password(fresh_pg_database), caplog, "does not exist")


async def test_a_schema_older_than_the_code_says_run_db_upgrade(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    await run_alembic(to_async_url(url), "upgrade", "0005")  # before the lease columns
    with caplog.at_level(logging.WARNING):
        async with Client(build_server(Settings(database_url=url, auto_migrate=False))) as client:
            text = await call_error(client, "list_processes", "unavailable")
    assert "`pipeline-state-mcp db upgrade`" in text
    assert "missing: column process_definitions." in text  # the agent learns what the operator must fix
    assert "no such column" in caplog.text and "is not migrated" in caplog.text


async def test_a_locked_sqlite_file_answers_busy_within_the_busy_timeout(sqlite_template: Path, tmp_path: Path) -> None:
    db_url = fresh_sqlite_url(sqlite_template, tmp_path)
    settings = Settings(database_url=db_url, auto_migrate=False, sqlite_busy_timeout=0.3)
    holder = sqlite3.connect(make_url(db_url).database or "", isolation_level=None)
    try:
        async with Client(build_server(settings)) as client:
            await call_ok(client, "list_projects")  # opened, and reads go on under the lock
            holder.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            text = await call_error(client, "create_project", "busy", name="x")
            assert time.monotonic() - started < 10  # the setting, not the 30 s default
            assert "nothing was written" in text and "retry" in text
            await call_ok(client, "list_projects")
            holder.execute("ROLLBACK")
            await call_ok(client, "create_project", name="x")
    finally:
        holder.close()


# --- the command line ------------------------------------------------------------------------------------


def _run(args: tuple[str, ...], url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_STATE_")}
    env |= {"PIPELINE_STATE_DATABASE_URL": url, "XDG_DATA_HOME": str(cwd / "data")}
    return subprocess.run([SCRIPT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _assert_cli_not_migrated(url: str, shown: str, tmp_path: Path) -> None:
    for args in READING_COMMANDS:
        result = _run(args, url, tmp_path)
        assert result.returncode == 1, (args, result.stderr)
        assert f"the database at {shown} is not migrated" in result.stderr, (args, result.stderr)
        assert "run `pipeline-state-mcp db upgrade`" in result.stderr
        assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_reading_commands_on_an_unmigrated_sqlite_file_say_run_db_upgrade(tmp_path: Path) -> None:
    url = _empty_sqlite(tmp_path)
    _assert_cli_not_migrated(url, url, tmp_path)
    assert not (tmp_path / "bundle.jsonl").exists()
    tables = sqlite3.connect(tmp_path / "empty.db").execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == []  # nothing migrated it behind the operator's back


def test_reading_commands_on_an_unmigrated_postgresql_database_say_run_db_upgrade(
    fresh_pg_database: str, tmp_path: Path
) -> None:
    url = _with_password(fresh_pg_database)
    _assert_cli_not_migrated(url, make_url(url).render_as_string(hide_password=True), tmp_path)


def test_reading_commands_create_no_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nowhere' / 'state.db'}"
    for args in READING_COMMANDS:
        result = _run(args, url, tmp_path)
        assert result.returncode == 1, result.stderr
        assert f"there is no database at {url}" in result.stderr and "db upgrade" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_after_db_upgrade_the_reading_commands_work(tmp_path: Path) -> None:
    url = _empty_sqlite(tmp_path)
    assert _run(("db", "upgrade"), url, tmp_path).returncode == 0
    assert _run(("costs",), url, tmp_path).returncode == 0
    assert asyncio.run(_revision(url)) is not None


async def _revision(url: str) -> str | None:
    from mcp_server.db.engine import create_engine
    from mcp_server.db.migrate import current_revision

    engine = create_engine(url)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


async def test_resources_and_prompts_on_an_unmigrated_database_say_run_db_upgrade(tmp_path: Path) -> None:
    from mcp.shared.exceptions import MCPError

    async with Client(build_server(Settings(database_url=_empty_sqlite(tmp_path), auto_migrate=False))) as client:
        for request in (
            lambda: client.read_resource("pipeline://processes"),
            lambda: client.list_prompts(),
            lambda: client.get_prompt("p", {}),
        ):
            with pytest.raises(MCPError) as caught:
                await request()
            assert str(caught.value).startswith("unavailable: ") and "db upgrade" in str(caught.value)


async def test_a_database_migrated_by_a_newer_release_is_refused_in_words(db_url: str) -> None:
    """An older server on a database a newer release migrated: every tool answers `unavailable` naming the
    revision it does not know and what to do, never Alembic's raw message or `internal`."""
    database = Database.connect(db_url)
    try:
        async with database.unit_of_work() as session:
            await session.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await database.dispose()
    async with Client(build_server(Settings(database_url=db_url, auto_migrate=True))) as client:
        for tool, arguments in (
            ("apply_pipeline", {"processes": [{"process_id": "a", "name": "A"}]}),
            ("list_projects", {}),
        ):
            text_ = await call_error(client, tool, "unavailable", **arguments)
            assert "revision 9999, which this server does not know" in text_ and "newer pipeline-state-mcp" in text_
            assert "Can't locate" not in text_
