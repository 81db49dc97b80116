"""What the dashboard shows, aggregated on the server from read-only units of work: the browser gets one
small JSON document per view (mcp_server/schemas/dashboard.py), never raw history. Reads go through the
repositories and the services the tools use, as every tool's do."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Hashable

import anyio.to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.engine import database_key
from mcp_server.enums import StateName
from mcp_server.repositories import (
    BudgetAlertRepository,
    ExecutionRepository,
    MetricsRepository,
    ProcessDefinitionRepository,
    ProjectRepository,
    StateRepository,
)
from mcp_server.schemas.cost import CostFilters
from mcp_server.schemas.dashboard import (
    AgentCost,
    AlertView,
    CostTotals,
    CostView,
    DayCost,
    ExecutionSummary,
    ModelCost,
    ProjectList,
    ProjectSummary,
    ProjectView,
    StepView,
    Timeline,
)
from mcp_server.schemas.pipeline import PipelineStatus, ProcessStatus
from mcp_server.services import costs, pipeline_state, status
from mcp_server.services.kept import Kept

PREVIEW_CHARS = 160  # of a step's current output
TIMELINE_PAGE = 50
STEP_PAGE = 200  # step rows in one page of the project view
MAX_VIEW_BYTES = 1_000_000  # of step rows in one page of the project view
VIEW_CLOCK = 10.0  # seconds: how stale a time-driven change (a lease, a retry) may be shown
MAX_DEPENDS_SHOWN = 20  # dependencies named in a step row (depends_count has them all)
MAX_DAYS = 90  # cost by day: the most recent days shown


async def projects(session: AsyncSession, *, page: int = 1, page_size: int = 50) -> ProjectList:
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
        rows.append(
            ProjectSummary(
                id=project.id,
                name=project.name,
                status=project.status,
                pipeline_id=project.pipeline_id,
                steps=steps.get(project.pipeline_id, 0),
                counts=counts,
                budget_usd=budget.budget_usd,
                spent_usd=budget.spent_usd,
                reserved_usd=budget.reserved_usd,
                remaining_usd=budget.remaining_usd,
                exceeded=budget.exceeded,
                budget_period=budget.period,
                last_activity=found["last"] or project.updated_at or project.created_at,
            )
        )
    return ProjectList(items=rows, total=listed.total, page=listed.page, has_more=listed.has_more)


def _layers(graph: dict[str, list[str]], order: list[str]) -> dict[str, int]:
    """Each step's layer: 0 for steps without dependencies, else one more than its deepest dependency."""
    layer: dict[str, int] = {}
    for pid in order:  # topological: dependencies come first
        layer[pid] = 1 + max((layer.get(dep, 0) for dep in graph.get(pid, ())), default=-1)
    return layer


