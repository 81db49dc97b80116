"""Checks that gate downstream steps (docs/design.md, "Checks"): record_check stores the latest result of
a named check of a finished execution; the required checks of a step's current execution hold the steps
that depend on it until they pass (the rules are ``rules.verdict`` and ``rules.check_blockers``)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.types import utcnow
from mcp_server.errors import InvalidTransition, NotFound
from mcp_server.models import ExecutionStatus
from mcp_server.repositories import ExecutionRepository
from mcp_server.repositories.checks import CheckRepository, CheckRow
from mcp_server.schemas.pipeline import MAX_LISTED, CheckOut, CheckReply
from mcp_server.services import leases, pipeline_state, rules
from mcp_server.services.pipeline_state import ProjectPipeline
from mcp_server.services.rules import State

UNFINISHED = (ExecutionStatus.RUNNING.value, ExecutionStatus.PENDING.value)


def check_out(check: CheckRow) -> CheckOut:
    return CheckOut(name=check.name, passed=check.passed, details=check.details, agent=check.agent, at=check.at)


async def of_execution(session: AsyncSession, execution_id: uuid.UUID) -> list[CheckOut]:
    """Every check of one execution, by name."""
    return [check_out(check) for check in await CheckRepository(session).of_executions([execution_id])]


async def record(
    session: AsyncSession,
    *,
    execution_id: uuid.UUID,
    name: str,
    passed: bool,
    details: Any | None,
    agent: str | None,
    actor: str | None,
) -> CheckReply:
    """Record (or replace) a check of a finished execution, under its project's lock like every writer of
    the project's steps. The execution is touched too: its change token moves, and PostgreSQL notifies
    the project's watchers (migration 0007's trigger), so live views show the check."""
    executions = ExecutionRepository(session)
    found = await executions.get(execution_id)
    if found is None:
        raise NotFound(
            f"execution {execution_id} does not exist", hint="Use the id record_execution or list_executions gave"
        )
    pipeline = await pipeline_state.load(session, found.project_id, lock=True, around=found.process_id)
    await leases.expire_due(session, pipeline)
    await session.refresh(found)  # re-read under the lock: another call may have finished it
    if found.status in UNFINISHED:
        raise InvalidTransition(
            f"execution {execution_id} is still {found.status}: only a finished execution can be checked",
            hint="Check it once record_execution has finished it",
        )
    now = utcnow()
    check = await CheckRepository(session).put(
        found, name=name, passed=passed, details=details, agent=agent or actor, actor=actor, at=now
    )
    await executions.update(found, updated_by=actor, updated_at=now)
    return await _reply(session, pipeline, found.process_id, found.id, check)


async def _reply(
    session: AsyncSession, pipeline: ProjectPipeline, process_id: str, execution_id: uuid.UUID, check: CheckRow
) -> CheckReply:
    """What the check did: whether it is of the step's current execution (only those gate), and then the
    dependants it lets run and those still held by checks."""
    row = pipeline.rows.get(process_id)
    state = pipeline.state(process_id)
    if row is None or row.current_execution_id != execution_id:
        gates_nothing = f"not the current execution of {process_id!r}: this check gates nothing"
        return CheckReply(check=check_out(check), current=False, state=state, note=gates_nothing)
    node = pipeline.definitions.get(process_id)
    note: str | None = None
    if node is None or check.name not in (node.required_checks or ()):
        note = f"{check.name!r} is not a required check of {process_id!r}: it is kept, and gates nothing"
    released = await pipeline_state.runnable_dependants(session, pipeline, process_id)
    holds = pipeline.verdicts()
    states = pipeline.states()
    held = [
        pid
        for pid in pipeline.catalogue.dependents.get(process_id, [])
        if pid not in released
        and not rules.blockers(pipeline.graph, states, pid)
        and rules.check_blockers(pipeline.graph, holds, pid)
        and states.get(pid, State.EMPTY) not in (State.COMPLETED, State.RUNNING)
    ]
    return CheckReply(
        check=check_out(check),
        current=True,
        state=state,
        released=released[:MAX_LISTED] or None,
        held=sorted(held, key=pipeline.position.__getitem__)[:MAX_LISTED] or None,
        note=note,
    )
