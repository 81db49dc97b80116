"""Executions: start, record, fail and invalidate, each one atomic state change plus its cascade."""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.types import money_to_units, utcnow
from mcp_server.enums import BudgetPolicy
from mcp_server.errors import BudgetExceeded, Conflict, InvalidArgument, InvalidTransition, NotFound
from mcp_server.models import ExecutionStatus, ProcessExecution, ProjectStatus
from mcp_server.repositories import (
    ExecutionChange,
    ExecutionRepository,
    MetricsRepository,
    ProjectRepository,
    PromptRepository,
)
from mcp_server.repositories.states import StateChange, StateRepository
from mcp_server.schemas.common import envelope
from mcp_server.schemas.cost import BudgetStatus, LoggedCost, PipelineBudgetStatus
from mcp_server.schemas.pipeline import (
    MAX_BLOCKERS,
    MAX_LISTED,
    ExecutionOut,
    ExecutionPage,
    ExecutionRef,
    ExecutionRow,
    FailReply,
    InvalidatedOut,
    InvalidateReply,
    RecordReply,
    ReplacedOut,
    ReusableOut,
    StartReply,
    StateOut,
)
from mcp_server.services import caps, costs, leases, pipeline_state, rules
from mcp_server.services.catalogue import Schemas
from mcp_server.services.checks import of_execution as checks_of
from mcp_server.services.idempotency import check_replay, request_hash
from mcp_server.services.pipeline_state import ProjectPipeline
from mcp_server.services.rules import Event, State
from mcp_server.services.validation import Checks, check_ahead, json_hash

if TYPE_CHECKING:
    from mcp_server.schemas.cost import UsageIn


def _state_out(pipeline: ProjectPipeline, process_id: str) -> StateOut:
    row = pipeline.rows.get(process_id)
    if row is None:
        return StateOut(
            process_id=process_id,
            state=State.EMPTY.value,
            version=0,
            current_execution_id=None,
            invalidated_by_process_id=None,
            invalidation_reason=None,
        )
    return StateOut.model_validate(row)


async def _replay(session: AsyncSession, key: str | None, args_hash: str) -> dict[str, Any] | None:
    """The stored reply of an earlier call with this key, or None; Conflict if the arguments differ."""
    if key is None:
        return None
    prior = await ExecutionRepository(session).by_idempotency_key(key)
    if prior is None:
        return None
    # A key held by a call that stored no reply (or by another tool) cannot be this call's.
    check_replay(key, prior.request_hash if prior.reply is not None else None, args_hash)
    stored: dict[str, Any] = dict(prior.reply or {})
    return stored | {"replayed": True}


async def _estimate(
    session: AsyncSession, pipeline: ProjectPipeline, process_id: str, default: Decimal | None
) -> tuple[Decimal, str] | None:
    """What a start without reserve_usd holds: the median cost of the step's recent runs in its pipeline,
    else the server's default_reserve_usd; None when neither is known."""
    runs = await MetricsRepository(session).recent_run_costs(pipeline.project.pipeline_id, process_id)
    if runs:
        return Decimal(statistics.median(runs)), f"the median cost of its last {len(runs)} run(s)"
    if default is not None:
        return default, "the server's default_reserve_usd"
    return None


async def _admit(
    session: AsyncSession,
    pipeline: ProjectPipeline,
    process_id: str,
    reserve_usd: Decimal | None,
    default_reserve: Decimal | None,
    *,
    agent: str | None = None,
    model: str | None = None,
) -> tuple[Decimal | None, BudgetStatus | None]:
    """Budget admission of a start (docs/design.md, "Costs and budgets"): under `block`, refused with
    budget_exceeded when spent (in the budget's period) + reserved + reserve_usd would pass the budget or a
    cap of the start's agent or model; the reservation is held in the same conditional UPDATE. Without
    reserve_usd a `block` budget holds the step's estimated cost, cut to what is left (never refused for
    an estimate while there is room). Returns what the execution holds and the budget reply (None for a
    project without budget, caps or hold)."""
    project = pipeline.project
    blocking = project.budget_policy == BudgetPolicy.BLOCK
    judging = caps.applicable(project.caps, agent=agent, model=model)
    shared = await costs.shared_budget(session, project.pipeline_id, lock=True) if pipeline.shared_budget else None
    if reserve_usd is None and project.budget_usd is None and not judging and shared is None:
        return None, None
    judged = await costs.judge(session, project)
    capped = await caps.figures(session, project.id, judging, judged.window.start)
    lefts = {f"cap {f.cap.key}": f.left for f in capped} if blocking else {}
    if blocking and project.budget_usd is not None:
        lefts["the budget"] = project.budget_usd - judged.spent - project.reserved_usd
    if shared is not None and shared.blocks:
        lefts[f"pipeline {shared.budget.pipeline_id}'s budget"] = shared.left
    hold, note = reserve_usd, None
    if reserve_usd is None and lefts:
        tightest = min(lefts, key=lefts.__getitem__)
        left = lefts[tightest]
        estimate = await _estimate(session, pipeline, process_id, default_reserve) if left > 0 else None
        if estimate is not None and estimate[0] > 0:
            hold = min(estimate[0], left)
            cut = f" (cut to what is left of {tightest})" if hold < estimate[0] else ""
            note = f"this start holds {hold} USD, {estimate[1]}{cut}"
    if blocking:
        for found in capped:
            if found.left < (hold or 0) or found.left <= 0:
                raise _over_cap(found, reserve_usd)
    if shared is not None and shared.blocks and (shared.left < (hold or 0) or shared.left <= 0):
        raise _over_shared(costs.shared_status(shared), reserve_usd)
    units = money_to_units(hold or 0)
    spent_units = money_to_units(judged.spent) if judged.window.bounded else None
    block = blocking and project.budget_usd is not None
    if not await ProjectRepository(session).reserve(
        project.id, units=units, within_budget=block, spent_units=spent_units
    ):
        raise _over_budget(costs.status_of(project, judged), project.id, reserve_usd)
    statuses = [costs.cap_status(caps.CapFigures(f.cap, f.spent, f.held + (hold or 0))) for f in capped]
    together = None
    if shared is not None:
        together = costs.shared_status(
            costs.Shared(shared.budget, shared.window, shared.spent, shared.held + (hold or 0))
        )
    return (hold if units else None), costs.status_of(project, judged, hold=note, caps=statuses, pipeline=together)