async def project_basis(session: AsyncSession, project_id: uuid.UUID) -> Hashable | None:
    """What the project view is made of, as change tokens read in one cheap statement
    (ProjectRepository.view_tokens). Equal tokens, equal view. None when nothing can tell (no such
    project, or a pipeline whose catalogue has no token yet): then the view is built every time.

    A running or failed step can also change with time alone (a lease runs out, a retry comes due): while
    the project has one, the tokens include the VIEW_CLOCK period, so such a view is built at most once
    a period, however many pages poll it."""
    found = await ProjectRepository(session).view_tokens(project_id)
    if found is None or found.catalogue_token is None:
        return None
    clock = int(time.monotonic() // VIEW_CLOCK) if found.moving else None
    return (database_key(session), *found.values, clock)


async def project(session: AsyncSession, project_id: uuid.UUID, *, page: int = 1) -> ProjectView:
    """One project: its pipeline as layers of steps with states, causes and current outputs (a page of at
    most STEP_PAGE steps and MAX_VIEW_BYTES, in the order to run them, with how many were left out);
    counts; budget. The step rows are made and measured off the event loop."""
    pipeline = await pipeline_state.load(session, project_id, lock=False)
    snapshot = await status.pipeline_status(session, project_id, page=page, page_size=STEP_PAGE, loaded=pipeline)
    rows = [pipeline.rows.get(row.process_id) for row in snapshot.processes]
    current = [row.current_execution_id for row in rows if row and row.current_execution_id]
    previews = await _previews(session, current)
    return await anyio.to_thread.run_sync(_project_view, pipeline, snapshot, page, previews)


async def _previews(session: AsyncSession, execution_ids: list[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """The start of each execution's output as JSON text (at most PREVIEW_CHARS characters, "…" where it
    was cut); a large output is never read whole."""
    heads = await ExecutionRepository(session).output_heads(execution_ids, PREVIEW_CHARS + 1)
    return {
        execution_id: text if text is None or len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
        for execution_id, text in heads.items()
    }


def _project_view(
    pipeline: pipeline_state.ProjectPipeline,
    snapshot: PipelineStatus,
    page: int,
    previews: dict[uuid.UUID, str | None],
) -> ProjectView:
    """The project view from what was read (no I/O: runs in a worker thread). Step rows are measured as
    JSON and the page ends before MAX_VIEW_BYTES."""
    layers = _layers(pipeline.graph, pipeline.order)
    steps: list[StepView] = []
    size = 0
    for row in snapshot.processes:
        step = _step(pipeline, row, layers, previews)
        size += len(json.dumps(step.model_dump(mode="json")))
        if size > MAX_VIEW_BYTES:
            break
        steps.append(step)
    first = (page - 1) * STEP_PAGE
    return ProjectView(
        id=pipeline.project_id,
        name=snapshot.project_name,
        pipeline_id=snapshot.pipeline_id,
        counts=snapshot.counts,
        ready=snapshot.ready_processes,
        plan_count=snapshot.plan_count,
        complete=snapshot.complete,
        budget=snapshot.cost,
        steps=steps,
        steps_total=snapshot.total,
        steps_page=page,
        steps_first=first + 1 if steps else 0,
        steps_omitted=snapshot.total - len(steps),
        steps_per_page=STEP_PAGE,
    )


def _step(
    pipeline: pipeline_state.ProjectPipeline,
    row: ProcessStatus,
    layers: dict[str, int],
    previews: dict[uuid.UUID, str | None],
) -> StepView:
    pid = row.process_id
    state_row = pipeline.rows.get(pid)
    execution_id = state_row.current_execution_id if state_row else None
    depends_on = pipeline.graph.get(pid, [])
    return StepView(
        id=pid,
        name=row.name,
        state=row.state,
        version=row.version,
        layer=layers.get(pid, 0),
        depends_on=list(depends_on[:MAX_DEPENDS_SHOWN]),
        depends_count=len(depends_on),
        can_run=row.can_run,
        stale_cause=row.invalidated_by_process_id,
        reason=row.invalidation_reason,
        execution_id=execution_id,
        updated=row.last_updated_at,
        output=previews.get(execution_id) if execution_id else None,
        checks_failed=row.checks_failed,
        checks_missing=row.checks_missing,
    )


async def timeline(session: AsyncSession, project_id: uuid.UUID, *, page: int = 1) -> Timeline:
    """The project's executions, newest first, a page at a time (no inputs or outputs)."""
    found = await ExecutionRepository(session).list(project_id=project_id, page=page, page_size=TIMELINE_PAGE)
    return Timeline(
        items=[
            ExecutionSummary(
                id=e.id,
                process_id=e.process_id,
                status=e.status,
                started_at=e.started_at,
                completed_at=e.completed_at,
                created_by=e.created_by,
            )
            for e in found.items
        ],
        total=found.total,
        page=found.page,
        has_more=found.has_more,
    )


# The cost view of the last projects shown, by (database, project), with what it was computed from: it is
# computed again only when a cost was logged (the project's running totals and newest cost row move) or
# a step changed (what counts as rework moves), not on every poll of an open page.
_costs: Kept[tuple[str, uuid.UUID], CostView] = Kept(64)


async def cost(session: AsyncSession, project_id: uuid.UUID) -> CostView:
    """The project's cost by model, by agent and by day (the last MAX_DAYS), with the cost of rework apart
    (the same figures get_cost_summary gives), and its budget alerts."""
    found = await ProjectRepository(session).get(project_id, include_deleted=True)
    changed = (await StateRepository(session).counts([project_id])).get(project_id, {}).get("last")
    logged = await MetricsRepository(session).last_logged(project_id)
    basis = None if found is None else (found.spent_usd, found.unpriced_calls, changed, logged)
    key = (database_key(session), project_id)
    if (kept := _costs.get(key, basis)) is not None:
        return kept[0]
    view = await _cost(session, project_id)
    _costs.put(key, basis, view)
    return view


async def _cost(session: AsyncSession, project_id: uuid.UUID) -> CostView:
    filters = CostFilters(project_id=project_id)
    by_model = await costs.summary(session, filters, ["provider", "model"])
    by_agent = await costs.summary(session, filters, ["agent"])
    by_day = await costs.summary(session, filters, ["day"])
    alerts = await BudgetAlertRepository(session).recent([f"project:{project_id}"])
    totals = by_model.totals
    return CostView(
        totals=CostTotals(
            calls=totals.calls,
            cost_usd=totals.cost_usd,
            superseded_cost_usd=totals.superseded_cost_usd,
            unpriced_calls=totals.unpriced_calls,
        ),
        by_model=[
            ModelCost(
                model=f"{g.provider}/{g.model}" if g.provider else g.model,
                calls=g.calls,
                cost_usd=g.cost_usd,
                superseded_cost_usd=g.superseded_cost_usd,
            )
            for g in by_model.groups
        ],
        by_agent=[
            AgentCost(
                agent=g.agent or "(not named)",
                calls=g.calls,
                cost_usd=g.cost_usd,
                superseded_cost_usd=g.superseded_cost_usd,
            )
            for g in by_agent.groups
        ],
        by_day=[
            DayCost(day=g.day, calls=g.calls, cost_usd=g.cost_usd, superseded_cost_usd=g.superseded_cost_usd)
            for g in by_day.groups[-MAX_DAYS:]
        ],
        alerts=[
            AlertView(
                scope=alert.scope,
                threshold=alert.threshold,
                spent_usd=alert.spent_usd,
                limit_usd=alert.budget_usd,
                crossed_at=alert.crossed_at,
            )
            for alert in alerts
        ],
    )
