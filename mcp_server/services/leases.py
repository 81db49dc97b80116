"""Leases for a team of agents (docs/design.md, "Agent teams"): expiry seen by every writer, claims,
renewals and the fencing of late writers. The decisions are ``rules``'; this module loads and applies.

No background process expires anything: a writer of a project (start, claim, record, fail, renew) first
expires the project's running executions whose lease has passed, in its own transaction, so a lone
SQLite user gets expiry as a team on PostgreSQL does. Readers compute the same from the clock.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.types import money_to_units, utcnow
from mcp_server.errors import InvalidArgument, InvalidTransition, LeaseExpired, NotFound, NothingReady
from mcp_server.models import ExecutionStatus, ProcessExecution
from mcp_server.repositories import ExecutionRepository, ProjectRepository
from mcp_server.repositories.states import StateChange
from mcp_server.schemas.pipeline import MAX_BLOCKERS, LeaseReply
from mcp_server.services import pipeline_state, rules
from mcp_server.services.pipeline_state import ProjectPipeline
from mcp_server.services.rules import State, StepClock

MIN_LEASE_SECONDS = 1
MAX_LEASE_SECONDS = 86_400


def new_token() -> str:
    """A fencing token: new for every attempt, unguessable."""
    return secrets.token_urlsafe(24)


def deadline_of(started_at: datetime, timeout_seconds: int | None) -> datetime | None:
    return None if timeout_seconds is None else started_at + timedelta(seconds=timeout_seconds)


async def release(session: AsyncSession, execution: ProcessExecution) -> None:
    """An execution that finished, failed or expired gives back what it held against the budget."""
    if execution.reserved_usd:
        await ProjectRepository(session).release(execution.project_id, units=money_to_units(execution.reserved_usd))
    execution.reserved_usd = None


async def fail_step(session: AsyncSession, pipeline: ProjectPipeline, process_id: str, now: datetime) -> None:
    """The running step after a failed or expired attempt: `failed`, its attempts counted, its backoff set."""
    node = pipeline.definition(process_id)
    row = pipeline.rows.get(process_id)
    after = rules.after_failure(
        0 if row is None else row.attempts,
        max_attempts=node.max_attempts,
        backoff_seconds=node.retry_backoff_seconds,
        now=now,
    )
    change = StateChange(State.FAILED, now, attempts=after.attempts, retry_at=after.retry_at)
    await pipeline_state.apply(session, pipeline, process_id, change)


async def expire_due(
    session: AsyncSession,
    pipeline: ProjectPipeline,
    now: datetime | None = None,
    running: list[ProcessExecution] | None = None,
) -> dict[str, uuid.UUID]:
    """Expire the running executions of the loaded steps whose lease has passed: each is stored `expired`,
    its reservation released, and its step (if still running) fails with the attempt counted. Returns the
    steps it freed, each with the execution that held it. One query, and only when a loaded step is running
    (none when ``running`` is given: the caller read them)."""
    now = now or utcnow()
    if running is None:
        steps = [pid for pid, row in pipeline.rows.items() if row.state == State.RUNNING.value]
        running = await ExecutionRepository(session).running(pipeline.project_id, steps) if steps else []
    freed: dict[str, uuid.UUID] = {}
    for execution in running:
        if not rules.lease_passed(execution.lease_expires_at, now):
            continue
        await release(session, execution)
        await ExecutionRepository(session).update(
            execution,
            status=ExecutionStatus.EXPIRED.value,
            completed_at=execution.lease_expires_at or now,
            error_message=f"lease expired at {execution.lease_expires_at:%Y-%m-%dT%H:%M:%SZ} (no renew_lease in time)",
        )
        if pipeline.state(execution.process_id) == State.RUNNING:
            await fail_step(session, pipeline, execution.process_id, now)
            freed[execution.process_id] = execution.id
    return freed


async def running_of(session: AsyncSession, pipeline: ProjectPipeline) -> list[ProcessExecution]:
    """The running executions of the loaded running steps, oldest first (one query, only when one runs)."""
    steps = [pid for pid, row in pipeline.rows.items() if row.state == State.RUNNING.value]
    return await ExecutionRepository(session).running(pipeline.project_id, steps) if steps else []


async def holders(session: AsyncSession, pipeline: ProjectPipeline) -> dict[str, ProcessExecution]:
    """The running execution of each loaded running step (one query, only when a step runs)."""
    return {execution.process_id: execution for execution in await running_of(session, pipeline)}


def clocks_of(pipeline: ProjectPipeline, holding: dict[str, ProcessExecution], now: datetime) -> dict[str, StepClock]:
    """Each loaded step's attempts, backoff and live holder, as a claim judges them: a lease that passed
    holds nothing."""
    return {
        pid: StepClock(
            attempts=row.attempts,
            max_attempts=pipeline.definitions[pid].max_attempts if pid in pipeline.definitions else 3,
            retry_at=row.retry_at,
            held=pid in holding and not rules.lease_passed(holding[pid].lease_expires_at, now),
        )
        for pid, row in pipeline.rows.items()
    }


async def nothing_ready(
    session: AsyncSession, pipeline: ProjectPipeline, step_clocks: dict[str, StepClock]
) -> NothingReady:
    """Why no step can be claimed: what runs and until when, what backs off until when, what gave up, and
    what waits on what; the hint says whether to wait or stop."""
    running = await ExecutionRepository(session).running(pipeline.project_id, list(pipeline.rows))
    states = pipeline.states()
    remaining = [pid for pid in pipeline.order if states.get(pid) != State.COMPLETED]
    backing_off = {pid: c.retry_at for pid, c in step_clocks.items() if c.retry_at is not None and pid in remaining}
    given_up = [pid for pid, c in step_clocks.items() if rules.gave_up(c.attempts, c.max_attempts)]
    holds = pipeline.verdicts()  # the claim read the checks
    waiting = {
        pid: [
            *sorted(rules.blockers(pipeline.graph, states, pid)),
            *rules.check_blockers(pipeline.graph, holds, pid),
        ][:MAX_BLOCKERS]
        for pid in remaining
        if pid not in step_clocks or not step_clocks[pid].held
    }
    waiting = {pid: deps for pid, deps in waiting.items() if deps}
    details = {
        "running": [
            {"process_id": e.process_id, "execution_id": str(e.id), "lease_expires_at": _iso(e.lease_expires_at)}
            for e in running[:MAX_BLOCKERS]
        ],
        "retry_at": {pid: _iso(at) for pid, at in list(backing_off.items())[:MAX_BLOCKERS]},
        "gave_up": given_up[:MAX_BLOCKERS],
        "waiting": dict(list(waiting.items())[:MAX_BLOCKERS]),
        "remaining": len(remaining),
    }
    if not remaining:
        message, hint = "every step is completed", "Stop: the pipeline is done"
    elif running or backing_off:
        message = f"{len(remaining)} step(s) remain; {len(running)} running, {len(backing_off)} backing off"
        hint = "Wait (until the earliest lease_expires_at or retry_at) and claim again"
    elif holds:
        message = f"{len(remaining)} step(s) remain, held by the checks of {', '.join(sorted(holds)[:MAX_BLOCKERS])}"
        hint = "Wait for those checks to pass (record_check), or re-run a step whose check failed, and claim again"
    else:
        message = f"{len(remaining)} step(s) remain, none can run: {len(given_up)} gave up"
        hint = "Stop, or start a given-up step explicitly with force=true after fixing its cause"
    return NothingReady(f"nothing to claim: {message}", hint=hint, details=details)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass(frozen=True)
class Fence:
    """A finish of an expired execution: refused (``holder`` took the step over since) or let through."""

    holder: ProcessExecution | None

    def error(
        self, execution: ProcessExecution, *, kept: str = "this output is", usage_logged: bool = False
    ) -> LeaseExpired:
        """``kept`` names what the late call left on the expired execution; ``usage_logged``: the usage it
        sent was logged (money spent is never dropped), counted as rework against the expired execution."""
        holder = self.holder
        named = f"execution {holder.id} ({holder.status})" if holder is not None else "another execution"
        logged = "; the usage sent is logged against it as rework" if usage_logged else ""
        return LeaseExpired(
            f"execution {execution.id} expired at {_iso(execution.lease_expires_at)} and {named} has taken "
            f"step {execution.process_id!r} since; {kept} kept for audit only, not current{logged}",
            hint="Drop this result (do not report its cost again); renew_lease before the lease passes next time",
            details={
                "holder_execution_id": str(holder.id) if holder is not None else None,
                "usage_logged": usage_logged,
            },
        )


async def fence(session: AsyncSession, execution: ProcessExecution) -> Fence | None:
    """None when the execution's lease still holds (or it has none); otherwise whether its step was
    claimed again since (then the late finish is refused)."""
    if execution.status != ExecutionStatus.EXPIRED.value:
        return None
    return Fence(holder=await ExecutionRepository(session).newer_attempt(execution))


async def renew(session: AsyncSession, *, execution_id: uuid.UUID, lease_token: str, lease_seconds: int) -> LeaseReply:
    """Extend a running execution's lease (a heartbeat), never past its start-to-close limit."""
    execution = await ExecutionRepository(session).get(execution_id)
    if execution is None:
        raise NotFound(f"execution {execution_id} does not exist", hint="Use the id returned by start_execution")
    pipeline = await pipeline_state.load(session, execution.project_id, lock=True, around=execution.process_id)
    now = utcnow()
    await expire_due(session, pipeline, now)
    await session.refresh(execution)
    if execution.lease_token is None or not secrets.compare_digest(
        execution.lease_token.encode(), lease_token.encode()
    ):
        raise InvalidArgument(
            f"lease_token does not match execution {execution_id}'s",
            hint="Use the lease_token start_execution returned for this execution",
        )
    if execution.status == ExecutionStatus.EXPIRED.value:
        raise Fence(holder=await ExecutionRepository(session).newer_attempt(execution)).error(execution)
    if execution.status != ExecutionStatus.RUNNING.value:
        raise InvalidTransition(f"execution {execution_id} is already {execution.status}", hint="Nothing to renew")
    timeout = pipeline.definition(execution.process_id).timeout_seconds
    started = execution.started_at or now
    end = rules.lease_end(now, lease_seconds, deadline_of(started, timeout))
    await ExecutionRepository(session).update(execution, lease_expires_at=end)
    return LeaseReply(
        execution_id=execution.id, lease_expires_at=end, capped_by_timeout=end < now + timedelta(seconds=lease_seconds)
    )