def _over_shared(status: PipelineBudgetStatus, reserve_usd: Decimal | None) -> BudgetExceeded:
    asked = "" if reserve_usd is None else f"; this start would hold {reserve_usd}"
    span = "" if status.period is None else f" ({status.period} period from {status.period_start})"
    resets = "" if status.resets_at is None else f", or wait for the period to reset at {status.resets_at}"
    state = "is reached" if status.remaining_usd <= 0 else "would be passed"
    return BudgetExceeded(
        f"pipeline {status.pipeline_id}'s shared budget{span} {state} "
        f"(policy block): budget {status.budget_usd} USD, spent {status.spent_usd} by its projects, reserved "
        f"{status.reserved_usd} by their running executions, remaining {status.remaining_usd}" + asked,
        hint="Ask for a larger pipeline budget (apply_pipeline budget), or wait for running executions to finish "
        f"and release what they hold{resets}",
        details={
            "pipeline_id": status.pipeline_id,
            "budget_usd": str(status.budget_usd),
            "spent_usd": str(status.spent_usd),
            "reserved_usd": str(status.reserved_usd),
            "remaining_usd": str(status.remaining_usd),
        },
    )


def _over_cap(found: caps.CapFigures, reserve_usd: Decimal | None) -> BudgetExceeded:
    asked = "" if reserve_usd is None else f"; this start would hold {reserve_usd}"
    return BudgetExceeded(
        f"cap {found.cap.key} ({found.cap.limit} USD) {'is reached' if found.left <= 0 else 'would be passed'} "
        f"(policy block): spent {found.spent} in the budget's period, {found.held} held by running executions, "
        f"{found.left} left" + asked,
        hint="Ask for a larger cap (update_project caps), let another agent or model do the step, or wait for "
        "running executions to finish and release what they hold",
        details={
            "cap": found.cap.key,
            "cap_usd": str(found.cap.limit),
            "spent_usd": str(found.spent),
            "reserved_usd": str(found.held),
            "remaining_usd": str(found.left),
        },
    )


def _over_budget(status: BudgetStatus, project_id: uuid.UUID, reserve_usd: Decimal | None) -> BudgetExceeded:
    asked = "" if reserve_usd is None else f"; this start would reserve {reserve_usd}"
    over = status.remaining_usd is not None and status.remaining_usd <= 0
    span = "" if status.period is None else f" ({status.period} period from {status.period_start})"
    resets = "" if status.resets_at is None else f", or wait for the period to reset at {status.resets_at}"
    # Never advice to declare less than the expected cost: that only moves the overrun past the check.
    return BudgetExceeded(
        f"project {project_id} {'has reached' if over else 'would pass'} its budget{span} (policy block): budget "
        f"{status.budget_usd} USD, spent {status.period_spent_usd or status.spent_usd}, reserved "
        f"{status.reserved_usd} by running executions, remaining {status.remaining_usd}" + asked,
        hint="Ask for a larger budget (update_project budget_usd), or wait for running executions to finish or "
        f"fail and release what they hold{resets}; keep reserve_usd at the step's expected cost",
        details={
            "budget_usd": str(status.budget_usd),
            "spent_usd": str(status.period_spent_usd or status.spent_usd),
            "reserved_usd": str(status.reserved_usd),
            "remaining_usd": str(status.remaining_usd),
            **({"period_start": str(status.period_start), "resets_at": str(status.resets_at)} if status.period else {}),
        },
    )


async def _check_prompt(session: AsyncSession, prompt_version_id: uuid.UUID | None) -> None:
    if prompt_version_id is not None and await PromptRepository(session).get_by_id(prompt_version_id) is None:
        raise NotFound(
            f"prompt version {prompt_version_id} does not exist",
            hint="Use the id returned by save_prompt_version or get_prompt_version",
        )


def _current(pipeline: ProjectPipeline, process_id: str) -> tuple[uuid.UUID, str | None, datetime | None] | None:
    """The step's current execution: its id, output hash and completion time (read with the state rows)."""
    row = pipeline.rows.get(process_id)
    if row is None or row.current_execution_id is None:
        return None
    return row.current_execution_id, row.current_hash, row.current_completed_at


async def _refuse_over_running(
    session: AsyncSession, project_id: uuid.UUID, process_id: str, *, starting: bool = False
) -> None:
    """A one-call record on a running step would silently replace what that execution is computing (and
    a second start would run the step twice): refused, naming the running execution."""
    running = await ExecutionRepository(session).latest_running(project_id, process_id)
    who = f" by {running.created_by}" if running is not None and running.created_by else ""
    what = (
        f"execution {running.id} (started {running.started_at.isoformat() if running.started_at else '?'}{who})"
        if running is not None
        else "an execution"
    )
    raise InvalidTransition(
        f"process {process_id!r} is running {what}",
        hint=(
            "Finish it with record_execution(execution_id=…), or fail_execution it if it was abandoned"
            if starting
            else "Finish it with record_execution(execution_id=…), fail_execution it if it was abandoned, or pass "
            "force=true to record this output now (that execution then finishes as superseded)"
        ),
        details={
            "process_id": process_id,
            "running_execution_id": str(running.id) if running is not None else None,
            "started_at": running.started_at.isoformat() if running is not None and running.started_at else None,
            "created_by": running.created_by if running is not None else None,
        },
    )


async def _starts_the_project(session: AsyncSession, pipeline: ProjectPipeline, actor: str | None) -> None:
    """A project moves from draft to in_progress by itself at its first execution, and back from completed
    when a step runs again (docs/design.md, "Projects")."""
    if pipeline.project.status in (ProjectStatus.DRAFT, ProjectStatus.COMPLETED):
        await ProjectRepository(session).update(pipeline.project, status=ProjectStatus.IN_PROGRESS, updated_by=actor)


