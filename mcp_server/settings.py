"""Configuration from the environment (prefix ``PIPELINE_STATE_``); never read at import time."""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TOOLSETS = ("projects", "pipeline", "prompts", "costs")
# Presets: a name that stands for some tools of several toolsets. `worker`: what an agent of an automated
# pipeline needs to claim a step, keep its lease, finish or fail it, read a step and report cost.
PRESETS = {
    "worker": (
        "start_execution",
        "renew_lease",
        "record_execution",
        "fail_execution",
        "get_process_state",
        "report_cost",
    ),
}
Toolset = Literal["projects", "pipeline", "prompts", "costs"]


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/pipeline-state-mcp`` or ``~/.local/share/pipeline-state-mcp``; never the cwd."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pipeline-state-mcp"


def to_async_url(url: str) -> str:
    """Turn a plain database URL into the async driver's URL."""
    for prefix, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql+psycopg2://", "postgresql+asyncpg://"),
        ("postgresql+psycopg://", "postgresql+asyncpg://"),
    ):
        if url.startswith(prefix):
            return driver + url[len(prefix) :]
    return url


# What SQLAlchemy's URL parser takes for the password: after "user:", up to the first "@" (so it may
# hold an unescaped "/", ":" or "?"), and a libpq-style `password=` (or `sslpassword=`) query parameter.
_URL_PASSWORD = re.compile(r"^(?P<head>[\w+.-]+://[^:/@]*):[^@]*@")
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&](?:ssl)?password=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and messages)."""
    masked = _URL_PASSWORD.sub(r"\g<head>:***@", url, count=1)
    return _QUERY_PASSWORD.sub(r"\g<key>***", masked)


class Settings(BaseSettings):
    """The server's settings. Build one with ``Settings()`` where the process starts."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_STATE_", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None, description="sqlite:///…, postgresql://… or postgres://…; default: user data dir"
    )
    auto_migrate: bool = True
    toolsets: str = ",".join(TOOLSETS)
    read_only: bool = False
    auth_token: SecretStr | None = None
    # Streamable HTTP sessions (stateful mode): closed after this long idle, and at most this many open.
    http_session_idle_timeout: float = Field(default=1800.0, gt=0, le=7 * 24 * 3600)
    http_max_sessions: int = Field(default=1000, ge=1, le=100_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # A started execution's lease when start_execution gives no lease_seconds (docs/design.md, "Agent teams").
    lease_seconds: int = Field(default=900, ge=1, le=86_400)
    # What a start without reserve_usd holds on a `block` budget when the step has no cost history (its
    # median cost of recent runs otherwise); never more than what is left (docs/design.md, "Costs and budgets").
    default_reserve_usd: Decimal | None = Field(default=None, ge=0, le=1_000_000, decimal_places=10)
    # SQLite: how long a call waits for another process's write lock before it is answered `busy`.
    sqlite_busy_timeout: float = Field(default=30.0, ge=0.1, le=3600.0)
    # Admission: tool calls running at once, and calls waiting for a slot beyond them; past that a call is
    # answered `busy` at once (a client that pipelines thousands of calls gets fast, retryable answers).
    max_running_calls: int = Field(default=12, ge=1, le=1000)
    max_waiting_calls: int = Field(default=500, ge=0, le=100_000)
    # PostgreSQL: connections kept open, and opened beyond them under load (SQLAlchemy's pool).
    pool_size: int = Field(default=5, ge=1, le=1000)
    pool_max_overflow: int = Field(default=10, ge=0, le=1000)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: SecretStr | None) -> SecretStr | None:
        url = "" if value is None else value.get_secret_value().strip()
        if url and not to_async_url(url).startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            scheme = url.partition("://")[0] or url[:20]
            raise ValueError(f"unsupported database {scheme!r}: use sqlite:///path/to/file.db or postgresql://…")
        return value

    @field_validator("toolsets")
    @classmethod
    def _known_toolsets(cls, value: str) -> str:
        names = [part.strip() for part in value.split(",") if part.strip()]
        known = (*TOOLSETS, *PRESETS)
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ValueError(f"unknown toolsets {unknown}; choose from {', '.join(known)}")
        if not names:
            raise ValueError(f"no toolset given; choose from {', '.join(known)}")
        return ",".join(names)

    @model_validator(mode="after")
    def _calls_fit_the_pool(self) -> Settings:
        """On PostgreSQL each running call holds a pooled connection: more running calls than the pool can
        open would wait on the pool and time out instead of queueing in the server."""
        connections = self.pool_size + self.pool_max_overflow
        if not self.is_sqlite and self.max_running_calls > connections:
            raise ValueError(
                f"max_running_calls ({self.max_running_calls}) exceeds the PostgreSQL pool "
                f"(pool_size {self.pool_size} + pool_max_overflow {self.pool_max_overflow}): "
                "lower PIPELINE_STATE_MAX_RUNNING_CALLS or raise the pool"
            )
        return self

    @property
    def enabled_toolsets(self) -> frozenset[str]:
        return frozenset(self.toolsets.split(","))

    @property
    def preset_tools(self) -> frozenset[str]:
        """The tools the enabled presets add (beyond whole toolsets)."""
        return frozenset(tool for name in self.enabled_toolsets & set(PRESETS) for tool in PRESETS[name])

    @property
    def url(self) -> str:
        """The configured URL (plain form), or the default SQLite file."""
        if self.database_url is not None and self.database_url.get_secret_value().strip():
            return self.database_url.get_secret_value().strip()
        return f"sqlite:///{default_data_dir() / 'state.db'}"

    @property
    def async_database_url(self) -> str:
        return to_async_url(self.url)

    @property
    def display_url(self) -> str:
        """The URL as it may be shown to people: the password is masked."""
        return mask_url(self.url)

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.startswith("sqlite")
