"""What the dashboard shows, aggregated on the server (read-only units of work, existing services): the
browser gets one small JSON document per view, never raw history."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Hashable
from typing import Any, cast

import anyio.to_thread
from sqlalchemy import Table, Text, bindparam, case, func, literal, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.engine import database_key
from mcp_server.enums import StateName
from mcp_server.models import ExecutionCheck, ProcessExecution, ProcessState, Project, ProjectStatus, Revision
from mcp_server.repositories import (
    BudgetAlertRepository,
    ExecutionRepository,
    MetricsRepository,
    ProcessDefinitionRepository,
    ProjectRepository,
    StateRepository,
)
from mcp_server.repositories.revisions import CATALOGUE_PREFIX
from mcp_server.schemas.cost import CostFilters
from mcp_server.schemas.pipeline import PipelineStatus, ProcessStatus
from mcp_server.schemas.portable import reply_data
from mcp_server.services import costs, pipeline_state, status
from mcp_server.services.kept import Kept

PREVIEW_CHARS = 160  # of a step's current output
TIMELINE_PAGE = 50
STEP_PAGE = 200  # step rows in one page of the project view
MAX_VIEW_BYTES = 1_000_000  # of step rows in one page of the project view
VIEW_CLOCK = 10.0  # seconds: how stale a time-driven change (a lease, a retry) may be shown
MOVING = (StateName.RUNNING.value, StateName.FAILED.value)  # states that time alone can change
MAX_DEPENDS_SHOWN = 20  # dependencies named in a step row (depends_count has them all)
# The project columns the project view shows or derives from (its change tokens, with the state rows').
BASIS_COLUMNS = (
    "name",
    "status",
    "pipeline_id",
    "is_deleted",
    "updated_at",
    "budget_usd",
    "budget_policy",
    "spent_usd",
    "reserved_usd",
    "unpriced_calls",
)
MAX_DAYS = 90  # cost by day: the most recent days shown


def _preview(output: Any) -> str | None:
    if output is None:
        return None
    text = json.dumps(output, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _money(value: Any) -> str | None:
    return None if value is None else format(value, "f")


async def projects(session: AsyncSession, *, page: int = 1, page_size: int = 50) -> dict[str, Any]:
    """A page of projects (newest first): pipeline, steps by state, budget, last activity."""
    listed = await ProjectRepository(session).list(page=page, page_size=page_size)
    counted = await StateRepository(session).counts([project.id for project in listed.items])
    steps = {
        pipeline_id: processes
        for pipeline_id, (processes, _) in (await ProcessDefinitionRepository(session).pipelines()).items()
    }
    rows = []
    for project in listed.items:
        found = counted.get(project.id, {"counts": {}, "last": None})
        counts = {state.value: found["counts"].get(state.value, 0) for state in StateName}
        counts[StateName.EMPTY.value] += max(steps.get(project.pipeline_id, 0) - sum(found["counts"].values()), 0)
        budget = costs.status_of(project, await costs.judge(session, project))
        last = found["last"] or project.updated_at or project.created_at
        rows.append(
            {
                "id": str(project.id),
                "name": project.name,
                "status": ProjectStatus(project.status).value,
                "pipeline_id": project.pipeline_id,
                "steps": steps.get(project.pipeline_id, 0),
                "counts": counts,
                "budget_usd": _money(budget.budget_usd),
                "spent_usd": _money(budget.spent_usd),
                "reserved_usd": _money(budget.reserved_usd),
                "remaining_usd": _money(budget.remaining_usd),
                "exceeded": budget.exceeded,
                "budget_period": budget.period,
                "last_activity": last.isoformat() if last else None,
            }
        )
    return {"items": rows, "total": listed.total, "page": listed.page, "has_more": listed.has_more}


def _layers(graph: dict[str, list[str]], order: list[str]) -> dict[str, int]:
    """Each step's layer: 0 for steps without dependencies, else one more than its deepest dependency."""
    layer: dict[str, int] = {}
    for pid in order:  # topological: dependencies come first
        layer[pid] = 1 + max((layer.get(dep, 0) for dep in graph.get(pid, ())), default=-1)
    return layer


