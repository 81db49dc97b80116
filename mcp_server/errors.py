"""Domain errors, each with the stable code that agents see, and the one map from database and driver
errors to them (:func:`database_error`)."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any, ClassVar

from mcp_server.settings import mask_url


class DomainError(Exception):
    """A failure the caller can act on; the tool layer turns it into a tool error with its code."""

    code: ClassVar[str] = "internal"
    # True for the few refusals whose call still keeps what it wrote (a fenced late finish keeps its
    # output for audit and its cost): the unit of work commits before the error reaches the agent.
    keeps_writes: ClassVar[bool] = False

    def __init__(self, message: str, *, hint: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def render(self) -> str:
        """``<code>: <message>. <what to do>`` plus machine-readable details when there are any."""
        text = f"{self.code}: {self.message}"
        if self.hint:
            text += f". {self.hint}"
        if self.details is not None:
            text += "\ndetails: " + json.dumps(self.details, ensure_ascii=False, default=str, sort_keys=True)
        return text

    def __str__(self) -> str:
        return self.render()


class NotFound(DomainError):
    code = "not_found"


class InvalidArgument(DomainError):
    code = "invalid_argument"


class SchemaViolation(DomainError):
    code = "schema_violation"


class NotReady(DomainError):
    code = "not_ready"


class Conflict(DomainError):
    code = "conflict"


class InvalidTransition(DomainError):
    code = "invalid_transition"


class NothingReady(DomainError):
    """A claim found no step it may take: what runs until when, what backs off, what waits on what."""

    code = "nothing_ready"


class LeaseExpired(DomainError):
    """A lease passed and the step was claimed again: a late writer is fenced off."""

    code = "lease_expired"
    keeps_writes = True


class ReadOnly(DomainError):
    code = "read_only"


class BudgetExceeded(DomainError):
    """A start refused under the `block` budget policy: it would pass the project's budget."""

    code = "budget_exceeded"


class Busy(DomainError):
    """Contention, not a fault: the database's lock or the server's call slots stayed taken; nothing was
    written and a retry after a short pause goes through."""

    code = "busy"


class Unavailable(DomainError):
    """The database could not be reached; the call wrote nothing and can be retried."""

    code = "unavailable"


class NotMigrated(Unavailable):
    """The database's schema is missing or older than this code (a table or column is not there): only the
    operator can fix it, by running ``pipeline-state-mcp db upgrade``. Reported as `unavailable`."""


def error_codes() -> tuple[str, ...]:
    """Every code a tool error starts with: one per error class of this module, in the order they are
    defined, then `internal` (an unexpected failure). The server's instructions, docs/tools.md and the
    tests all read this list, so a new DomainError subclass here shows up everywhere."""
    codes: list[str] = []

    def walk(cls: type[DomainError]) -> None:
        for sub in cls.__subclasses__():
            if sub.__module__ == __name__ and sub.code not in codes:
                codes.append(sub.code)
            walk(sub)

    walk(DomainError)
    return (*(code for code in codes if code != DomainError.code), DomainError.code)


# The database error map. Each failure is sorted once, by kind: contention is `busy`, no usable connection
# is `unavailable`, a missing table or column (a database never migrated, or older than this code) is
# NotMigrated; everything else (integrity errors that no service turned into `conflict` included) is left
# to the caller to answer `internal`.

# SQLSTATE classes that mean "no usable connection": connection exception, bad credentials, no such
# database, too many connections, server shutting down or starting (a restart), statement timeout.
UNAVAILABLE_SQLSTATES = ("08", "28", "3D", "53", "57P", "57014")
# Serialization failure, deadlock, lock not available: another transaction won; retrying goes through.
BUSY_SQLSTATES = ("40001", "40P01", "55P03")
# Undefined table, undefined column.
NOT_MIGRATED_SQLSTATES = ("42P01", "42703")
_SQLITE_NOT_MIGRATED = re.compile(r"no such (table|column)|has no column named", re.IGNORECASE)
_SQLITE_BUSY = re.compile(r"database (table )?is locked|database is busy", re.IGNORECASE)
# SQLite's own codes for "no usable file": cannot open, I/O error, disk full, read-only file, closed.
_SQLITE_UNAVAILABLE = re.compile(
    r"unable to open|disk i/o error|disk is full|readonly database|connection is closed|cannot operate on a closed",
    re.IGNORECASE,
)
_URL_IN_TEXT = re.compile(r"[A-Za-z][\w+.-]*://\S+")


