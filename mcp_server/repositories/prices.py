"""The team's own model prices (llm_prices)."""

from __future__ import annotations

import unicodedata
from decimal import Decimal
from typing import Any

from sqlalchemy import String, delete, select

from mcp_server.db.types import MONEY_QUANTUM, utcnow
from mcp_server.errors import InvalidArgument
from mcp_server.models import LLMPrice
from mcp_server.repositories.base import Repository
from mcp_server.repositories.revisions import PRICES, RevisionRepository

MAX_PRICE = Decimal(1_000_000)  # USD per million tokens


def check_price(value: Decimal) -> str | None:
    """Why ``value`` cannot be stored as a price exactly (USD per million tokens), or None: a price is
    finite, between 0 and MAX_PRICE, and a whole number of the storage quantum (1e-10 USD), so that what
    is stored is what was given; 1e-300 would be stored as 0, a free model nobody meant."""
    if not value.is_finite() or value < 0 or value > MAX_PRICE:
        return f"must be between 0 and {MAX_PRICE} USD per million tokens"
    stored = value.quantize(MONEY_QUANTUM)  # at most 17 digits here: never past the context's precision
    if stored == 0 and value != 0:
        return f"is below the stored precision ({MONEY_QUANTUM:f} USD) and would be stored as 0"
    if stored != value:
        return f"has more decimal places than are stored ({MONEY_QUANTUM:f} USD); it would be stored as {stored:f}"
    return None


def check_name(kind: str, value: str) -> str | None:
    """Why ``value`` cannot be a provider or model name of a price, or None."""
    column = LLMPrice.__table__.c[kind].type
    limit = column.length if isinstance(column, String) and column.length else 100
    if not value:
        return f"the {kind} name is empty"
    if len(value) > limit:
        return f"the {kind} name is {len(value)} characters long (at most {limit})"
    if any(unicodedata.category(char) == "Cc" for char in value):
        return f"the {kind} name holds a control character"
    return None


class PriceRepository(Repository):
    async def get(self, provider: str, model: str) -> LLMPrice | None:
        return await self.session.get(LLMPrice, (provider, model))

    async def list_all(self) -> list[LLMPrice]:
        return list(await self.session.scalars(select(LLMPrice).order_by(LLMPrice.provider, LLMPrice.model)))

    async def put(self, provider: str, model: str, *, actor: str | None, **prices: Any) -> LLMPrice:
        """Create or replace the price of (provider, model); InvalidArgument for a name or price that
        cannot be stored as given."""
        problems = [check_name("provider", provider), check_name("model", model)]
        problems += [f"{key} {problem}" for key, value in prices.items() if value is not None
                     for problem in [check_price(Decimal(value))] if problem]  # fmt: skip
        if any(problems):
            raise InvalidArgument("; ".join(p for p in problems if p), hint="Nothing was stored")
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