_PROJECTS = cast(Table, Project.__table__)
_STATES = cast(Table, ProcessState.__table__)
_EXECUTIONS = cast(Table, ProcessExecution.__table__)
# Per project: how many state rows, the sum of their versions (every change of a row raises its version by
# one), when the last one changed, and how many are running or failed.
_STATE_TOKENS = (
    select(
        _STATES.c.project_id,
        func.count().label("rows"),
        func.sum(_STATES.c.version).label("versions"),
        func.max(_STATES.c.last_updated_at).label("last"),
        func.sum(case((_STATES.c.state.in_(MOVING), 1), else_=0)).label("moving"),
    )
    .where(_STATES.c.project_id == bindparam("project_id"))
    .group_by(_STATES.c.project_id)
    .subquery()
)
_CHECKS = cast(Table, ExecutionCheck.__table__)
# Per project: its check results (docs/design.md, "Checks"): how many, how many passed, the last recorded.
_CHECK_TOKENS = (
    select(
        _CHECKS.c.project_id,
        func.count().label("checks"),
        func.sum(case((_CHECKS.c.passed, 1), else_=0)).label("passed"),
        func.max(func.coalesce(_CHECKS.c.updated_at, _CHECKS.c.created_at)).label("checked"),
    )
    .where(_CHECKS.c.project_id == bindparam("project_id"))
    .group_by(_CHECKS.c.project_id)
    .subquery()
)
_BASIS = (
    select(
        *(_PROJECTS.c[name] for name in BASIS_COLUMNS),
        select(Revision.token)
        .where(Revision.name == literal(CATALOGUE_PREFIX) + _PROJECTS.c.pipeline_id)
        .scalar_subquery()
        .label("catalogue_token"),
        _STATE_TOKENS.c.rows,
        _STATE_TOKENS.c.versions,
        _STATE_TOKENS.c.last,
        _STATE_TOKENS.c.moving,
        _CHECK_TOKENS.c.checks,
        _CHECK_TOKENS.c.passed,
        _CHECK_TOKENS.c.checked,
    )
    .select_from(
        _PROJECTS.outerjoin(_STATE_TOKENS, _STATE_TOKENS.c.project_id == _PROJECTS.c.id).outerjoin(
            _CHECK_TOKENS, _CHECK_TOKENS.c.project_id == _PROJECTS.c.id
        )
    )
    .where(_PROJECTS.c.id == bindparam("project_id"))
)