async def _completes_the_project(session: AsyncSession, pipeline: ProjectPipeline, actor: str | None) -> bool:
    """After a completion: when every step of the pipeline is completed the project is `completed` (one
    count of its state rows, only when every step loaded is completed)."""
    if any(pipeline.state(pid) != State.COMPLETED for pid in pipeline.states()):
        return False
    counts = (await StateRepository(session).counts([pipeline.project_id])).get(pipeline.project_id, {})
    completed = int(counts.get("counts", {}).get(State.COMPLETED.value, 0))
    done = completed == len(pipeline.definitions) > 0
    if done and pipeline.project.status in (ProjectStatus.DRAFT, ProjectStatus.IN_PROGRESS):
        await ProjectRepository(session).update(pipeline.project, status=ProjectStatus.COMPLETED, updated_by=actor)
    return done


async def _after_completion(
    session: AsyncSession, pipeline: ProjectPipeline, process_id: str, actor: str | None
) -> tuple[list[str] | None, bool | None]:
    """What a completion opens: the steps now runnable, and whether the whole project is done."""
    if pipeline.state(process_id) != State.COMPLETED:
        return None, None
    unblocked = await _unblocked(session, pipeline, process_id)
    return unblocked or None, await _completes_the_project(session, pipeline, actor) or None


async def _unblocked(session: AsyncSession, pipeline: ProjectPipeline, process_id: str) -> list[str]:
    """The dependents of a step that just completed that can now run: what to claim next."""
    return (await pipeline_state.runnable_dependants(session, pipeline, process_id))[:MAX_LISTED]


async def _claim(session: AsyncSession, project_id: uuid.UUID) -> tuple[ProjectPipeline, str, uuid.UUID | None]:
    """The first step of the plan a claim may take, under the project's lock (so N concurrent claims take
    N different steps), after expiring what passed its lease (and which expired execution held the step
    chosen); ``nothing_ready`` when there is none."""
    pipeline = await pipeline_state.load(session, project_id, lock=True)
    now = utcnow()
    running = await leases.running_of(session, pipeline)
    freed = await leases.expire_due(session, pipeline, now, running)
    live = {e.process_id: e for e in running if e.status == ExecutionStatus.RUNNING.value}
    clocks = leases.clocks_of(pipeline, live, now)
    await pipeline_state.read_checks(session, pipeline)
    holds = pipeline.verdicts()
    chosen = rules.first_claimable(pipeline.order, pipeline.graph, pipeline.states(), clocks, now, holds)
    if chosen is None:
        raise await leases.nothing_ready(session, pipeline, clocks)
    return pipeline, chosen, freed.get(chosen)


def _refuse_given_up(pipeline: ProjectPipeline, process_id: str, *, force: bool) -> int:
    """The step's failed or expired attempts in a row (0 after a forced start); a step that gave up runs
    again only when forced."""
    row = pipeline.rows.get(process_id)
    attempts = 0 if row is None or force else row.attempts
    maximum = pipeline.definition(process_id).max_attempts
    if rules.gave_up(attempts, maximum) and pipeline.state(process_id) == State.FAILED:
        raise InvalidTransition(
            f"process {process_id!r} gave up after {attempts} failed or expired attempt(s) (max_attempts {maximum})",
            hint="Fix the cause, then start it with force=true, or raise max_attempts with define_process",
        )
    return attempts


@dataclass
class _Start:
    """A start under the project's lock, once its step is known and checked: what it computes from."""

    pipeline: ProjectPipeline
    process_id: str
    claimed: bool  # the agent named no step: a claim chose it
    took_over: uuid.UUID | None  # the execution whose lease had passed, expired by this start
    attempts: int
    schemas: Schemas
    key: str
    target: State


async def start(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    process_id: str | None,
    input_data: Any,
    prompt_version_id: uuid.UUID | None,
    expected_version: int | None,
    idempotency_key: str | None,
    force: bool,
    actor: str | None,
    reserve_usd: Decimal | None = None,
    lease_seconds: int = 900,
    agent: str | None = None,
    default_reserve: Decimal | None = None,
    model: str | None = None,
    reuse: bool | None = None,
) -> StartReply:
    """Start a step, or claim the next one: load it under the project's lock (a replay answers there),
    check it may start, decide between running it and reusing the same work done before (rules.reuse),
    then apply that."""
    args = {
        "project_id": str(project_id),
        "process_id": process_id,
        "input_data": input_data,
        "prompt_version_id": str(prompt_version_id) if prompt_version_id else None,
        "expected_version": expected_version,
        "force": force,
        "reserve_usd": None if reserve_usd is None else str(reserve_usd),
        "lease_seconds": lease_seconds,
    } | {name: value for name, value in (("agent", agent), ("model", model), ("reuse", reuse)) if value is not None}
    # Only a keyed call is ever compared with an earlier one.
    args_hash = request_hash("start_execution", args) if idempotency_key else ""
    input_hash = json_hash(input_data)  # before the lock, as every hash of what the agent sent
    loaded = await _load_start(session, project_id, process_id, input_data, idempotency_key, args_hash)
    if isinstance(loaded, StartReply):
        return loaded
    step = await _check_start(session, *loaded, expected_version, force, input_data, input_hash, prompt_version_id)
    scope = step.pipeline.definition(step.process_id).reuse
    source, computing = await _same_work(session, step) if scope != "off" else (None, None)
    choice = rules.reuse(scope, wanted=reuse, offered=source is not None, computing=computing is not None)
    who = agent or actor
    if choice == rules.Reuse.WAIT and computing is not None:
        raise _computing_elsewhere(computing, step.process_id)
    if choice == rules.Reuse.TAKE and source is not None:
        return await _take(session, step, source, input_data, prompt_version_id, who, actor, idempotency_key, args_hash)
    offer = None if source is None else await _offer(session, source)
    model = None if model is None else caps.model_ref(model)
    held, budget = await _admit(
        session, step.pipeline, step.process_id, reserve_usd, default_reserve, agent=who, model=model
    )
    execution = await _create_running(
        session, step, input_data, prompt_version_id, held, who, model, lease_seconds, actor, idempotency_key, args_hash
    )
    return await _started(session, step, execution, offer, budget)


