"""Model prices from genai-prices' bundled data: pure, no database, never the network.

Convention (the same as genai-prices' ``input_tokens``): ``prompt_tokens`` counts every input
token, cached ones included; ``cache_read_tokens`` and ``cache_write_tokens`` say how many of
them were read from or written to the prompt cache. genai-prices bills the uncached remainder at
the input price and the cached parts at the model's cache prices (at the input price when the
model has none).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple


class Price(NamedTuple):
    cost_usd: Decimal | None
    source: Literal["computed", "custom", "unpriced"]
    rule: str | None = None  # what priced it, in words (kept on the cost row)


class CustomPrice(NamedTuple):
    """The team's own price, USD per million tokens; cache prices default to the input price."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None


MILLION = Decimal(1_000_000)


def custom_price(
    prices: CustomPrice,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
    cache_write_1h_tokens: int = 0,
) -> Price:
    """The call's cost at the team's own price, exact in Decimal (same convention as genai-prices:
    the uncached part of prompt_tokens at the input price, the cached parts at the cache prices; the team
    sets one cache-write price, which one-hour writes pay too)."""
    read = prices.input_per_mtok if prices.cache_read_per_mtok is None else prices.cache_read_per_mtok
    write = prices.input_per_mtok if prices.cache_write_per_mtok is None else prices.cache_write_per_mtok
    uncached = prompt_tokens - cache_read_tokens - cache_write_tokens
    total = (
        uncached * prices.input_per_mtok
        + cache_read_tokens * read
        + cache_write_tokens * write
        + completion_tokens * prices.output_per_mtok
    )
    return Price(total / MILLION, "custom", "priced at the team's own price for this model")


def price(
    provider: str,
    model: str,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    at: datetime | None = None,
) -> Price:
    """The call's cost, or ``(None, "unpriced")`` when genai-prices knows no such provider or model.

    ``at`` picks the price in force at that moment (prices change over time); default now. One-hour cache
    writes are priced apart from five-minute ones where the data has both; long-context tiers apply by the
    call's input tokens. The rule says which price, tier and TTLs were used.
    """
    # Imported here: genai-prices loads its whole price table (~0.1 s), which start-up need not pay.
    from genai_prices import Usage, calc_price

    counts: dict[str, int] = {
        "input_tokens": prompt_tokens,
        "output_tokens": completion_tokens,
        "cache_read_tokens": cache_read_tokens,
        "cache_write_tokens": cache_write_tokens,
    }
    if cache_write_1h_tokens:
        counts["cache_write_1h_tokens"] = cache_write_1h_tokens
        counts["cache_write_5m_tokens"] = cache_write_tokens - cache_write_1h_tokens
    try:
        calculation = calc_price(Usage(**counts), model, provider_id=provider, genai_request_timestamp=at)
    except LookupError:
        return Price(None, "unpriced")
    return Price(calculation.total_price, "computed", _rule(calculation, prompt_tokens, cache_write_1h_tokens, at))


def _rule(calculation: Any, prompt_tokens: int, one_hour: int, at: datetime | None) -> str:
    """In words: the price table entry, the dated or timed price in force, the tier and the cache TTLs."""
    from genai_prices.types import StartDateConstraint, TieredPrices, TimeOfDateConstraint

    parts = [f"priced from the bundled genai-prices data for {calculation.provider.id}/{calculation.model.id}"]
    chosen = calculation.model_price
    for conditional in calculation.model.prices if isinstance(calculation.model.prices, list) else ():
        if conditional.prices is chosen and isinstance(conditional.constraint, StartDateConstraint):
            parts.append(f"price in force from {conditional.constraint.start_date.isoformat()}")
        elif conditional.prices is chosen and isinstance(conditional.constraint, TimeOfDateConstraint):
            window = f"{conditional.constraint.start_time:%H:%M}-{conditional.constraint.end_time:%H:%M} UTC"
            parts.append(f"time-of-day price ({window})")
    tiers = [
        tier.start
        for value in vars(chosen).values()
        if isinstance(value, TieredPrices)
        for tier in value.tiers
        if prompt_tokens > tier.start
    ]
    if tiers:
        parts.append(f"long-context tier (over {max(tiers)} input tokens)")
    if one_hour:
        parts.append(f"{one_hour} cache-write tokens at the one-hour TTL price")
    if at is not None:
        parts.append(f"prices as of {at.date().isoformat()}")
    return "; ".join(parts)[:300]