def describe_cause(exc: BaseException) -> str:
    """The error's class and first line, for logs and operators: the driver's own error when SQLAlchemy
    wraps one, and every URL in it masked (``mask_url``), so no password is ever shown."""
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    text = f"{type(inner).__name__}: {lines[0] if lines else ''}".rstrip(": ")[:300]
    return _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), text)


def _sqlstate(exc: BaseException) -> str:
    for candidate in (getattr(exc, "orig", None), exc):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return ""


def database_error(exc: BaseException) -> DomainError | None:
    """The DomainError a database or driver failure is answered with, or None for anything else (the
    caller answers `internal`). Every message says that nothing was written and what the agent can do."""
    kind = _kind(exc)
    if kind == "busy":
        return Busy(
            "the database is busy (another writer held its lock past the busy timeout); nothing was written",
            hint="Back off (wait a second or two) and retry",
        )
    if kind == "not_migrated":
        missing = _missing_object(exc)
        return NotMigrated(
            "the database's schema is not migrated (a table or column this server uses is missing"
            + (f": {missing}" if missing else "")
            + f"; this server needs schema revision {_schema_head()}); nothing was written",
            hint="Retrying will not help: ask the operator to run `pipeline-state-mcp db upgrade` "
            "(or to start the server with PIPELINE_STATE_AUTO_MIGRATE=true)",
        )
    if kind == "unavailable":
        return Unavailable("the database could not be reached; nothing was written", hint="Retry in a moment")
    return None


# What SQLite and PostgreSQL name as missing: a table or column name, never data or a secret.
_MISSING = re.compile(r"no such (table|column): ([\w.]{1,120})|(relation|column) \"?([\w.]{1,120})\"? does not exist")


def _missing_object(exc: BaseException) -> str | None:
    """``table x`` or ``column t.c`` when the driver's message names what is missing."""
    for candidate in (getattr(exc, "orig", None), exc):
        found = _MISSING.search(str(candidate or ""))
        if found is not None:
            kind = found.group(1) or ("table" if found.group(3) == "relation" else "column")
            return f"{kind} {found.group(2) or found.group(4)}"
    return None


def _schema_head() -> str:
    from mcp_server.db.migrate import SCHEMA_HEAD  # loaded by then: a database call failed

    return SCHEMA_HEAD


def _kind(exc: BaseException) -> str | None:
    """``busy``, ``unavailable``, ``not_migrated`` or None."""
    from sqlalchemy.exc import DBAPIError, IntegrityError  # loaded by then: a database call failed
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, PoolTimeout):  # no pooled connection came free in time
        return "busy"
    if isinstance(exc, IntegrityError):
        return None
    state = _sqlstate(exc)
    if state:
        if state.startswith(NOT_MIGRATED_SQLSTATES):
            return "not_migrated"
        if state.startswith(BUSY_SQLSTATES):
            return "busy"
        if state.startswith(UNAVAILABLE_SQLSTATES):
            return "unavailable"
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "unavailable"
    inner = getattr(exc, "orig", None) or exc
    message = str(inner)
    if isinstance(inner, sqlite3.Error):
        if _SQLITE_BUSY.search(message):
            return "busy"
        if _SQLITE_NOT_MIGRATED.search(message):
            return "not_migrated"
        return "unavailable" if _SQLITE_UNAVAILABLE.search(message) else None
    if isinstance(inner, OSError):  # refused, reset, timed out (ConnectionError and TimeoutError included)
        return "unavailable"
    # asyncpg's own connection errors (closed connection, protocol) carry no SQLSTATE.
    return "unavailable" if type(inner).__module__.startswith("asyncpg") and not state else None