async def _load_start(
    session: AsyncSession,
    project_id: uuid.UUID,
    process_id: str | None,
    input_data: Any,
    idempotency_key: str | None,
    args_hash: str,
) -> StartReply | tuple[ProjectPipeline, str, bool, uuid.UUID | None, Checks]:
    """The project under its lock and the step to start (a claim chooses it), leases past due expired; or
    the reply a replayed call already had (a named start's budget figures brought up to date)."""
    if process_id is None:
        if (replayed := await _replay(session, idempotency_key, args_hash)) is not None:
            return StartReply.model_validate(replayed)
        pipeline, process_id, took_over = await _claim(session, project_id)
        return pipeline, process_id, True, took_over, await check_ahead(session, project_id, process_id)
    checks = await check_ahead(session, project_id, process_id, input_data=input_data)  # before the lock
    pipeline = await pipeline_state.load(session, project_id, lock=True, around=process_id)
    if (replayed := await _replay(session, idempotency_key, args_hash)) is not None:
        if replayed.get("budget") is not None:  # today's figures, not the first reply's
            judged = await costs.judge(session, pipeline.project)
            replayed["budget"] = costs.status_of(pipeline.project, judged).model_dump(mode="json", exclude_none=True)
        return StartReply.model_validate(replayed)
    pipeline.definition(process_id)
    freed = await leases.expire_due(session, pipeline)
    return pipeline, process_id, False, freed.get(process_id), checks


async def _check_start(
    session: AsyncSession,
    pipeline: ProjectPipeline,
    process_id: str,
    claimed: bool,
    took_over: uuid.UUID | None,
    checks: Checks,
    expected_version: int | None,
    force: bool,
    input_data: Any,
    input_hash: str,
    prompt_version_id: uuid.UUID | None,
) -> _Start:
    """Whether the step may start (version, not running, ready, not given up, a valid input and prompt),
    and the input key of the work it would do."""
    pipeline.check_version(process_id, expected_version)
    if pipeline.state(process_id) == State.RUNNING:
        await _refuse_over_running(session, pipeline.project_id, process_id, starting=True)
    target = rules.next_state(pipeline.state(process_id), Event.START, process_id=process_id)
    if not force:
        await pipeline_state.read_checks(session, pipeline, pipeline.graph.get(process_id, ()))
    pipeline.check_ready(process_id, force=force)
    attempts = _refuse_given_up(pipeline, process_id, force=force)
    schemas = await pipeline.catalogue.schemas_of(session, process_id)
    await checks.validate(schemas[0], input_data, what="input_data", process_id=process_id)
    await _check_prompt(session, prompt_version_id)
    key = pipeline_state.input_key(pipeline, process_id, input_hash, prompt_version_id, schemas)
    return _Start(pipeline, process_id, claimed, took_over, attempts, schemas, key, target)


async def _create_running(
    session: AsyncSession,
    step: _Start,
    input_data: Any,
    prompt_version_id: uuid.UUID | None,
    held: Decimal | None,
    agent: str | None,
    model: str | None,
    lease_seconds: int,
    actor: str | None,
    idempotency_key: str | None,
    args_hash: str,
) -> ProcessExecution:
    """The running execution, with its lease, hold and attempt; the step `running`."""
    now = utcnow()
    timeout = step.pipeline.definition(step.process_id).timeout_seconds
    execution = await ExecutionRepository(session).create(
        project_id=step.pipeline.project_id,
        process_id=step.process_id,
        prompt_version_id=prompt_version_id,
        input_data=input_data,
        inputs_from=pipeline_state.lineage(step.pipeline, step.process_id),
        input_key=step.key,
        reserved_usd=held,
        agent=agent,
        model=model,
        status=ExecutionStatus.RUNNING.value,
        started_at=now,
        lease_expires_at=rules.lease_end(now, lease_seconds, leases.deadline_of(now, timeout)),
        lease_token=leases.new_token(),
        attempt=step.attempts + 1,
        idempotency_key=idempotency_key,
        request_hash=args_hash if idempotency_key else None,
        created_by=actor,
        updated_by=actor,
    )
    await _starts_the_project(session, step.pipeline, actor)
    change = StateChange(step.target, now, attempts=step.attempts)
    await pipeline_state.apply(session, step.pipeline, step.process_id, change)
    return execution


async def _started(
    session: AsyncSession,
    step: _Start,
    execution: ProcessExecution,
    offer: ReusableOut | None,
    budget: BudgetStatus | None,
) -> StartReply:
    reply = StartReply(
        execution=ExecutionRef.model_validate(execution),
        state=_state_out(step.pipeline, step.process_id),
        reusable=offer,
        output_schema=step.schemas[1] if step.claimed else None,
        took_over=step.took_over,
        **(await pipeline_state.inputs_of(session, step.pipeline, step.process_id)).fields(),
        budget=budget,
        lease_token=execution.lease_token,
        lease_expires_at=execution.lease_expires_at,
        attempt=execution.attempt,
    )
    if execution.idempotency_key:
        execution.reply = reply.model_dump(mode="json")
        await session.flush()
    return reply


async def _same_work(session: AsyncSession, step: _Start) -> tuple[ProcessExecution | None, ProcessExecution | None]:
    """The newest completed execution with the step's input key within its definition's reuse scope and
    age, and (pipeline scope) one computing it right now in another project, read under a lock of that
    key so two projects never both start it."""
    definition = step.pipeline.definition(step.process_id)
    pipeline_id = step.pipeline.project.pipeline_id if definition.reuse == "pipeline" else None
    since = None if definition.reuse_ttl_seconds is None else utcnow() - timedelta(seconds=definition.reuse_ttl_seconds)
    executions = ExecutionRepository(session)
    project_id = step.pipeline.project_id
    if pipeline_id is None:
        return await executions.reusable(step.process_id, step.key, project_id=project_id, since=since), None
    await executions.lock_key(pipeline_id, step.process_id, step.key)
    found = await executions.reusable(
        step.process_id, step.key, project_id=project_id, pipeline_id=pipeline_id, since=since
    )
    computing = await executions.computing(
        step.process_id, step.key, project_id=project_id, pipeline_id=pipeline_id, now=utcnow()
    )
    return found, computing


