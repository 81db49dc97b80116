"""Budget alerts: each threshold a project's or pipeline's spend crossed, kept once per budget period; and
pipeline budgets."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, delete, func, select, text, type_coerce
from sqlalchemy.dialects import postgresql, sqlite

from mcp_server.db.types import units_to_money
from mcp_server.models import BudgetAlert, LLMMetrics, PipelineBudget, Project
from mcp_server.repositories.base import Repository

MAX_LISTED_ALERTS = 20


class BudgetAlertRepository(Repository):
    async def record_once(
        self,
        project_id: uuid.UUID,
        *,
        owner: str | None = None,
        scope: str,
        thresholds: list[int],
        period_start: datetime,
        spent_usd: Decimal,
        budget_usd: Decimal,
        now: datetime,
    ) -> list[int]:
        """Keep each threshold crossed in this period, once: returns those this call was the first to keep
        (one INSERT … ON CONFLICT DO NOTHING: of two concurrent crossings, one reports it)."""
        if not thresholds:
            return []
        rows = [
            {
                "id": uuid.uuid4(),
                "owner": owner or f"project:{project_id}",
                "project_id": project_id,
                "scope": scope,
                "threshold": threshold,
                "period_start": period_start,
                "spent_usd": spent_usd,
                "budget_usd": budget_usd,
                "crossed_at": now,
            }
            for threshold in thresholds
        ]
        dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(BudgetAlert)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["owner", "scope", "threshold", "period_start"])
            .returning(BudgetAlert.threshold)
        )
        kept = (await self.session.execute(statement)).scalars().all()
        return sorted(int(threshold) for threshold in kept)

    async def recent(self, owners: list[str], limit: int = MAX_LISTED_ALERTS) -> list[BudgetAlert]:
        """The newest alerts of these owners (`project:<id>`, `pipeline:<id>`), newest first."""
        query = (
            select(BudgetAlert)
            .where(BudgetAlert.owner.in_(owners))
            .order_by(BudgetAlert.crossed_at.desc(), BudgetAlert.threshold.desc())
            .limit(limit)
        )
        return list((await self.session.execute(query)).scalars().all())


class PipelineBudgetRepository(Repository):
    async def get(self, pipeline_id: str) -> PipelineBudget | None:
        return await self.session.get(PipelineBudget, pipeline_id)

    async def many(self, pipeline_ids: list[str]) -> dict[str, PipelineBudget]:
        if not pipeline_ids:
            return {}
        query = select(PipelineBudget).where(PipelineBudget.pipeline_id.in_(pipeline_ids))
        return {row.pipeline_id: row for row in (await self.session.execute(query)).scalars()}

    async def put(self, pipeline_id: str, *, actor: str | None, **fields: Any) -> PipelineBudget:
        row = await self.get(pipeline_id)
        if row is None:
            row = PipelineBudget(pipeline_id=pipeline_id, created_by=actor, updated_by=actor, **fields)
            self.session.add(row)
        else:
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_by = actor
        await self.session.flush()
        return row

    async def remove(self, pipeline_id: str) -> None:
        await self.session.execute(delete(PipelineBudget).where(PipelineBudget.pipeline_id == pipeline_id))

    async def lock(self, pipeline_id: str) -> None:
        """Serialise the starts of every project of the pipeline until the transaction ends (PostgreSQL: a
        transaction-scoped advisory lock; SQLite: writers already hold the database's write lock)."""
        if self.session.get_bind().dialect.name == "postgresql":
            key = {"key": f"pipeline-budget:{pipeline_id}"}
            await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), key)

    async def spent_since(self, pipeline_id: str, start: datetime) -> Decimal:
        """Exact sum of the priced costs of the pipeline's projects logged at or after ``start``."""
        units = func.sum(type_coerce(LLMMetrics.cost_usd, BigInteger()))
        query = (
            select(units)
            .join(Project, Project.id == LLMMetrics.project_id)
            .where(Project.pipeline_id == pipeline_id, LLMMetrics.created_at >= start)
        )
        return units_to_money(int(await self.session.scalar(query) or 0))

    async def held(self, pipeline_id: str) -> Decimal:
        """What the running executions of the pipeline's projects hold."""
        units = func.sum(type_coerce(Project.reserved_usd, BigInteger()))
        query = select(units).where(Project.pipeline_id == pipeline_id)
        return units_to_money(int(await self.session.scalar(query) or 0))
