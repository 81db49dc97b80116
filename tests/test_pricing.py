"""Pricing with genai-prices and the usage rules, without a database."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price

from mcp_server.errors import InvalidArgument
from mcp_server.schemas.cost import UsageIn
from mcp_server.services.pricing import price

AT = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("provider", "model", "prompt", "completion", "cache_read", "cache_write"),
    [
        ("openai", "gpt-4o", 1200, 300, 0, 0),
        ("openai", "gpt-4o-mini", 5000, 100, 4096, 0),
        ("anthropic", "claude-3-5-sonnet-20241022", 10_000, 800, 6000, 2000),
        ("google", "gemini-1.5-flash", 7, 3, 0, 0),
    ],
)
def test_computed_price_equals_genai_prices(
    provider: str, model: str, prompt: int, completion: int, cache_read: int, cache_write: int
) -> None:
    expected = calc_price(
        Usage(
            input_tokens=prompt,
            output_tokens=completion,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        ),
        model,
        provider_id=provider,
        genai_request_timestamp=AT,
    ).total_price
    got = price(
        provider,
        model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        at=AT,
    )
    assert (got.cost_usd, got.source) == (expected, "computed")
    assert expected > 0


def test_cached_tokens_are_part_of_prompt_tokens_and_cost_less() -> None:
    uncached = price("anthropic", "claude-3-5-sonnet-20241022", prompt_tokens=10_000, completion_tokens=0, at=AT)
    read = price(
        "anthropic",
        "claude-3-5-sonnet-20241022",
        prompt_tokens=10_000,
        completion_tokens=0,
        cache_read_tokens=9000,
        at=AT,
    )
    # 10,000 input tokens at $3/MTok; 9,000 of them read from cache at $0.30/MTok instead.
    assert uncached.cost_usd == Decimal("0.03")
    assert read.cost_usd == Decimal("0.003") + Decimal("0.0027")


@pytest.mark.parametrize(("provider", "model"), [("openai", "no-such-model-9"), ("acme-llm", "gpt-4o")])
def test_unknown_provider_or_model_is_unpriced(provider: str, model: str) -> None:
    assert price(provider, model, prompt_tokens=10, completion_tokens=10) == (None, "unpriced", None)


def test_total_tokens_defaults_to_prompt_plus_completion() -> None:
    usage = UsageIn(provider=" OpenAI ", model="gpt-4o", prompt_tokens=10, completion_tokens=5)
    assert usage.total_tokens == 15
    assert usage.provider == "openai"
    assert UsageIn(provider="openai", model="m", prompt_tokens=1, total_tokens=9).total_tokens == 9


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 14}, "total_tokens (14) is smaller"),
        ({"prompt_tokens": 10, "cache_read_tokens": 8, "cache_write_tokens": 3}, "exceed prompt_tokens (10)"),
        ({"prompt_tokens": -1}, "greater than or equal to 0"),
        ({"cost_usd": "-0.01"}, "greater than or equal to 0"),
        ({"inference_time_ms": -5}, "greater than or equal to 0"),
    ],
)
def test_inconsistent_usage_is_an_invalid_argument(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        UsageIn.parse(provider="openai", model="gpt-4o", **fields)
    assert caught.value.code == "invalid_argument"
    assert message in caught.value.message


# Each provider's published per-million-token prices, worked out by hand: the figures genai-prices must
# give, and the rule each cost row names. OpenAI gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60
# output. Google Gemini 2.5 Pro: $1.25 / $10 up to 200k input tokens, $2.50 / $15 above. Anthropic Claude
# Sonnet 4: $3 input, $15 output, cache writes $3.75 (5-minute TTL) and $6 (1-hour TTL).
PUBLISHED = [
    ("openai", "gpt-4o-mini",
     {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000, "cache_read_tokens": 500_000},
     Decimal("0.5") * Decimal("0.15") + Decimal("0.5") * Decimal("0.075") + Decimal("0.60"), None),
    ("google", "gemini-2.5-pro", {"prompt_tokens": 100_000, "completion_tokens": 10_000},
     Decimal("0.1") * Decimal("1.25") + Decimal("0.01") * 10, None),
    ("google", "gemini-2.5-pro", {"prompt_tokens": 300_000, "completion_tokens": 10_000},
     Decimal("0.3") * Decimal("2.50") + Decimal("0.01") * 15, "long-context tier (over 200000 input tokens)"),
    ("anthropic", "claude-sonnet-4-20250514", {"prompt_tokens": 100_000, "completion_tokens": 0,
     "cache_write_tokens": 50_000}, Decimal("0.05") * 3 + Decimal("0.05") * Decimal("3.75"), None),
    ("anthropic", "claude-sonnet-4-20250514", {"prompt_tokens": 100_000, "completion_tokens": 0,
     "cache_write_tokens": 50_000, "cache_write_1h_tokens": 50_000}, Decimal("0.05") * 3 + Decimal("0.05") * 6,
     "50000 cache-write tokens at the one-hour TTL price"),
]  # fmt: skip


@pytest.mark.parametrize(("provider", "model", "counts", "expected", "rule"), PUBLISHED)
def test_three_providers_published_prices_tiers_and_cache_ttls(
    provider: str, model: str, counts: dict[str, int], expected: Decimal, rule: str | None
) -> None:
    got = price(provider, model, **counts, at=datetime(2026, 1, 1, tzinfo=UTC))
    assert got.source == "computed" and got.cost_usd == expected
    assert got.rule is not None and got.rule.startswith(f"priced from the bundled genai-prices data for {provider}/")
    assert rule is None or rule in got.rule
    if rule is None:
        assert "tier" not in got.rule and "one-hour" not in got.rule


def test_the_price_in_force_at_the_calls_time_is_used_and_named() -> None:
    # Mistral raised mistral-medium-latest from $0.40 to $1.50 per million input tokens on 2026-06-16.
    before = price("mistral", "mistral-medium-latest", prompt_tokens=1_000_000, completion_tokens=0,
                   at=datetime(2026, 6, 15, 23, 0, tzinfo=UTC))  # fmt: skip
    after = price("mistral", "mistral-medium-latest", prompt_tokens=1_000_000, completion_tokens=0,
                  at=datetime(2026, 6, 16, 1, 0, tzinfo=UTC))  # fmt: skip
    assert (before.cost_usd, after.cost_usd) == (Decimal("0.4"), Decimal("1.5"))
    assert "price in force from 2026-06-16" in (after.rule or "") and "in force" not in (before.rule or "")


def test_one_hour_cache_writes_cannot_exceed_all_cache_writes() -> None:
    with pytest.raises(InvalidArgument, match="cache_write_1h_tokens"):
        UsageIn.parse(provider="anthropic", model="m", prompt_tokens=10, cache_write_tokens=2, cache_write_1h_tokens=3)