async def _offer(session: AsyncSession, source: ProcessExecution) -> ReusableOut:
    """A completed execution offered for reuse, with what its output cost (a reuse's: what it saved)."""
    return ReusableOut(
        execution_id=source.id,
        cost_usd=await _cost_of(session, source),
        completed_at=source.completed_at,
        project_id=source.project_id,
    )


async def _cost_of(session: AsyncSession, source: ProcessExecution) -> Decimal | None:
    if source.reused_from is not None:
        return source.saved_usd
    return await MetricsRepository(session).execution_cost(source.id)


def _computing_elsewhere(computing: ProcessExecution, process_id: str) -> Conflict:
    until = computing.lease_expires_at.isoformat() if computing.lease_expires_at else None
    return Conflict(
        f"execution {computing.id} of project {computing.project_id} is computing the same input of "
        f"{process_id!r} now (same input_key)",
        hint="Wait for it (get_execution), then start again with reuse=true to take its output at no cost; "
        "or reuse=false to run anyway",
        details={
            "running_execution_id": str(computing.id),
            "project_id": str(computing.project_id),
            "lease_expires_at": until,
        },
    )


async def _take(
    session: AsyncSession,
    step: _Start,
    source: ProcessExecution,
    input_data: Any,
    prompt_version_id: uuid.UUID | None,
    agent: str | None,
    actor: str | None,
    idempotency_key: str | None,
    args_hash: str,
) -> StartReply:
    """A reuse: the step completes at once with the source's output, at no cost, as an execution that
    names its source (reused_from) and what that output had cost (saved_usd); what depends on the step
    goes stale as after a record, unless the output is the current one."""
    pipeline, process_id, now = step.pipeline, step.process_id, utcnow()
    current = _current(pipeline, process_id)
    saved = await _cost_of(session, source)
    execution = await ExecutionRepository(session).create(
        project_id=pipeline.project_id,
        process_id=process_id,
        prompt_version_id=prompt_version_id,
        input_data=input_data,
        inputs_from=pipeline_state.lineage(pipeline, process_id),
        input_key=step.key,
        output_data=source.output_data,
        output_hash=source.output_hash,
        reasoning=source.reasoning,
        missing_info=source.missing_info,
        reused_from=source.id,
        saved_usd=saved,
        agent=agent,
        status=ExecutionStatus.COMPLETED.value,
        started_at=now,
        completed_at=now,
        attempt=step.attempts + 1,
        idempotency_key=idempotency_key,
        request_hash=args_hash if idempotency_key else None,
        created_by=actor,
        updated_by=actor,
    )
    await _starts_the_project(session, pipeline, actor)
    change = StateChange(State.COMPLETED, now, sets_current=True, current=execution.id, current_hash=source.output_hash)
    await pipeline_state.apply(session, pipeline, process_id, change)
    reason = f"upstream {process_id!r} has a new output (execution {execution.id}, reused)"
    new_output = current is None or current[1] != source.output_hash
    invalidated = await pipeline_state.cascade(session, pipeline, process_id, reason) if new_output else []
    unblocked, completed = await _after_completion(session, pipeline, process_id, actor)
    reply = StartReply(
        execution=ExecutionRef.model_validate(execution),
        state=_state_out(pipeline, process_id),
        reused_from=source.id,
        saved_usd=saved,
        invalidated_count=len(invalidated) or None,
        unblocked=unblocked,
        project_completed=completed,
    )
    if idempotency_key:
        execution.reply = reply.model_dump(mode="json")
        await session.flush()
    return reply


@dataclass
class _Record:
    """One record_execution call: what the agent sent, with what is worked out before the write lock."""

    project_id: uuid.UUID
    process_id: str
    output_data: Any
    input_data: Any | None
    execution_id: uuid.UUID | None
    prompt_version_id: uuid.UUID | None
    usage: UsageIn | None
    force: bool
    actor: str | None
    agent: str | None
    output_hash: str
    quoted: Any
    finished: ExecutionChange  # what the finish writes on the execution


@dataclass
class _Finished:
    """A finish decided and written on its execution: what it does to the step is applied next."""

    execution: ProcessExecution
    decision: rules.Finish
    note: str | None
    current: tuple[uuid.UUID, str | None, datetime | None] | None  # the step's current output before it
    was: State  # the step's state before it


async def record(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    process_id: str,
    output_data: Any,
    input_data: Any | None,
    execution_id: uuid.UUID | None,
    reasoning: str | None,
    missing_info: Any | None,
    prompt_version_id: uuid.UUID | None,
    usage: UsageIn | None,
    expected_version: int | None,
    idempotency_key: str | None,
    force: bool,
    actor: str | None,
    agent: str | None = None,
) -> RecordReply:
    """Record a step's output: load the step under the project's lock (a replay answers there), decide
    the finish (rules.finish) and write it on a new or the started execution, then apply it to the step and
    downstream, log the usage and answer."""
    args = {
        "project_id": str(project_id),
        "process_id": process_id,
        "output_data": output_data,
        "input_data": input_data,
        "execution_id": str(execution_id) if execution_id else None,
        "reasoning": reasoning,
        "missing_info": missing_info,
        "prompt_version_id": str(prompt_version_id) if prompt_version_id else None,
        "usage": usage.model_dump(mode="json") if usage is not None else None,
        "expected_version": expected_version,
        "force": force,
    } | ({"agent": agent} if agent is not None else {})
    args_hash = request_hash("record_execution", args) if idempotency_key else ""
    # Worked out before the first statement, which takes the write lock: hashing and pricing hold nobody.
    finished: ExecutionChange = {
        "output_data": output_data,
        "output_hash": json_hash(output_data),
        "reasoning": reasoning,
        "missing_info": missing_info,
        "updated_by": actor,
    }
    if idempotency_key:
        finished["idempotency_key"], finished["request_hash"] = idempotency_key, args_hash
    call = _Record(
        project_id, process_id, output_data, input_data, execution_id, prompt_version_id, usage, force, actor, agent,
        output_hash=finished["output_hash"] or "", quoted=costs.quote(usage) if usage is not None else None,
        finished=finished,
    )  # fmt: skip
    loaded = await _load_record(session, call, idempotency_key, args_hash, expected_version)
    if isinstance(loaded, RecordReply):
        return loaded
    pipeline, schemas, checks = loaded
    call.finished["completed_at"] = utcnow()
    if execution_id is None:
        done = await _record_new(session, call, pipeline, schemas, checks)
    else:
        done = await _finish_started(session, call, pipeline, execution_id)
    return await _apply_finish(session, call, pipeline, done)


