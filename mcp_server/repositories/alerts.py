"""Budget alerts: each threshold a project's spend crossed, kept once per budget period."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from mcp_server.models import BudgetAlert
from mcp_server.repositories.base import Repository

MAX_LISTED_ALERTS = 20


class BudgetAlertRepository(Repository):
    async def record_once(
        self,
        project_id: uuid.UUID,
        *,
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
            .on_conflict_do_nothing(index_elements=["project_id", "scope", "threshold", "period_start"])
            .returning(BudgetAlert.threshold)
        )
        kept = (await self.session.execute(statement)).scalars().all()
        return sorted(int(threshold) for threshold in kept)

    async def recent(self, project_id: uuid.UUID, limit: int = MAX_LISTED_ALERTS) -> list[BudgetAlert]:
        """The project's newest alerts, newest first."""
        query = (
            select(BudgetAlert)
            .where(BudgetAlert.project_id == project_id)
            .order_by(BudgetAlert.crossed_at.desc(), BudgetAlert.threshold.desc())
            .limit(limit)
        )
        return list((await self.session.execute(query)).scalars().all())
