"""Caps per agent and per model (docs/design.md, "Costs and budgets"): a limit inside a project's budget,
judged like it — over the budget's period, with what running executions hold, exactly under concurrency
(read and held under the project's lock) — and refused by name under `block`.

A cap is ``agent:<name>`` (the agent a start, record or report names, by default the MCP client) or
``model:<provider>/<model>`` (the model a cost row names, or a start's ``model``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.types import money_to_units, units_to_money
from mcp_server.errors import InvalidArgument
from mcp_server.repositories import ExecutionRepository, MetricsRepository

MAX_CAPS = 50
MAX_CAP_USD = Decimal(1_000_000_000)
THRESHOLD_RANGE = (1, 1000)  # percent
MAX_THRESHOLDS = 10
DEFAULT_THRESHOLDS = (50, 80, 100)
SYNTAX = '{"agent:<name>": "0.50", "model:<provider>/<model>": "2.00"}'


@dataclass(frozen=True)
class Cap:
    key: str  # as stored: agent:<name> or model:<provider>/<model>
    limit: Decimal
    agent: str | None = None
    provider: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class CapFigures:
    cap: Cap
    spent: Decimal  # in the budget's period
    held: Decimal  # by running executions

    @property
    def left(self) -> Decimal:
        return self.cap.limit - self.spent - self.held


def _parse_key(key: str) -> Cap | None:
    kind, _, rest = key.partition(":")
    if kind == "agent" and 0 < len(rest) <= 200 and rest.strip() == rest:
        return Cap(key, Decimal(0), agent=rest)
    if kind == "model":
        provider, _, model = rest.partition("/")
        if provider and model and provider == provider.strip().lower() and len(provider) <= 50 and len(model) <= 100:
            return Cap(key, Decimal(0), provider=provider, model=model)
    return None


def check(caps: dict[str, object]) -> dict[str, str]:
    """The caps, normalised (amounts as exact decimal strings), or ``invalid_argument`` naming the bad one."""
    if len(caps) > MAX_CAPS:
        raise InvalidArgument(
            f"{len(caps)} caps given; at most {MAX_CAPS}", hint="Cap the agents and models that matter"
        )
    checked: dict[str, str] = {}
    for key, value in caps.items():
        if "\x00" in key or _parse_key(key) is None:
            raise InvalidArgument(
                f"cap {key[:80]!r} is neither agent:<name> nor model:<provider>/<model>",
                hint=f"Caps look like {SYNTAX} (provider in lower case)",
            )
        try:
            usable = isinstance(value, str | int | Decimal) and not isinstance(value, bool)
            amount = Decimal(str(value)) if usable else None
        except InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite() or amount < 0 or amount > MAX_CAP_USD:
            raise InvalidArgument(
                f"cap {key!r} is {str(value)[:40]!r}, not an amount of USD from 0 to {MAX_CAP_USD}",
                hint='Give it as a decimal string, e.g. "0.50"',
            )
        checked[key] = str(units_to_money(money_to_units(amount)))
    return checked


def check_thresholds(thresholds: list[int]) -> list[int]:
    low, high = THRESHOLD_RANGE
    if len(thresholds) > MAX_THRESHOLDS or any(not low <= t <= high for t in thresholds):
        raise InvalidArgument(
            f"alert_thresholds must be at most {MAX_THRESHOLDS} percents from {low} to {high}",
            hint="e.g. [50, 80, 100] (percent of the budget and of each cap)",
        )
    return sorted(set(thresholds))


def model_ref(text: str) -> str:
    """``provider/model`` as costs store it: the provider in lower case; ``invalid_argument`` otherwise."""
    provider, _, model = text.partition("/")
    if not provider.strip() or not model.strip():
        raise InvalidArgument(
            f"model {text[:80]!r} is not provider/model", hint='Name it as costs do, e.g. "openai/gpt-4o-mini"'
        )
    return f"{provider.strip().lower()}/{model.strip()}"


def applicable(caps: dict[str, str] | None, *, agent: str | None, model: str | None) -> list[Cap]:
    """The caps that judge a start or a cost of ``agent`` on ``model`` (``provider/model``)."""
    found = []
    for key, limit in (caps or {}).items():
        cap = _parse_key(key)
        if cap is None:
            continue
        if (cap.agent is not None and cap.agent == agent) or (
            cap.provider is not None and model == f"{cap.provider}/{cap.model}"
        ):
            found.append(Cap(key, Decimal(limit), cap.agent, cap.provider, cap.model))
    return found


async def figures(session: AsyncSession, project_id: uuid.UUID, caps: list[Cap], since: datetime) -> list[CapFigures]:
    """Spend in the period and holds of running executions, for each cap (read under the project's lock)."""
    metrics, executions = MetricsRepository(session), ExecutionRepository(session)
    found = []
    for cap in caps:
        spent = await metrics.spent_since(project_id, since, agent=cap.agent, provider=cap.provider, model=cap.model)
        model = None if cap.provider is None else f"{cap.provider}/{cap.model}"
        held = await executions.held(project_id, agent=cap.agent, model=model)
        found.append(CapFigures(cap, spent, held))
    return found
