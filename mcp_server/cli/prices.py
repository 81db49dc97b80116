"""``pipeline-state-mcp prices set|list|unset``: the team's own model prices, stored in the database.

A custom price (USD per million tokens) takes precedence over genai-prices, also for a model
genai-prices knows; rows priced with it get ``cost_source: "custom"``. Every server sharing the
database uses it from its next priced call.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

from mcp_server.settings import Settings

PRICES = ("input", "output", "cache_read", "cache_write")


def _usd(text: str) -> Decimal:
    from mcp_server.repositories.prices import check_price

    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a decimal number of USD") from None
    problem = check_price(value)
    if problem:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} {problem}")
    return value


def add_parsers(commands: Any) -> None:
    prices = commands.add_parser("prices", help="the team's own model prices (USD per million tokens)")
    actions = prices.add_subparsers(dest="action", required=True)
    put = actions.add_parser("set", help="set the price of a provider's model (replaces genai-prices for it)")
    put.add_argument("provider")
    put.add_argument("model")
    put.add_argument("--input", type=_usd, required=True, help="USD per million input tokens")
    put.add_argument("--output", type=_usd, required=True, help="USD per million output tokens")
    put.add_argument("--cache-read", type=_usd, help="USD per million cache-read tokens (default: --input)")
    put.add_argument("--cache-write", type=_usd, help="USD per million cache-write tokens (default: --input)")
    listing = actions.add_parser("list", help="the custom prices and the genai-prices data in use")
    listing.add_argument("--json", action="store_true")
    unset = actions.add_parser("unset", help="remove a custom price (genai-prices applies again)")
    unset.add_argument("provider")
    unset.add_argument("model")


def _row(price: Any) -> dict[str, Any]:
    return {
        "provider": price.provider,
        "model": price.model,
        **{f"{name}_per_mtok": _text(getattr(price, f"{name}_per_mtok")) for name in PRICES},
        "updated_by": price.updated_by,
    }


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


async def _run(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from mcp_server.db.engine import Database
    from mcp_server.db.migrate import upgrade_to_head
    from mcp_server.repositories import PriceRepository

    provider = getattr(args, "provider", "").strip().lower()  # as usage is stored: provider in lower case
    model = getattr(args, "model", "").strip()
    db = Database.connect(settings.url)
    try:
        if settings.auto_migrate:
            await upgrade_to_head(settings.async_database_url, engine=db.engine)
        async with db.unit_of_work(write=args.action != "list") as session:
            repo = PriceRepository(session)
            if args.action == "set":
                row = await repo.put(
                    provider,
                    model,
                    actor="pipeline-state-mcp cli",
                    **{f"{name}_per_mtok": getattr(args, name) for name in PRICES},
                )
                return {"set": _row(row)}
            if args.action == "unset":
                return {"removed": await repo.remove(provider, model), "provider": provider, "model": model}
            return {"prices": [_row(row) for row in await repo.list_all()], "genai_prices": _genai_prices_version()}
    finally:
        await db.dispose()


def _genai_prices_version() -> str:
    from importlib.metadata import version

    return version("genai-prices")


def run_prices(settings: Settings, args: argparse.Namespace) -> int:
    import anyio

    from mcp_server.cli.tables import visible
    from mcp_server.errors import DomainError

    try:
        result = anyio.run(_run, settings, args)
    except DomainError as exc:
        sys.stderr.write(visible(exc.render(), keep="\n") + "\n")
        return 2
    if args.action == "list" and not args.json:
        _print_prices(result)
        return 0
    if args.action == "unset" and not result["removed"]:
        sys.stderr.write(visible(f"no custom price for {result['provider']} {result['model']}") + "\n")
        return 1
    sys.stdout.write(json.dumps(result, indent=2) + "\n")  # ASCII: every control character escaped
    return 0


def _print_prices(result: dict[str, Any]) -> None:
    """The prices as a table; names (anyone's) as rich Text: never markup, never control characters."""
    from rich.console import Console
    from rich.table import Table

    from mcp_server.cli.tables import text

    table = Table(title="custom prices (USD per million tokens)")
    for column in ("provider", "model", "input", "output", "cache read", "cache write", "set by"):
        table.add_column(column)
    for row in result["prices"]:
        table.add_row(
            text(row["provider"]),
            text(row["model"]),
            *(text(row[f"{name}_per_mtok"] or "= input") for name in PRICES),
            text(row["updated_by"] or ""),
        )
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    console.print(text(f"other models: genai-prices {result['genai_prices']} (bundled data, never fetched)"))
