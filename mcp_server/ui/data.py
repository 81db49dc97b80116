"""What the dashboard shows, aggregated on the server (read-only units of work, existing services): the
browser gets one small JSON document per view, never raw history."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.engine import database_key
from mcp_server.enums import StateName
from mcp_server.models import ProjectStatus
from mcp_server.repositories import (
    ExecutionRepository,
    MetricsRepository,
    ProcessDefinitionRepository,
    ProjectRepository,
    StateRepository,
)
from mcp_server.schemas.cost import CostFilters
from mcp_server.schemas.portable import reply_data
from mcp_server.services import costs, pipeline_state, status
from mcp_server.services.kept import Kept

PREVIEW_CHARS = 160  # of a step's current output
TIMELINE_PAGE = 50
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
        budget = costs.status_of(project)
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


async def project(session: AsyncSession, project_id: uuid.UUID) -> dict[str, Any]:
    """One project: its pipeline as layers of steps with states, causes and current outputs; counts; budget."""
    pipeline = await pipeline_state.load(session, project_id, lock=False)
    snapshot = await status.pipeline_status(session, project_id, page_size=None, loaded=pipeline)
    layers = _layers(pipeline.graph, pipeline.order)
    current = {pid: row.current_execution_id for pid, row in pipeline.rows.items() if row.current_execution_id}
    executions = ExecutionRepository(session)
    outputs = await executions.outputs(current.values())
    steps = []
    for row in snapshot.processes:
        pid = row.process_id
        state_row = pipeline.rows.get(pid)
        execution_id = current.get(pid)
        steps.append(
            {
                "id": pid,
                "name": row.name,
                "state": row.state,
                "version": row.version,
                "layer": layers.get(pid, 0),
                "depends_on": list(pipeline.graph.get(pid, [])),
                "can_run": row.can_run,
                "stale_cause": row.invalidated_by_process_id,
                "reason": state_row.invalidation_reason if state_row else None,
                "execution_id": str(execution_id) if execution_id else None,
                "updated": row.last_updated_at.isoformat() if row.last_updated_at else None,
                "output": _preview(outputs.get(execution_id)) if execution_id else None,
            }
        )
    return {
        "id": str(project_id),
        "name": snapshot.project_name,
        "pipeline_id": snapshot.pipeline_id,
        "counts": snapshot.counts,
        "ready": snapshot.ready_processes,
        "plan_count": snapshot.plan_count,
        "complete": snapshot.complete,
        "budget": reply_data(snapshot.cost),
        "steps": steps,
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
    """The project's cost by model and by day (the last MAX_DAYS), with the cost of rework apart: the same
    figures get_cost_summary gives."""
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
    by_day = await costs.summary(session, filters, ["day"])
    totals = reply_data(by_model.totals)
    return {
        "totals": {key: totals.get(key) for key in ("calls", "cost_usd", "superseded_cost_usd", "unpriced_calls")},
        "by_model": [
            {"model": f"{g.provider}/{g.model}" if g.provider else g.model, **_figures(reply_data(g))}
            for g in by_model.groups
        ],
        "by_day": [{"day": str(g.day), **_figures(reply_data(g))} for g in by_day.groups][-MAX_DAYS:],
    }


def _figures(group: dict[str, Any]) -> dict[str, Any]:
    return {
        "calls": group.get("calls", 0),
        "cost_usd": group.get("cost_usd"),
        "superseded_cost_usd": group.get("superseded_cost_usd"),
    }
