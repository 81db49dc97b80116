"""Shared pieces of the repositories: pagination and the session holder."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

from sqlalchemy import Insert, Select, Table, func, insert, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from mcp_server.db.base import Base

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