async def _load_record(
    session: AsyncSession, call: _Record, idempotency_key: str | None, args_hash: str, expected_version: int | None
) -> RecordReply | tuple[ProjectPipeline, Schemas, Checks]:
    """The project under its lock with the step's schemas, the output checked, leases past due expired;
    or the reply a replayed call already had."""
    ahead = {"output_data": call.output_data} | (
        {"input_data": call.input_data or {}} if call.execution_id is None else {}
    )
    checks = await check_ahead(session, call.project_id, call.process_id, **ahead)
    pipeline = await pipeline_state.load(session, call.project_id, lock=True, around=call.process_id)
    if (replayed := await _replay(session, idempotency_key, args_hash)) is not None:
        return RecordReply.model_validate(replayed)
    pipeline.definition(call.process_id)
    await leases.expire_due(session, pipeline)
    pipeline.check_version(call.process_id, expected_version)
    schemas = await pipeline.catalogue.schemas_of(session, call.process_id)
    await checks.validate(schemas[1], call.output_data, what="output_data", process_id=call.process_id)
    await _check_prompt(session, call.prompt_version_id)
    return pipeline, schemas, checks


async def _record_new(
    session: AsyncSession, call: _Record, pipeline: ProjectPipeline, schemas: Schemas, checks: Checks
) -> _Finished:
    """A one-call record: a new execution, completed (a running step only with force: its execution then
    finishes as superseded)."""
    process_id, state = call.process_id, pipeline.state(call.process_id)
    note = None
    if state == State.RUNNING:
        if not call.force:
            await _refuse_over_running(session, call.project_id, process_id)
        note = (
            f"process {process_id!r} had a running execution: it finishes as superseded unless finished with force=true"
        )
    if not call.force:
        await pipeline_state.read_checks(session, pipeline, pipeline.graph.get(process_id, ()))
    pipeline.check_ready(process_id, force=call.force)
    decision = rules.finish(state, started=False, changed_since_start=False, force=call.force)
    input_data = {} if call.input_data is None else call.input_data
    await checks.validate(schemas[0], input_data, what="input_data", process_id=process_id)
    key = pipeline_state.input_key(pipeline, process_id, json_hash(input_data), call.prompt_version_id, schemas)
    finished = call.finished
    finished["status"], finished["prompt_version_id"] = decision.status.value, call.prompt_version_id
    current = _current(pipeline, process_id)
    execution = await ExecutionRepository(session).create(
        project_id=call.project_id,
        process_id=process_id,
        input_data=input_data,
        inputs_from=pipeline_state.lineage(pipeline, process_id),
        input_key=key,
        started_at=finished["completed_at"],
        created_by=call.actor,
        agent=call.agent or call.actor,
        **finished,
    )
    await _starts_the_project(session, pipeline, call.actor)
    return _Finished(execution, decision, note, current, state)


async def _finish_started(
    session: AsyncSession, call: _Record, pipeline: ProjectPipeline, execution_id: uuid.UUID
) -> _Finished:
    """The finish of a started execution: fenced off when its lease passed and another took the step (the
    output and usage kept for audit), superseded when another execution changed the step meanwhile."""
    execution = await _running_execution(session, execution_id, call.project_id, call.process_id, call.input_data)
    finished, current = call.finished, _current(pipeline, call.process_id)
    fence = await leases.fence(session, execution)
    if fence is not None and fence.holder is not None:
        await _keep_for_audit(session, execution, finished, call.usage, call.quoted, pipeline, call.actor)
        raise fence.error(execution, usage_logged=call.usage is not None)
    # An expired execution nobody took over finishes as if its lease had held.
    state = pipeline.state(call.process_id)
    changed = _changed_since(State.RUNNING if fence is not None else state, current, execution.started_at)
    decision = rules.finish(state, started=True, changed_since_start=changed, force=call.force)
    if execution.idempotency_key is not None:
        # The start's key stays with the row; this call is not replayable by its own key.
        finished.pop("idempotency_key", None)
        finished.pop("request_hash", None)
    finished["status"] = decision.status.value
    finished["prompt_version_id"] = call.prompt_version_id or execution.prompt_version_id
    note = None
    if fence is not None:  # expired, and nobody took the step over: the finish counts
        finished["error_message"] = None
        note = "this execution's lease had expired, but nobody took the step over: the finish counts"
    await leases.release(session, execution)
    await ExecutionRepository(session).update(execution, **finished)
    return _Finished(execution, decision, note, current, state)


async def _apply_finish(
    session: AsyncSession, call: _Record, pipeline: ProjectPipeline, done: _Finished
) -> RecordReply:
    """What the finish does to the step (completed, with the cascade downstream when the output is new) and
    the reply: what it replaced, what it opened, the usage logged and the budget after it."""
    process_id, execution, decision, current = call.process_id, done.execution, done.decision, done.current
    current_hash = None if current is None else current[1]
    # A finish that leaves the step as it was changes no current output.
    output_changed = decision.target is not None and call.output_hash != current_hash
    winner = current[0] if decision.superseded and current is not None else None
    invalidated: list[InvalidatedOut] = []
    note = _finish_note(pipeline, process_id, decision, winner) or done.note
    if decision.target is not None and not decision.late and not decision.superseded:
        now = call.finished.get("completed_at") or utcnow()
        change = StateChange(
            decision.target, now, sets_current=True, current=execution.id, current_hash=call.output_hash
        )
        await pipeline_state.apply(session, pipeline, process_id, change)
        if output_changed and decision.cascades:
            reason = f"upstream {process_id!r} has a new output (execution {execution.id})"
            invalidated = await pipeline_state.cascade(session, pipeline, process_id, reason)
        elif note is None:
            note = _unchanged_note(pipeline, process_id)
    after = await _after_completion(session, pipeline, process_id, call.actor) if decision.target is not None else None
    if after is not None and (required := pipeline.definition(process_id).required_checks):
        waits = f"its dependants wait for its checks {', '.join(required)} (record_check)"
        note = f"{note}; {waits}" if note else waits
    replaced = await _replaced(session, done)
    cost, budget = await _log_usage(session, pipeline, execution, call.usage, call.quoted, call.actor, call.agent)
    reply = RecordReply(
        execution=_finished_ref(execution),
        state=_state_out(pipeline, process_id),
        output_changed=output_changed,
        invalidated=invalidated[:MAX_LISTED],
        invalidated_count=len(invalidated),
        late_finish=decision.late,
        superseded_by=winner,
        replaced=replaced,
        unblocked=after[0] if after else None,
        project_completed=after[1] if after else None,
        note=note,
        cost=cost,
        budget=budget,
    )
    if "idempotency_key" in call.finished:  # this call's key is on the row: its repeats return this reply
        execution.reply = reply.model_dump(mode="json")
        await session.flush()
    return reply


