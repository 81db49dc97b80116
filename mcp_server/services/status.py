"""Read models: one process's state in detail, and the whole pipeline of a project."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.types import utcnow
from mcp_server.models import ProcessExecution
from mcp_server.repositories import ExecutionRepository
from mcp_server.schemas.pipeline import (
    DEFAULT_STATUS_PAGE,
    MAX_BLOCKERS,
    MAX_LISTED,
    DependencyState,
    PipelineStatus,
    ProcessStateDetail,
    ProcessStatus,
)
from mcp_server.services import costs, leases, pipeline_state, rules
from mcp_server.services.checks import check_out
from mcp_server.services.rules import State, StepClock


async def pipeline_status(
    session: AsyncSession,
    project_id: uuid.UUID,
    *,
    state: str | None = None,
    page: int = 1,
    page_size: int | None = DEFAULT_STATUS_PAGE,
    loaded: pipeline_state.ProjectPipeline | None = None,
) -> PipelineStatus:
    """Counts per state, the steps that can run next and the cost, with one page of step rows (those in
    ``state`` when given; every row when ``page_size`` is None, for the CLI). Cost follows processes,
    not history. ``loaded``: the project's pipeline, when the caller has read it in this transaction."""
    pipeline = loaded or await pipeline_state.load(session, project_id, lock=False)
    await pipeline_state.read_checks(session, pipeline)
    graph, states, holds = pipeline.graph, pipeline.states(), pipeline.verdicts()
    now = utcnow()
    holders = await leases.holders(session, pipeline)
    clocks = leases.clocks_of(pipeline, holders, now)
    processes: list[ProcessStatus] = []
    counts = dict.fromkeys((s.value for s in State), 0)
    ready: list[str] = []
    plan: list[str] = []
    matching = 0
    first = (page - 1) * (page_size or 0)
    for pid in pipeline.order:
        counts[states[pid].value] += 1
        if rules.claimable(graph, states, pid, clocks.get(pid, StepClock()), now, holds):
            ready.append(pid)
        # A step whose check failed is redone like a stale one (docs/design.md, "Checks").
        if states[pid] != State.COMPLETED or (pid in holds and holds[pid].failed):
            plan.append(pid)
        if state is not None and states[pid].value != state:
            continue
        matching += 1
        if page_size is None or first < matching <= first + page_size:
            clock = clocks.get(pid, StepClock())
            processes.append(_status_row(pipeline, states, pid, clock, holders.get(pid), holds, now))
    steps = sum(counts.values())
    return PipelineStatus(
        project_id=project_id,
        project_name=pipeline.project.name,
        pipeline_id=pipeline.project.pipeline_id,
        processes=processes,
        total=matching,
        page=page,
        has_more=page_size is not None and first + page_size < matching,
        ready_processes=ready[:MAX_LISTED],
        ready_count=len(ready),
        plan=plan[:MAX_LISTED],
        plan_count=len(plan),
        counts=counts,
        complete=steps > 0 and counts[State.COMPLETED.value] == steps,
        # From its running totals (one row, no SUM) unless the budget has a period.
        cost=costs.status_of(pipeline.project, await costs.judge(session, pipeline.project)),
    )


def _status_row(
    pipeline: pipeline_state.ProjectPipeline,
    states: dict[str, State],
    pid: str,
    clock: StepClock,
    holder: ProcessExecution | None,
    holds: rules.Holds,
    now: datetime,
) -> ProcessStatus:
    """One step's row of get_pipeline_status: its unpassed checks by name only (get_process_state has them)."""
    graph = pipeline.graph
    row = pipeline.rows.get(pid)
    blocking = [*rules.blockers(graph, states, pid), *rules.check_blockers(graph, holds, pid)]
    held = holds.get(pid)
    return ProcessStatus(
        process_id=pid,
        name=pipeline.definitions[pid].name,
        state=states[pid].value,
        version=pipeline.version(pid),
        can_run=rules.claimable(graph, states, pid, clock, now, holds),
        execution_id=holder.id if holder else None,
        started_by=(holder.agent or holder.created_by) if holder else None,
        lease_expires_at=holder.lease_expires_at if holder else None,
        lease_expired=(holder is not None and rules.lease_passed(holder.lease_expires_at, now)) or None,
        attempt=holder.attempt if holder else None,
        retry_at=clock.retry_at if clock.retry_at and clock.retry_at > now else None,
        gave_up=rules.gave_up(clock.attempts, clock.max_attempts) or None,
        blocked_by=blocking[:MAX_BLOCKERS] or None,
        blocked_count=len(blocking) if len(blocking) > MAX_BLOCKERS else None,
        invalidated_by_process_id=row.invalidated_by_process_id if row else None,
        invalidation_reason=_clipped(row.invalidation_reason) if row else None,
        last_updated_at=row.last_updated_at if row else None,
        checks_failed=[name for name, _ in held.failed] or None if held else None,
        checks_missing=list(held.missing) or None if held else None,
    )