async def project_basis(session: AsyncSession, project_id: uuid.UUID) -> Hashable | None:
    """What the project view is made of, as change tokens read in one cheap statement (no step row is
    read whole): the project's own figures, its pipeline's catalogue token, its state rows' count,
    version sum and last change, and its checks' count, passes and last record. Equal tokens, equal view.
    None when nothing can tell (no such project, or a pipeline whose catalogue has no token yet): then the
    view is built every time.

    A running or failed step can also change with time alone (a lease runs out, a retry comes due): while
    the project has one, the tokens include the VIEW_CLOCK period, so such a view is built at most once
    a period, however many pages poll it."""
    row = (await session.execute(_BASIS, {"project_id": project_id})).first()
    if row is None or row.catalogue_token is None:
        return None
    clock = int(time.monotonic() // VIEW_CLOCK) if row.moving else None
    return (database_key(session), *tuple(row), clock)


async def project(session: AsyncSession, project_id: uuid.UUID, *, page: int = 1) -> dict[str, Any]:
    """One project: its pipeline as layers of steps with states, causes and current outputs (a page of at
    most STEP_PAGE steps and MAX_VIEW_BYTES, in the order to run them, with how many were left out);
    counts; budget. The step rows are made and measured off the event loop."""
    pipeline = await pipeline_state.load(session, project_id, lock=False)
    snapshot = await status.pipeline_status(session, project_id, page=page, page_size=STEP_PAGE, loaded=pipeline)
    rows = [pipeline.rows.get(row.process_id) for row in snapshot.processes]
    previews = await _previews(session, [row.current_execution_id for row in rows if row and row.current_execution_id])
    return await anyio.to_thread.run_sync(_project_view, pipeline, snapshot, page, previews)


async def _previews(session: AsyncSession, execution_ids: list[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """The start of each execution's output as JSON text, cut in the database: a large output is never read
    whole (PostgreSQL writes JSONB with a space after ',' and ':')."""
    if not execution_ids:
        return {}
    head = func.substr(sql_cast(_EXECUTIONS.c.output_data, Text), 1, PREVIEW_CHARS + 1)
    query = select(_EXECUTIONS.c.id, head).where(_EXECUTIONS.c.id.in_(execution_ids))
    found: dict[uuid.UUID, str | None] = {}
    for execution_id, text in await session.execute(query):
        if text is None or text == "null":
            found[execution_id] = None
        else:
            found[execution_id] = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
    return found


def _project_view(
    pipeline: pipeline_state.ProjectPipeline,
    snapshot: PipelineStatus,
    page: int,
    previews: dict[uuid.UUID, str | None],
) -> dict[str, Any]:
    """The project view from what was read (no I/O: runs in a worker thread)."""
    layers = _layers(pipeline.graph, pipeline.order)
    steps: list[dict[str, Any]] = []
    size = 0
    for row in snapshot.processes:
        step = _step(pipeline, row, layers, previews)
        size += len(json.dumps(step, default=str))
        if size > MAX_VIEW_BYTES:
            break
        steps.append(step)
    first = (page - 1) * STEP_PAGE
    return {
        "id": str(pipeline.project_id),
        "name": snapshot.project_name,
        "pipeline_id": snapshot.pipeline_id,
        "counts": snapshot.counts,
        "ready": snapshot.ready_processes,
        "plan_count": snapshot.plan_count,
        "complete": snapshot.complete,
        "budget": reply_data(snapshot.cost),
        "steps": steps,
        "steps_total": snapshot.total,
        "steps_page": page,
        "steps_first": first + 1 if steps else 0,
        "steps_omitted": snapshot.total - len(steps),
        "steps_per_page": STEP_PAGE,
    }


def _step(
    pipeline: pipeline_state.ProjectPipeline,
    row: ProcessStatus,
    layers: dict[str, int],
    previews: dict[uuid.UUID, str | None],
) -> dict[str, Any]:
    pid = row.process_id
    state_row = pipeline.rows.get(pid)
    execution_id = state_row.current_execution_id if state_row else None
    depends_on = pipeline.graph.get(pid, [])
    return {
        "id": pid,
        "name": row.name,
        "state": row.state,
        "version": row.version,
        "layer": layers.get(pid, 0),
        "depends_on": list(depends_on[:MAX_DEPENDS_SHOWN]),
        "depends_count": len(depends_on),
        "can_run": row.can_run,
        "stale_cause": row.invalidated_by_process_id,
        "reason": row.invalidation_reason,
        "execution_id": str(execution_id) if execution_id else None,
        "updated": row.last_updated_at.isoformat() if row.last_updated_at else None,
        "output": previews.get(execution_id) if execution_id else None,
        "checks_failed": row.checks_failed,
        "checks_missing": row.checks_missing,
    }


async def timeline(session: AsyncSession, project_id: uuid.UUID, *, page: int = 1) -> dict[str, Any]:
    """The project's executions, newest first, a page at a time (no inputs or outputs)."""
    found = await ExecutionRepository(session).list(project_id=project_id, page=page, page_size=TIMELINE_PAGE)
    return {
        "items": [
            {
                "id": str(e.id),
                "process_id": e.process_id,
                "status": e.status,
                "started_at": e.started_at.isoformat() if e.started_at else None,
                "completed_at": e.completed_at.isoformat() if e.completed_at else None,
                "created_by": e.created_by,
            }
            for e in found.items
        ],
        "total": found.total,
        "page": found.page,
        "has_more": found.has_more,
    }


# The cost view of the last projects shown, by (database, project), with what it was computed from: it is
# computed again only when a cost was logged (the project's running totals and newest cost row move) or
# a step changed (what counts as rework moves), not on every poll of an open page.
_costs: Kept[tuple[str, uuid.UUID], dict[str, Any]] = Kept(64)


async def cost(session: AsyncSession, project_id: uuid.UUID) -> dict[str, Any]:
    """The project's cost by model, by agent and by day (the last MAX_DAYS), with the cost of rework apart
    (the same figures get_cost_summary gives), and its budget alerts."""
    found = await ProjectRepository(session).get(project_id, include_deleted=True)
    changed = (await StateRepository(session).counts([project_id])).get(project_id, {}).get("last")
    logged = await MetricsRepository(session).last_logged(project_id)
    basis = None if found is None else (found.spent_usd, found.unpriced_calls, changed, logged)
    key = (database_key(session), project_id)
    if (kept := _costs.get(key, basis)) is not None:
        return kept[0]
    document = await _cost(session, project_id)
    _costs.put(key, basis, document)
    return document


async def _cost(session: AsyncSession, project_id: uuid.UUID) -> dict[str, Any]:
    filters = CostFilters(project_id=project_id)
    by_model = await costs.summary(session, filters, ["provider", "model"])
    by_agent = await costs.summary(session, filters, ["agent"])
    by_day = await costs.summary(session, filters, ["day"])
    alerts = await BudgetAlertRepository(session).recent([f"project:{project_id}"])
    totals = reply_data(by_model.totals)
    return {
        "totals": {key: totals.get(key) for key in ("calls", "cost_usd", "superseded_cost_usd", "unpriced_calls")},
        "by_model": [
            {"model": f"{g.provider}/{g.model}" if g.provider else g.model, **_figures(reply_data(g))}
            for g in by_model.groups
        ],
        "by_agent": [{"agent": g.agent or "(not named)", **_figures(reply_data(g))} for g in by_agent.groups],
        "by_day": [{"day": str(g.day), **_figures(reply_data(g))} for g in by_day.groups][-MAX_DAYS:],
        "alerts": [
            {
                "scope": alert.scope,
                "threshold": alert.threshold,
                "spent_usd": _money(alert.spent_usd),
                "limit_usd": _money(alert.budget_usd),
                "crossed_at": alert.crossed_at.isoformat(),
            }
            for alert in alerts
        ],
    }


def _figures(group: dict[str, Any]) -> dict[str, Any]:
    return {
        "calls": group.get("calls", 0),
        "cost_usd": group.get("cost_usd"),
        "superseded_cost_usd": group.get("superseded_cost_usd"),
    }
