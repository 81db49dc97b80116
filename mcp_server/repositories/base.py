"""Shared pieces of the repositories: pagination and the session holder."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import Insert, Select, Table, func, insert, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from mcp_server.db.base import Base
from mcp_server.errors import Conflict

T = TypeVar("T")
M = TypeVar("M", bound=Base)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int

    @property
    def has_more(self) -> bool:
        return self.page * self.page_size < self.total


# The constraints a concurrent call can trip without any bug: it took the same unique key first, or removed
# (or had not yet committed) the row this one refers to. SQLite's extended result codes; PostgreSQL's SQLSTATEs.
_RACE_CODES: dict[Any, Literal["unique", "reference"]] = {
    sqlite3.SQLITE_CONSTRAINT_UNIQUE: "unique",
    sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY: "unique",
    sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY: "reference",
    "23505": "unique",  # unique_violation
    "23503": "reference",  # foreign_key_violation
}


def race_kind(exc: IntegrityError) -> Literal["unique", "reference"] | None:
    """What an integrity error says about a concurrent call; None for a violation no race explains (a
    NOT NULL or CHECK failure is a bug, and stays one)."""
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if code is None:
        code = getattr(orig, "sqlstate", None)
    return _RACE_CODES.get(code)


@asynccontextmanager
async def raced(what: str, *, hint: str) -> AsyncIterator[None]:
    """Around a write that a concurrent call can beat: the database keeps the rule, and the caller gets a
    `conflict` naming ``what`` (the unit of work then rolls back, so nothing is written)."""
    try:
        yield
    except IntegrityError as exc:
        kind = race_kind(exc)
        if kind is None:
            raise
        why = "took the same key first" if kind == "unique" else "changed what it refers to first"
        raise Conflict(f"{what}: a concurrent call {why}; nothing was written", hint=hint) from exc


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _insert(self, model: type[M], values: dict[str, Any]) -> M:
        """One new row by a plain INSERT (the ORM's flush costs several times as much for a single row),
        returned as a clean, persistent instance in this session, as if it had been loaded: every column
        is set (given, its Python default, or None), so nothing is ever lazy-loaded."""
        mapper = inspect(model)
        attributes: dict[str, Any] = {}
        row: dict[str, Any] = {}
        for attribute in mapper.column_attrs:
            column = attribute.columns[0]
            if attribute.key in values:
                value = values[attribute.key]
            elif column.default is not None and column.default.is_scalar:
                value = column.default.arg
            elif column.default is not None and column.default.is_callable:
                value = column.default.arg(None)
            elif column.server_default is not None:
                raise ValueError(f"{model.__name__}.{attribute.key}: give it (its value is the database's default)")
            else:
                value = None
            attributes[attribute.key] = row[column.key] = value
        await self.session.execute(_insert_into(mapper.local_table), row)
        instance = model(**attributes)
        make_transient_to_detached(instance)
        self.session.add(instance)
        return instance

    async def _page(self, query: Select[Any], *, page: int, page_size: int) -> Page[Any]:
        total = await self.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
        rows = await self.session.scalars(query.offset((page - 1) * page_size).limit(page_size))
        return Page(items=list(rows), total=int(total or 0), page=page, page_size=page_size)


@cache
def _insert_into(table: Table) -> Insert:
    """One INSERT construct per table, its parameters passed apart: SQLAlchemy computes a statement's cache
    key once per construct, not on every call."""
    return insert(table)