REASON_IN_ROW = 100
# The execution a stale cause names: get_process_state gives it; a status row, one per step, leaves it out.
_CAUSE_EXECUTION = re.compile(r" \(execution [0-9a-f-]{36}\)")


def _clipped(reason: str | None) -> str | None:
    """A status row's reason, shortened (get_process_state has it whole)."""
    if reason is None:
        return None
    reason = _CAUSE_EXECUTION.sub("", reason)
    if len(reason) <= REASON_IN_ROW:
        return reason
    return reason[: REASON_IN_ROW - 1] + "…"


async def process_state(session: AsyncSession, project_id: uuid.UUID, process_id: str) -> ProcessStateDetail:
    pipeline = await pipeline_state.load(session, project_id, lock=False, around=process_id)
    definition = pipeline.definition(process_id)
    graph, states = pipeline.graph, pipeline.states()
    row = pipeline.rows.get(process_id)
    executions = ExecutionRepository(session)
    current_output = None
    if row is not None and row.current_execution_id is not None:
        current = await executions.get(row.current_execution_id)
        current_output = None if current is None else current.output_data
    running = await executions.latest_running(project_id, process_id) if states[process_id] == State.RUNNING else None
    await pipeline_state.read_checks(session, pipeline, [process_id, *definition.depends_on], every=True)
    holds = pipeline.verdicts()
    blocking = [*rules.blockers(graph, states, process_id), *rules.check_blockers(graph, holds, process_id)]
    checks = pipeline.checks.get(row.current_execution_id) if row and row.current_execution_id else None
    now = utcnow()
    clock = leases.clocks_of(pipeline, {process_id: running} if running else {}, now).get(process_id, StepClock())
    input_schema, output_schema = await pipeline.catalogue.schemas_of(session, process_id)
    return ProcessStateDetail(
        process_id=process_id,
        name=definition.name,
        state=states[process_id].value,
        version=pipeline.version(process_id),
        current_execution_id=row.current_execution_id if row else None,
        invalidated_at=row.invalidated_at if row else None,
        invalidated_by_process_id=row.invalidated_by_process_id if row else None,
        invalidation_reason=row.invalidation_reason if row else None,
        last_updated_at=row.last_updated_at if row else None,
        can_run=rules.claimable(graph, states, process_id, clock, now, holds),
        blocked_by=blocking,
        dependencies=[
            DependencyState(process_id=dep, state=states.get(dep, State.EMPTY).value, version=pipeline.version(dep))
            for dep in definition.depends_on
        ],
        current_output=current_output,
        running_execution_id=running.id if running else None,
        lease_expires_at=running.lease_expires_at if running else None,
        lease_expired=(running is not None and rules.lease_passed(running.lease_expires_at, now)) or None,
        input_schema=input_schema,
        output_schema=output_schema,
        checks=[check_out(check) for check in checks.values()] or None if checks else None,
        checks_missing=[name for name in definition.required_checks or () if name not in checks] or None
        if checks is not None
        else None,
        **(await pipeline_state.inputs_of(session, pipeline, process_id)).fields(),
    )


async def graph(session: AsyncSession, project_id: uuid.UUID) -> str:
    """The project's pipeline as a Mermaid flowchart (services.graph)."""
    from mcp_server.services.graph import mermaid

    pipeline = await pipeline_state.load(session, project_id, lock=False)
    await pipeline_state.read_checks(session, pipeline)
    return mermaid(pipeline)
