"""Budget periods (docs/design.md, "Costs and budgets"): what span of spend a budget judges.

``none``: the project's whole life. ``day``, ``week`` (ISO, from Monday), ``month``: the current UTC
calendar period, which resets at its end. ``rolling:<N>d`` / ``rolling:<N>h``: the last N days or hours,
which slides (nothing resets; spend leaves the window as it ages). History is never cut: a period only
chooses which cost rows the budget counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mcp_server.errors import InvalidArgument

NONE = "none"
CALENDAR = ("day", "week", "month")
MAX_ROLLING_DAYS = 366
_ROLLING = re.compile(r"rolling:([1-9][0-9]{0,3})([dh])")
# What a budget with no period counts from: every cost row is later.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SYNTAX = "none, day, week, month (UTC calendar) or rolling:<N>d / rolling:<N>h"


@dataclass(frozen=True)
class Window:
    """The span a budget judges at one moment: spend at or after ``start`` counts; ``resets_at`` is when a
    calendar period ends (None for none and rolling windows)."""

    period: str
    start: datetime
    resets_at: datetime | None
    end: datetime  # the moment it was worked out for

    @property
    def bounded(self) -> bool:
        return self.period != NONE

    @property
    def alert_start(self) -> datetime:
        """What an alert is kept once for: the calendar period's start; for a rolling window, the start of
        the window-long slot of time since the epoch it falls in (it slides, so "once" needs a slot)."""
        if self.period == NONE or self.resets_at is not None:
            return self.start
        span = self.end - self.start
        slots = (self.end - EPOCH) // span
        return EPOCH + span * slots


def check(period: str) -> str:
    """The period, normalised, or ``invalid_argument`` naming the forms accepted."""
    text = period.strip().lower()
    if text == NONE or text in CALENDAR:
        return text
    match = _ROLLING.fullmatch(text)
    if match is not None:
        count, unit = int(match.group(1)), match.group(2)
        hours = count * 24 if unit == "d" else count
        if hours <= MAX_ROLLING_DAYS * 24:
            return f"rolling:{count}{unit}"
    raise InvalidArgument(
        f"budget_period {period!r} is not one this server knows",
        hint=f"Use {SYNTAX}; a rolling window is at most {MAX_ROLLING_DAYS} days",
    )


def window(period: str, now: datetime) -> Window:
    """The span ``period`` judges at ``now`` (UTC)."""
    now = now.astimezone(UTC)
    if period == NONE:
        return Window(period, EPOCH, None, now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return Window(period, midnight, midnight + timedelta(days=1), now)
    if period == "week":
        start = midnight - timedelta(days=midnight.weekday())
        return Window(period, start, start + timedelta(days=7), now)
    if period == "month":
        start = midnight.replace(day=1)
        following = (start + timedelta(days=32)).replace(day=1)
        return Window(period, start, following, now)
    match = _ROLLING.fullmatch(period)
    if match is None:  # stored values were checked; an unknown one judges the whole life
        return Window(NONE, EPOCH, None, now)
    count, unit = int(match.group(1)), match.group(2)
    return Window(period, now - (timedelta(days=count) if unit == "d" else timedelta(hours=count)), None, now)
