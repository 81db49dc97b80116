"""Retention: the executions `db prune` may delete, and the detaching of their cost rows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Text, and_, delete, exists, func, not_, select, update
from sqlalchemy.orm import aliased

from mcp_server.enums import ExecutionStatus, StateName
from mcp_server.models import ExecutionCheck, LLMMetrics, ProcessExecution, ProcessState
from mcp_server.repositories.base import Repository


class Prunable(NamedTuple):
    id: uuid.UUID
    project_id: uuid.UUID
    prompt_version_id: uuid.UUID | None
    data_bytes: int


class PrunableTotals(NamedTuple):
    executions: int
    data_bytes: int
    projects: int
    cost_rows: int


def _explains_a_failure() -> Any:
    """The execution is the latest failure of a step whose state is ``failed`` now: its error message is the
    only record of why, so it stays as long as the state does."""
    later = aliased(ProcessExecution)
    failed_state = exists().where(
        ProcessState.project_id == ProcessExecution.project_id,
        ProcessState.process_id == ProcessExecution.process_id,
        ProcessState.state == StateName.FAILED.value,
    )
    later_failure = exists().where(
        later.project_id == ProcessExecution.project_id,
        later.process_id == ProcessExecution.process_id,
        later.status == ExecutionStatus.FAILED.value,
        later.completed_at > ProcessExecution.completed_at,
    )
    return and_(ProcessExecution.status == ExecutionStatus.FAILED.value, failed_state, not_(later_failure))


def _prunable(cutoff: datetime, project_id: uuid.UUID | None) -> Any:
    """Executions that no state points at, not running or pending, not the one that explains a step's
    current failure, created before the cutoff."""
    current = select(ProcessState.current_execution_id).where(ProcessState.current_execution_id.is_not(None))
    conditions = [
        ProcessExecution.created_at < cutoff,
        ProcessExecution.status.not_in((ExecutionStatus.RUNNING.value, ExecutionStatus.PENDING.value)),
        not_(ProcessExecution.id.in_(current)),
        not_(_explains_a_failure()),
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


class RetentionRepository(Repository):
    async def prunable(self, cutoff: datetime, project_id: uuid.UUID | None, *, limit: int) -> list[Prunable]:
        """The oldest ``limit`` prunable executions."""
        query = (
            select(ProcessExecution.id, ProcessExecution.project_id, ProcessExecution.prompt_version_id, _data_size())
            .where(_prunable(cutoff, project_id))
            .order_by(ProcessExecution.created_at)
            .limit(limit)
        )
        return [Prunable(row[0], row[1], row[2], int(row[3] or 0)) for row in await self.session.execute(query)]

    async def totals(self, cutoff: datetime, project_id: uuid.UUID | None) -> PrunableTotals:
        """What pruning would remove: executions, their data, projects touched, cost rows detached."""
        counted = (
            await self.session.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(_data_size()), 0),
                    func.count(func.distinct(ProcessExecution.project_id)),
                ).where(_prunable(cutoff, project_id))
            )
        ).one()
        linked = select(ProcessExecution.id).where(_prunable(cutoff, project_id))
        cost_rows = await self.session.scalar(
            select(func.count()).select_from(LLMMetrics).where(LLMMetrics.execution_id.in_(linked))
        )
        return PrunableTotals(int(counted[0]), int(counted[1]), int(counted[2]), int(cost_rows or 0))

    async def delete(self, executions: list[Prunable]) -> int:
        """Delete the executions and their checks; their cost rows stay, detached, each keeping the prompt
        version its execution used (it still counts as rework). Returns how many cost rows were detached."""
        detached = 0
        for prompt_version_id in {execution.prompt_version_id for execution in executions}:
            chosen = [e.id for e in executions if e.prompt_version_id == prompt_version_id]
            result = await self.session.execute(
                update(LLMMetrics)
                .where(LLMMetrics.execution_id.in_(chosen))
                .values(execution_id=None, detached=True, prompt_version_id=prompt_version_id)
                .execution_options(synchronize_session=False)
            )
            detached += int(getattr(result, "rowcount", 0) or 0)
        chosen_ids = [e.id for e in executions]
        await self.session.execute(delete(ExecutionCheck).where(ExecutionCheck.execution_id.in_(chosen_ids)))
        await self.session.execute(delete(ProcessExecution).where(ProcessExecution.id.in_(chosen_ids)))
        return detached
