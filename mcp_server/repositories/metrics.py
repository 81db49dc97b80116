"""LLM usage rows (the summary queries live beside them, in SQL)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from mcp_server.models import LLMMetrics
from mcp_server.repositories.base import Repository


class MetricsRepository(Repository):
    async def get(self, metric_id: uuid.UUID) -> LLMMetrics | None:
        return await self.session.get(LLMMetrics, metric_id)

    async def by_idempotency_key(self, key: str) -> LLMMetrics | None:
        return (await self.session.scalars(select(LLMMetrics).where(LLMMetrics.idempotency_key == key))).first()

    async def create(self, **fields: Any) -> LLMMetrics:
        metric = LLMMetrics(**fields)
        self.session.add(metric)
        await self.session.flush()
        return metric

    async def project_spent(self, project_id: uuid.UUID) -> Decimal:
        """Exact sum of priced costs for one project (integer units summed in SQL)."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(LLMMetrics.cost_usd), 0)).where(LLMMetrics.project_id == project_id)
        )
        return Decimal(0) if total is None else Decimal(total)
