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
