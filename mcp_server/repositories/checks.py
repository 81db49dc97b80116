"""Execution checks: the latest result of each named check of an execution (docs/design.md, "Checks")."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select

from mcp_server.models import ExecutionCheck, ProcessExecution
from mcp_server.repositories.base import Repository, raced


class CheckRow(NamedTuple):
    """One check as replies show it: ``at`` is when this result was recorded."""

    execution_id: uuid.UUID
    name: str
    passed: bool
    details: Any
    agent: str | None
    at: datetime


_COLUMNS = (
    ExecutionCheck.execution_id,
    ExecutionCheck.name,
    ExecutionCheck.passed,
    ExecutionCheck.details,
    ExecutionCheck.agent,
    func.coalesce(ExecutionCheck.updated_at, ExecutionCheck.created_at),
)


class CheckRepository(Repository):
    async def put(
        self,
        execution: ProcessExecution,
        *,
        name: str,
        passed: bool,
        details: Any,
        agent: str | None,
        actor: str | None,
        at: datetime,
    ) -> CheckRow:
        """Record a check of an execution, replacing the earlier result of the same name (one row per
        execution and name). The caller holds the project's lock: no other writer of these rows runs
        meanwhile, and the unique key keeps the rule if one did."""
        found = await self.session.scalar(
            select(ExecutionCheck).where(ExecutionCheck.execution_id == execution.id, ExecutionCheck.name == name)
        )
        if found is None:
            values = {
                "execution_id": execution.id,
                "project_id": execution.project_id,
                "process_id": execution.process_id,
                "name": name,
                "passed": passed,
                "details": details,
                "agent": agent,
                "created_at": at,
                "updated_at": at,
                "created_by": actor,
                "updated_by": actor,
            }
            async with raced(f"check {name!r} of execution {execution.id}", hint="Retry the call"):
                await self._insert(ExecutionCheck, values)
        else:
            found.passed, found.details, found.agent = passed, details, agent
            found.updated_at, found.updated_by = at, actor
            await self.session.flush()
        return CheckRow(execution.id, name, passed, details, agent, at)

    async def of_executions(self, execution_ids: Collection[uuid.UUID]) -> list[CheckRow]:
        """Every check of these executions, by execution and name (one query)."""
        if not execution_ids:
            return []
        query = (
            select(*_COLUMNS)
            .where(ExecutionCheck.execution_id.in_(execution_ids))
            .order_by(ExecutionCheck.execution_id, ExecutionCheck.name)
        )
        return [CheckRow(*row) for row in await self.session.execute(query)]
