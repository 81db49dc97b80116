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
from typing import Literal, NamedTuple


class Price(NamedTuple):
    cost_usd: Decimal | None
    source: Literal["computed", "custom", "unpriced"]


class CustomPrice(NamedTuple):
    """The team's own price, USD per million tokens; cache prices default to the input price."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None


MILLION = Decimal(1_000_000)


def custom_price(
    prices: CustomPrice, *, prompt_tokens: int, completion_tokens: int, cache_read_tokens: int, cache_write_tokens: int
) -> Price:
    """The call's cost at the team's own price, exact in Decimal (same convention as genai-prices:
    the uncached part of prompt_tokens at the input price, the cached parts at the cache prices)."""
    read = prices.input_per_mtok if prices.cache_read_per_mtok is None else prices.cache_read_per_mtok
    write = prices.input_per_mtok if prices.cache_write_per_mtok is None else prices.cache_write_per_mtok
    uncached = prompt_tokens - cache_read_tokens - cache_write_tokens
    total = (
        uncached * prices.input_per_mtok
        + cache_read_tokens * read
        + cache_write_tokens * write
        + completion_tokens * prices.output_per_mtok
    )
    return Price(total / MILLION, "custom")


def price(
    provider: str,
    model: str,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    at: datetime | None = None,
) -> Price:
    """The call's cost, or ``(None, "unpriced")`` when genai-prices knows no such provider or model.

    ``at`` picks the price in force at that moment (prices change over time); default now.
    """
    # Imported here: genai-prices loads its whole price table (~0.1 s), which start-up need not pay.
    from genai_prices import Usage, calc_price

    usage = Usage(
        input_tokens=prompt_tokens,
        output_tokens=completion_tokens,
        cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens,
    )
    try:
        calculation = calc_price(usage, model, provider_id=provider, genai_request_timestamp=at)
    except LookupError:
        return Price(None, "unpriced")
    return Price(calculation.total_price, "computed")