async def _replaced(session: AsyncSession, done: _Finished) -> ReplacedOut | None:
    """The execution whose output stopped being the step's current one. Over a completed step that is a
    replacement, never silent: the replaced execution becomes `superseded`, naming this one (over a running,
    stale or failed step it is a redo, and the old execution keeps its status)."""
    current, decision, execution = done.current, done.decision, done.execution
    if current is None or current[0] == execution.id or decision.target is None or decision.late or decision.superseded:
        return None
    if done.was != State.COMPLETED:
        return ReplacedOut(execution_id=current[0], completed_at=current[2])
    marked = await ExecutionRepository(session).supersede(current[0], execution.id)
    by, completed_at = marked if marked is not None else (None, current[2])  # None: pruned
    return ReplacedOut(execution_id=current[0], completed_at=completed_at, by=by)


def _finish_note(
    pipeline: ProjectPipeline, process_id: str, decision: rules.Finish, winner: uuid.UUID | None
) -> str | None:
    """Why a finish left the step as it was: it went stale meanwhile, or another execution overtook it."""
    if decision.late:
        cause = pipeline.rows[process_id].invalidated_by_process_id
        return (
            f"process {process_id!r} went stale while this execution ran (cause: {cause}); the output is stored "
            "but the state stays stale: run it again"
        )
    if decision.superseded:
        return (
            f"execution {winner or 'another execution'} changed {process_id!r} while this one ran and stays "
            "current; this output is stored as superseded. To make it current, record it again (record_execution "
            "without execution_id, force=true)"
        )
    return None


def _unchanged_note(pipeline: ProjectPipeline, process_id: str) -> str:
    """A completion with the current output: nothing goes stale, and what an earlier change left stale is named."""
    note = "the output equals the current one: nothing downstream was invalidated"
    still = pipeline_state.stale_downstream(pipeline, process_id)
    if still:
        named = ", ".join(still[:MAX_BLOCKERS]) + (
            f" and {len(still) - MAX_BLOCKERS} more" if len(still) > MAX_BLOCKERS else ""
        )
        note += f"; stale from an earlier change, still to re-run: {named}"
    return note


async def _log_usage(
    session: AsyncSession,
    pipeline: ProjectPipeline,
    execution: ProcessExecution,
    usage: UsageIn | None,
    quoted: Any,
    actor: str | None,
    agent: str | None,
) -> tuple[LoggedCost | None, BudgetStatus | None]:
    """A finish's usage, logged against its execution (charged to the agent named, else the one that
    started it), and the budget after it; without usage, the budget only when a `block` budget is passed
    (money already spent is always stored: the reply says plainly that further starts are refused)."""
    project = pipeline.project
    if usage is None:
        if project.budget_policy != BudgetPolicy.BLOCK or project.budget_usd is None:
            return None, None
        judged = await costs.judge(session, project)
        return None, costs.status_of(project, judged) if judged.spent > project.budget_usd else None
    logged = await costs.record_usage(
        session,
        usage,
        project_id=project.id,
        process_id=execution.process_id,
        execution_id=execution.id,
        actor=actor,
        agent=agent or execution.agent,
        links_checked=True,  # this call just checked the project and process and created the execution
        prices_token=pipeline.prices_token,
        quoted=quoted,
    )
    # The row echoes what the agent just sent: the reply keeps what it did not know.
    cost = LoggedCost(
        id=logged.id,
        cost_usd=logged.cost_usd,
        cost_source=logged.cost_source,
        note=None if logged.priced else logged.note,  # only why a cost is missing is news
    )
    # The project row loaded under the lock, its totals just moved by the cost logged (ProjectRepository._sync).
    judged = await costs.judge(session, project)
    if not logged.cost_usd:
        return cost, costs.status_of(project, judged)
    who = agent or execution.agent or actor
    alerts = await costs.alert(
        session, project, judged, agent=who, model=f"{usage.provider}/{usage.model}", shared=pipeline.shared_budget
    )
    return cost, costs.status_of(project, judged, crossed=alerts.crossed, caps=alerts.caps, pipeline=alerts.pipeline)


async def _keep_for_audit(
    session: AsyncSession,
    execution: ProcessExecution,
    finished: ExecutionChange,
    usage: UsageIn | None,
    quoted: Any,
    pipeline: ProjectPipeline,
    actor: str | None,
) -> None:
    """A fenced late finish: its output stays on the expired execution (never current) and the money it
    spent is logged against it, counted as rework."""
    await ExecutionRepository(session).update(
        execution,
        output_data=finished.get("output_data"),
        output_hash=finished.get("output_hash"),
        reasoning=finished.get("reasoning"),
        missing_info=finished.get("missing_info"),
        updated_by=finished.get("updated_by"),
    )
    if usage is not None:
        await costs.record_usage(
            session,
            usage,
            project_id=execution.project_id,
            process_id=execution.process_id,
            execution_id=execution.id,
            actor=actor,
            agent=execution.agent,
            links_checked=True,
            prices_token=pipeline.prices_token,
            quoted=quoted,
        )


