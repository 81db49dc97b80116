"""Data that lives for months: pruning superseded executions without changing a figure."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.engine import Database
from mcp_server.db.types import utcnow
from mcp_server.errors import InvalidArgument
from mcp_server.repositories.retention import RetentionRepository

BATCH = 500  # executions per transaction: the write lock is never held for long
_AGE = re.compile(r"^\s*(\d{1,6})\s*([dh])\s*$")
MAX_AGE = timedelta(days=36_500)  # a century: older than any row, and far from the calendar's end


def parse_age(text: str) -> timedelta:
    """``90d``, ``12h`` or ``0d``, at most MAX_AGE."""
    match = _AGE.match(text)
    if match is None:
        raise InvalidArgument(f"age {text!r} is not like 90d, 12h or 0d")
    amount, unit = int(match.group(1)), match.group(2)
    age = timedelta(days=amount) if unit == "d" else timedelta(hours=amount)
    if age > MAX_AGE:
        raise InvalidArgument(f"age {text!r} is more than {MAX_AGE.days}d", hint="Give an age of at most 36500d")
    return age


@dataclass
class PruneReport:
    cutoff: datetime
    dry_run: bool
    executions: int = 0
    cost_rows_detached: int = 0
    data_bytes: int = 0
    project_ids: set[uuid.UUID] = field(default_factory=set)
    project_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "executions_removed": self.executions,
            "cost_rows_detached": self.cost_rows_detached,
            "data_bytes_freed": self.data_bytes,
            "projects": self.project_count or len(self.project_ids),
        }


async def _batch(session: AsyncSession, cutoff: datetime, project_id: uuid.UUID | None, report: PruneReport) -> int:
    repo = RetentionRepository(session)
    executions = await repo.prunable(cutoff, project_id, limit=BATCH)
    if not executions:
        return 0
    report.cost_rows_detached += await repo.delete(executions)
    report.executions += len(executions)
    report.data_bytes += sum(e.data_bytes for e in executions)
    report.project_ids.update(e.project_id for e in executions)
    return len(executions)


async def prune(
    db: Database, *, older_than: timedelta, project_id: uuid.UUID | None = None, dry_run: bool = False
) -> PruneReport:
    """Delete superseded executions older than ``older_than`` (never one a state points at, never a running
    one), in batches of BATCH per transaction; their cost rows stay, so every cost figure, the cost of
    rework included, is exactly what it was. With ``dry_run`` only count."""
    report = PruneReport(cutoff=utcnow() - older_than, dry_run=dry_run)
    if dry_run:
        async with db.unit_of_work(write=False) as session:
            totals = await RetentionRepository(session).totals(report.cutoff, project_id)
        report.executions, report.data_bytes = totals.executions, totals.data_bytes
        report.cost_rows_detached, report.project_count = totals.cost_rows, totals.projects
        return report
    while True:
        async with db.unit_of_work() as session:
            if await _batch(session, report.cutoff, project_id, report) < BATCH:
                break
    return report
