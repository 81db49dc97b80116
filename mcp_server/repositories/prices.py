"""The team's own model prices (llm_prices)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from mcp_server.db.types import utcnow
from mcp_server.models import LLMPrice
from mcp_server.repositories.base import Repository
from mcp_server.repositories.revisions import PRICES, RevisionRepository


class PriceRepository(Repository):
    async def get(self, provider: str, model: str) -> LLMPrice | None:
        return await self.session.get(LLMPrice, (provider, model))

    async def list_all(self) -> list[LLMPrice]:
        return list(await self.session.scalars(select(LLMPrice).order_by(LLMPrice.provider, LLMPrice.model)))

    async def put(self, provider: str, model: str, *, actor: str | None, **prices: Any) -> LLMPrice:
        """Create or replace the price of (provider, model)."""
        row = await self.get(provider, model)
        if row is None:
            row = LLMPrice(provider=provider, model=model, created_by=actor, **prices)
            self.session.add(row)
        else:
            for key, value in prices.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
        row.updated_by = actor
        await self.session.flush()
        await RevisionRepository(self.session).bump([PRICES])
        return row

    async def remove(self, provider: str, model: str) -> bool:
        result = await self.session.execute(
            delete(LLMPrice).where(LLMPrice.provider == provider, LLMPrice.model == model)
        )
        await RevisionRepository(self.session).bump([PRICES])
        return bool(getattr(result, "rowcount", 0))
