"""Shared pieces of the repositories: pagination and the session holder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


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

    async def _page(self, query: Select[Any], *, page: int, page_size: int) -> Page[Any]:
        total = await self.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
        rows = await self.session.scalars(query.offset((page - 1) * page_size).limit(page_size))
        return Page(items=list(rows), total=int(total or 0), page=page, page_size=page_size)
