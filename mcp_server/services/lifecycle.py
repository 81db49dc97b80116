"""Data that lives for months: pruning superseded executions without changing a figure (SPEC §7)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, and_, delete, func, not_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.engine import Database
from mcp_server.db.types import utcnow
from mcp_server.enums import ExecutionStatus
from mcp_server.errors import InvalidArgument
from mcp_server.models import LLMMetrics, ProcessExecution, ProcessState

BATCH = 500  # executions per transaction: the write lock is never held for long
_AGE = re.compile(r"^\s*(\d{1,6})\s*([dh])\s*$")


def parse_age(text: str) -> timedelta:
    """``90d``, ``12h`` or ``0d``."""
    match = _AGE.match(text)
    if match is None:
        raise InvalidArgument(f"age {text!r} is not like 90d, 12h or 0d")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(days=amount) if unit == "d" else timedelta(hours=amount)


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


def _prunable(cutoff: datetime, project_id: uuid.UUID | None) -> Any:
    """Executions that no state points at, not running or pending, created before the cutoff."""
    current = select(ProcessState.current_execution_id).where(ProcessState.current_execution_id.is_not(None))
    conditions = [
        ProcessExecution.created_at < cutoff,
        ProcessExecution.status.not_in((ExecutionStatus.RUNNING.value, ExecutionStatus.PENDING.value)),
        not_(ProcessExecution.id.in_(current)),
    ]
    if project_id is not None:
        conditions.append(ProcessExecution.project_id == project_id)
    return and_(*conditions)


def _data_size() -> Any:
    """What an execution's stored data weighs, roughly (its JSON and text columns)."""
    json_columns = (
        ProcessExecution.input_data,
        ProcessExecution.output_data,
        ProcessExecution.missing_info,
        ProcessExecution.reply,
    )
    total: Any = func.coalesce(func.length(ProcessExecution.reasoning), 0)
    for column in json_columns:
        total = total + func.coalesce(func.length(func.cast(column, Text())), 0)
    return total


async def _batch(session: AsyncSession, cutoff: datetime, project_id: uuid.UUID | None, report: PruneReport) -> int:
    rows = (
        await session.execute(
            select(ProcessExecution.id, ProcessExecution.project_id, ProcessExecution.prompt_version_id, _data_size())
            .where(_prunable(cutoff, project_id))
            .order_by(ProcessExecution.created_at)
            .limit(BATCH)
        )
    ).all()
    if not rows:
        return 0
    ids = [row[0] for row in rows]
    # Cost rows stay, detached: each keeps the prompt version its execution used and still counts as rework.
    detached = 0
    for prompt_version_id in {row[2] for row in rows}:
        chosen = [row[0] for row in rows if row[2] == prompt_version_id]
        result = await session.execute(
            update(LLMMetrics)
            .where(LLMMetrics.execution_id.in_(chosen))
            .values(execution_id=None, detached=True, prompt_version_id=prompt_version_id)
            .execution_options(synchronize_session=False)
        )
        detached += int(getattr(result, "rowcount", 0) or 0)
    await session.execute(delete(ProcessExecution).where(ProcessExecution.id.in_(ids)))
    report.executions += len(ids)
    report.cost_rows_detached += detached
    report.data_bytes += sum(int(row[3] or 0) for row in rows)
    report.project_ids.update(row[1] for row in rows)
    return len(ids)


async def prune(
    db: Database, *, older_than: timedelta, project_id: uuid.UUID | None = None, dry_run: bool = False
) -> PruneReport:
    """Delete superseded executions older than ``older_than`` (never one a state points at, never a running
    one), in batches of BATCH per transaction; their cost rows stay, so every cost figure, the cost of
    rework included, is exactly what it was. With ``dry_run`` only count."""
    report = PruneReport(cutoff=utcnow() - older_than, dry_run=dry_run)
    if dry_run:
        async with db.unit_of_work(write=False) as session:
            totals = select(
                func.count(),
                func.coalesce(func.sum(_data_size()), 0),
                func.count(func.distinct(ProcessExecution.project_id)),
            )
            counted = (await session.execute(totals.where(_prunable(report.cutoff, project_id)))).one()
            report.executions, report.data_bytes = int(counted[0]), int(counted[1])
            report.cost_rows_detached = int(
                await session.scalar(
                    select(func.count())
                    .select_from(LLMMetrics)
                    .where(
                        LLMMetrics.execution_id.in_(
                            select(ProcessExecution.id).where(_prunable(report.cutoff, project_id))
                        )
                    )
                )
                or 0
            )
            report.project_count = int(counted[2])
        return report
    while True:
        async with db.unit_of_work() as session:
            if await _batch(session, report.cutoff, project_id, report) < BATCH:
                break
    return report