def _finished_ref(execution: ProcessExecution) -> ExecutionRef:
    """The execution as a record reply names it: a one-call record started when it completed."""
    ref = ExecutionRef.model_validate(execution)
    if ref.started_at == ref.completed_at:
        ref.started_at = None
    return ref


def _changed_since(
    state: State, current: tuple[uuid.UUID, str | None, datetime | None] | None, started_at: datetime | None
) -> bool:
    """Another execution changed the step after this one started: a newer result is current, or the step
    is no longer running (only another execution's finish or failure takes it out of running, short of
    going stale)."""
    if state != State.RUNNING:
        return True
    if current is None or current[2] is None or started_at is None:
        return False
    return _aware(current[2]) > _aware(started_at)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _running_execution(
    session: AsyncSession, execution_id: uuid.UUID, project_id: uuid.UUID, process_id: str, input_data: Any | None
) -> ProcessExecution:
    execution = await ExecutionRepository(session).get(execution_id)
    if execution is None:
        raise NotFound(f"execution {execution_id} does not exist", hint="Use the id returned by start_execution")
    if execution.project_id != project_id or execution.process_id != process_id:
        raise InvalidArgument(
            f"execution {execution_id} belongs to process {execution.process_id!r} of project {execution.project_id}",
            hint="Pass that project_id and process_id, or omit execution_id to record a new execution",
        )
    if execution.status not in (ExecutionStatus.RUNNING.value, ExecutionStatus.EXPIRED.value):
        raise InvalidTransition(
            f"execution {execution_id} is already {execution.status}",
            hint="Only a running execution can be finished; omit execution_id to record a new one",
        )
    if input_data is not None and input_data != execution.input_data:
        raise InvalidArgument(
            "input_data differs from the input given at start_execution",
            hint="Omit input_data when finishing a started execution",
        )
    return execution


async def fail(session: AsyncSession, *, execution_id: uuid.UUID, error_message: str, actor: str | None) -> FailReply:
    executions = ExecutionRepository(session)
    found = await executions.get(execution_id)
    if found is None:
        raise NotFound(f"execution {execution_id} does not exist", hint="Use the id returned by start_execution")
    pipeline = await pipeline_state.load(session, found.project_id, lock=True, around=found.process_id)
    await leases.expire_due(session, pipeline)
    await session.refresh(found)  # re-read under the lock: another call may have finished it
    fence = await leases.fence(session, found)
    if fence is not None and fence.holder is not None:
        await executions.update(found, error_message=error_message[:2000], updated_by=actor)
        raise fence.error(found, kept="its error message is")
    if found.status != ExecutionStatus.RUNNING.value and fence is None:
        raise InvalidTransition(
            f"execution {execution_id} is already {found.status}", hint="Only a running execution can fail"
        )
    await leases.release(session, found)
    await executions.update(
        found,
        status=ExecutionStatus.FAILED.value,
        error_message=error_message,
        completed_at=utcnow(),
        updated_by=actor,
    )
    state = pipeline.state(found.process_id)
    current = _current(pipeline, found.process_id)
    # An expired attempt was counted when it expired; its failure changes the step no more.
    if fence is None and not _changed_since(state, current, found.started_at) and state == State.RUNNING:
        await leases.fail_step(session, pipeline, found.process_id, utcnow())
    return FailReply(execution=ExecutionRef.model_validate(found), state=_state_out(pipeline, found.process_id))


async def invalidate(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    process_id: str,
    reason: str | None,
    expected_version: int | None,
) -> InvalidateReply:
    pipeline = await pipeline_state.load(session, project_id, lock=True, around=process_id)
    pipeline.definition(process_id)
    pipeline.check_version(process_id, expected_version)
    current = pipeline.state(process_id)
    rules.next_state(current, Event.INVALIDATE, process_id=process_id)
    await _starts_the_project(session, pipeline, None)  # a completed project has work again
    why = reason or "invalidated by hand"
    if current != State.STALE:  # already stale: its own state does not change, the cascade still runs
        change = StateChange(State.STALE, utcnow(), invalidated_by=process_id, reason=why)
        await pipeline_state.apply(session, pipeline, process_id, change)
    invalidated = await pipeline_state.cascade(
        session, pipeline, process_id, f"upstream {process_id!r} was invalidated: {why}"
    )
    return InvalidateReply(
        state=_state_out(pipeline, process_id), invalidated=invalidated[:MAX_LISTED], invalidated_count=len(invalidated)
    )


async def get(session: AsyncSession, execution_id: uuid.UUID) -> ExecutionOut:
    repo = ExecutionRepository(session)
    execution = await repo.get(execution_id)
    if execution is None:
        raise NotFound(f"execution {execution_id} does not exist", hint="list_executions shows a project's executions")
    out = ExecutionOut.model_validate(execution)
    out.current = bool(await repo.current_among([execution]))
    out.checks = await checks_of(session, execution_id) or None
    return out


ERROR_IN_ROW = 100


def _row(execution: ProcessExecution, include_data: bool, *, one_project: bool, current: bool) -> ExecutionRow:
    row = ExecutionRow.model_validate(execution)
    row.current = current
    if one_project:
        row.project_id = None
    if include_data:
        return row
    error = row.error_message
    if error is not None and len(error) > ERROR_IN_ROW:
        error = error[: ERROR_IN_ROW - 1] + "…"
    return row.model_copy(
        update={
            "error_message": error,
            "input_data": None,
            "output_data": None,
            "output_hash": None,
            "reasoning": None,
            "missing_info": None,
        }
    )


async def list_page(
    session: AsyncSession,
    *,
    project_id: uuid.UUID | None,
    process_id: str | None,
    status: str | None,
    page: int,
    page_size: int,
    include_data: bool = False,
) -> ExecutionPage:
    repo = ExecutionRepository(session)
    result = await repo.list(
        project_id=project_id, process_id=process_id, status=status, page=page, page_size=page_size
    )
    current = await repo.current_among(result.items)
    return ExecutionPage(
        items=[
            _row(e, include_data, one_project=project_id is not None, current=e.id in current) for e in result.items
        ],
        **envelope(result),
    )
