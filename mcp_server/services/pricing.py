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
    source: Literal["computed", "unpriced"]


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
