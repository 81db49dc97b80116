from pathlib import Path

import pytest
from pydantic import ValidationError

from mcp_server.settings import Settings, mask_url, to_async_url


def test_default_database_is_in_the_user_data_dir_not_the_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PIPELINE_STATE_DATABASE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings()
    assert settings.url == f"sqlite:///{tmp_path}/pipeline-state-mcp/state.db"
    assert settings.async_database_url.startswith("sqlite+aiosqlite:///")


def test_without_xdg_the_default_is_under_local_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_STATE_DATABASE_URL", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert Settings().url == f"sqlite:///{Path.home()}/.local/share/pipeline-state-mcp/state.db"


def test_plain_database_url_is_deliberately_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_STATE_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone-else/app")
    assert Settings().url.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("plain", "converted"),
    [
        ("sqlite:///tmp/x.db", "sqlite+aiosqlite:///tmp/x.db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_urls_are_converted_to_async_drivers(plain: str, converted: str) -> None:
    assert to_async_url(plain) == converted


def test_password_is_masked_and_not_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_STATE_DATABASE_URL", "postgresql://alice:s3cr3t-pw@db.example:5432/app")
    settings = Settings()
    assert settings.display_url == "postgresql://alice:***@db.example:5432/app"
    assert "s3cr3t-pw" not in repr(settings)
    assert "s3cr3t-pw" not in str(settings)
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_toolsets_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_STATE_TOOLSETS", "projects, costs")
    assert Settings().enabled_toolsets == {"projects", "costs"}
    monkeypatch.setenv("PIPELINE_STATE_TOOLSETS", "projects,bogus")
    with pytest.raises(ValidationError, match="bogus"):
        Settings()


def test_booleans_and_log_level_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_STATE_READ_ONLY", "true")
    monkeypatch.setenv("PIPELINE_STATE_AUTO_MIGRATE", "0")
    monkeypatch.setenv("PIPELINE_STATE_LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.read_only is True
    assert settings.auto_migrate is False
    assert settings.log_level == "DEBUG"


def test_an_unsupported_database_url_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_STATE_DATABASE_URL", "mysql://root:pw@localhost/db")
    with pytest.raises(ValidationError, match="unsupported database 'mysql'") as caught:
        Settings()
    assert caught.value.errors(include_input=False)[0]["loc"] == ("database_url",)


def test_the_cli_reports_a_bad_setting_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mcp_server.cli.main import main

    monkeypatch.setenv("PIPELINE_STATE_DATABASE_URL", "mysql://root:s3cret@localhost/db")
    assert main(["db", "current"]) == 2
    err = capsys.readouterr().err
    assert "PIPELINE_STATE_DATABASE_URL" in err and "unsupported database" in err
    assert "s3cret" not in err


def test_the_knobs_have_their_defaults_and_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.sqlite_busy_timeout, defaults.max_running_calls, defaults.max_waiting_calls) == (30.0, 12, 500)
    assert (defaults.pool_size, defaults.pool_max_overflow) == (5, 10)
    for name, value in (
        ("SQLITE_BUSY_TIMEOUT", "2.5"),
        ("MAX_RUNNING_CALLS", "4"),
        ("MAX_WAITING_CALLS", "0"),
        ("POOL_SIZE", "3"),
        ("POOL_MAX_OVERFLOW", "1"),
    ):
        monkeypatch.setenv(f"PIPELINE_STATE_{name}", value)
    settings = Settings()
    assert (settings.sqlite_busy_timeout, settings.max_running_calls, settings.max_waiting_calls) == (2.5, 4, 0)
    assert (settings.pool_size, settings.pool_max_overflow) == (3, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sqlite_busy_timeout", 0),
        ("sqlite_busy_timeout", 3601),
        ("max_running_calls", 0),
        ("max_running_calls", 1001),
        ("max_waiting_calls", -1),
        ("pool_size", 0),
        ("pool_max_overflow", -1),
    ],
)
def test_the_knobs_are_validated(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**{field: value})
    assert caught.value.errors()[0]["loc"] == (field,)


def test_running_calls_must_fit_the_postgresql_pool() -> None:
    pg = "postgresql://u@127.0.0.1/db"
    with pytest.raises(ValidationError, match="exceeds the PostgreSQL pool"):
        Settings(database_url=pg, pool_size=2, pool_max_overflow=1, max_running_calls=4)
    assert Settings(database_url=pg, pool_size=2, pool_max_overflow=2, max_running_calls=4).max_running_calls == 4
    # SQLite has no such pool: the same numbers are fine there.
    assert Settings(database_url="sqlite:///x.db", pool_size=2, pool_max_overflow=1, max_running_calls=4)


def test_the_cli_reports_a_check_across_settings_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mcp_server.cli.main import main

    monkeypatch.setenv("PIPELINE_STATE_DATABASE_URL", "postgresql://u:s3cret@127.0.0.1/db")
    monkeypatch.setenv("PIPELINE_STATE_POOL_SIZE", "1")
    monkeypatch.setenv("PIPELINE_STATE_POOL_MAX_OVERFLOW", "0")
    assert main(["db", "current"]) == 2
    err = capsys.readouterr().err
    assert "PIPELINE_STATE_MAX_RUNNING_CALLS" in err and "s3cret" not in err
    assert "PIPELINE_STATE_:" not in err


def test_the_pool_settings_reach_the_postgresql_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp_server.db import engine

    seen: dict[str, object] = {}
    real = engine.create_async_engine

    def spy(url: object, **options: object) -> object:
        seen.update(options)
        return real(url, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "create_async_engine", spy)
    settings = Settings(database_url="postgresql://u@127.0.0.1/db", pool_size=7, pool_max_overflow=5)
    database = engine.Database.from_settings(settings)
    assert (seen["pool_size"], seen["max_overflow"]) == (7, 5)
    assert database.engine.pool.size() == 7  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_the_busy_timeout_reaches_sqlite(tmp_path: Path) -> None:
    from mcp_server.db.engine import Database

    database = Database.from_settings(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", sqlite_busy_timeout=1.25))
    try:
        async with database.engine.connect() as connection:
            assert (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 1250
    finally:
        await database.dispose()
    # Callers without settings keep the default.
    database = Database.connect(f"sqlite:///{tmp_path / 'y.db'}")
    try:
        async with database.engine.connect() as connection:
            assert (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 30_000
    finally:
        await database.dispose()


@pytest.mark.anyio
async def test_the_admission_limits_reach_the_server(tmp_path: Path) -> None:
    import anyio
    from mcp import Client

    from mcp_server.server import build_server

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", max_running_calls=1, max_waiting_calls=0)
    server = build_server(settings)
    assert (server.max_running_calls, server.max_waiting_calls) == (1, 0)
    entered, release = anyio.Event(), anyio.Event()

    async def hold() -> str:
        """Holds the only slot until released."""
        entered.set()
        await release.wait()
        return "done"

    server.add_tool(hold)
    async with Client(server) as client, anyio.create_task_group() as group:
        group.start_soon(client.call_tool, "hold", {})
        with anyio.fail_after(20):
            await entered.wait()
        with anyio.fail_after(20):
            refused = await client.call_tool("list_projects", {})
        assert refused.is_error
        assert refused.content[0].text.startswith("Error executing tool list_projects: busy: ")  # type: ignore[union-attr]
        release.set()
    async with Client(build_server(settings)) as client:
        assert not (await client.call_tool("list_projects", {})).is_error
