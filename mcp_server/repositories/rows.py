"""Whole rows of any table, as moving data between databases needs them (export, import, db copy)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from sqlalchemy import Row, Table, and_, func, insert, or_, select

from mcp_server.models import LLMPrice, ProcessDefinition, Project
from mcp_server.repositories import revisions
from mcp_server.repositories.base import Repository
from mcp_server.repositories.revisions import RevisionRepository

CHUNK = 500  # rows per statement (bound parameters stay well under every driver's limit)


class RowRepository(Repository):
    async def projects(self, ids: Sequence[uuid.UUID], pipeline_id: str | None) -> list[Row[Any]]:
        """The projects with these ids (every project when none is given), of this pipeline if given."""
        table = Project.__table__
        query = select(table)
        if ids:
            query = query.where(table.c.id.in_(list(ids)))
        if pipeline_id is not None:
            query = query.where(table.c.pipeline_id == pipeline_id)
        return list(await self.session.execute(query))

    async def where_in(self, table: Table, column: str, values: Iterable[Any]) -> list[Row[Any]]:
        chosen = list(values)
        if not chosen:
            return []
        rows: list[Row[Any]] = []
        for start in range(0, len(chosen), CHUNK):
            query = select(table).where(table.c[column].in_(chosen[start : start + CHUNK]))
            rows += list(await self.session.execute(query))
        return rows

    async def by_keys(self, table: Table, keys: Sequence[dict[str, Any]]) -> list[Row[Any]]:
        """The rows whose primary key is one of ``keys`` (column name → value)."""
        rows: list[Row[Any]] = []
        for start in range(0, len(keys), CHUNK):
            match = or_(
                *(and_(*(table.c[name] == value for name, value in key.items())) for key in keys[start : start + CHUNK])
            )
            rows += list(await self.session.execute(select(table).where(match)))
        return rows

    async def insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert the rows; a pipeline's catalogue or the prices written here get new change tokens, as
        every other writer of them gives (servers keep them in memory: services.catalogue)."""
        for start in range(0, len(rows), CHUNK):
            await self.session.execute(insert(table), rows[start : start + CHUNK])
        changed: set[str] = set()
        if table.name == ProcessDefinition.__tablename__:
            changed = {revisions.catalogue(row["pipeline_id"]) for row in rows}
        elif table.name == LLMPrice.__tablename__ and rows:
            changed = {revisions.PRICES}
        await RevisionRepository(self.session).bump(changed)

    async def count(self, table: Table) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(table)) or 0)

    async def stream(self, table: Table, *, batch: int) -> AsyncIterator[list[dict[str, Any]]]:
        """Every row of the table in primary-key order, ``batch`` at a time."""
        result = await self.session.stream(select(table).order_by(*table.primary_key.columns))
        async for chunk in result.partitions(batch):
            yield [dict(row._mapping) for row in chunk]

    async def values(self, *columns: Any) -> list[Row[Any]]:
        """These columns of every row (the checks after a copy)."""
        return list(await self.session.execute(select(*columns)))
