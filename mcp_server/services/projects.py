"""Project use cases."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.enums import DEFAULT_PIPELINE
from mcp_server.errors import Conflict, InvalidArgument, NotFound
from mcp_server.models import Project, ProjectStatus
from mcp_server.repositories import BudgetAlertRepository, ExecutionRepository, ProjectRepository, StateRepository
from mcp_server.schemas.common import envelope
from mcp_server.schemas.project import BudgetAlertOut, DeletedProject, ProjectOut, ProjectPage, ProjectRow
from mcp_server.services import caps as limits
from mcp_server.services import periods


async def load_project(session: AsyncSession, project_id: uuid.UUID, *, include_deleted: bool = False) -> Project:
    project = await ProjectRepository(session).get(project_id, include_deleted=include_deleted)
    if project is None:
        raise project_not_found(project_id, include_deleted=include_deleted)
    return project


def project_not_found(project_id: uuid.UUID, *, include_deleted: bool) -> NotFound:
    return NotFound(
        f"project {project_id} does not exist" + ("" if include_deleted else " or is deleted"),
        hint="Call list_projects to find valid ids (include_deleted=true shows deleted ones)",
    )


async def create(
    session: AsyncSession,
    *,
    name: str,
    description: str | None,
    metadata: dict[str, Any] | None,
    budget_usd: Decimal | None,
    actor: str | None,
    pipeline_id: str = DEFAULT_PIPELINE,
    budget_policy: str = "warn",
    budget_period: str = periods.NONE,
    caps: dict[str, Any] | None = None,
    alert_thresholds: list[int] | None = None,
) -> ProjectOut:
    from mcp_server.services import definitions

    await definitions.check_pipeline(session, pipeline_id)
    project = await ProjectRepository(session).create(
        pipeline_id=pipeline_id,
        budget_policy=str(budget_policy),
        budget_period=periods.check(budget_period),
        caps=None if caps is None else limits.check(caps) or None,
        alert_thresholds=None if alert_thresholds is None else limits.check_thresholds(alert_thresholds),
        name=name,
        description=description,
        metadata_=metadata or {},
        budget_usd=budget_usd,
        status=ProjectStatus.DRAFT,
        created_by=actor,
        updated_by=actor,
    )
    return await project_out(session, project)


async def get(session: AsyncSession, project_id: uuid.UUID) -> ProjectOut:
    return await project_out(session, await load_project(session, project_id))


async def project_out(session: AsyncSession, project: Project) -> ProjectOut:
    """The project as get_project shows it: its budget judged over its period, and its budget alerts."""
    from mcp_server.services import costs

    out = ProjectOut.model_validate(project)
    alerts = await BudgetAlertRepository(session).recent([f"project:{project.id}", f"pipeline:{project.pipeline_id}"])
    update: dict[str, Any] = {
        "budget_alerts": [
            BudgetAlertOut(
                scope=alert.scope if alert.owner.startswith("project:") else f"pipeline {project.pipeline_id}",
                threshold=alert.threshold,
                spent_usd=alert.spent_usd,
                budget_usd=alert.budget_usd,
                period_start=None if alert.period_start == periods.EPOCH else alert.period_start,
                crossed_at=alert.crossed_at,
            )
            for alert in alerts
        ]
    }
    saved = await ExecutionRepository(session).saved(project_id=project.id)
    if saved:
        update["saved_usd"] = saved
    if project.budget_usd is not None:
        status = costs.status_of(project, await costs.judge(session, project))
        update |= {
            "remaining_usd": status.remaining_usd,
            "exceeded": status.exceeded,
            "period_start": status.period_start,
            "period_spent_usd": status.period_spent_usd,
            "resets_at": status.resets_at,
        }
    return out.model_copy(update=update)


async def list_page(
    session: AsyncSession, *, status: ProjectStatus | None, page: int, page_size: int, include_deleted: bool
) -> ProjectPage:
    result = await ProjectRepository(session).list(
        status=status, include_deleted=include_deleted, page=page, page_size=page_size
    )
    return ProjectPage(
        items=[ProjectRow.model_validate(p) for p in result.items],
        **envelope(result),
    )


# Fields update_project can empty (null cannot mean "clear": strict-mode clients send null for every
# argument they leave out), and what each becomes.
CLEARED_VALUES: dict[str, Any] = {
    "description": None,
    "budget_usd": None,
    "metadata": {},
    "caps": None,
    "alert_thresholds": None,
}


async def update(
    session: AsyncSession,
    project_id: uuid.UUID,
    *,
    changes: dict[str, Any],
    actor: str | None,
    clear: list[str] | None = None,
) -> ProjectOut:
    both = sorted(set(clear or []) & set(changes))
    if both:
        raise InvalidArgument(f"{', '.join(both)} both given and cleared", hint="Pass one of them")
    changes = changes | {name: CLEARED_VALUES[name] for name in clear or []}
    project = await load_project(session, project_id)
    if changes.get("pipeline_id", project.pipeline_id) != project.pipeline_id:
        await _check_pipeline_change(session, project, changes["pipeline_id"])
    if "budget_period" in changes:
        changes["budget_period"] = periods.check(changes["budget_period"])
    if changes.get("caps") is not None:
        changes["caps"] = limits.check(changes["caps"]) or None
    if changes.get("alert_thresholds") is not None:
        changes["alert_thresholds"] = limits.check_thresholds(changes["alert_thresholds"])
    fields = {("metadata_" if key == "metadata" else key): value for key, value in changes.items()}
    await ProjectRepository(session).update(project, updated_by=actor, **fields)
    return await project_out(session, project)


async def _check_pipeline_change(session: AsyncSession, project: Project, pipeline_id: str) -> None:
    """A project may change pipelines only before it has executions: its states and history name the
    processes of the pipeline it ran through."""
    from mcp_server.services import definitions

    await definitions.check_pipeline(session, pipeline_id)
    await StateRepository(session).lock_project(project.id)  # no first execution can slip in meanwhile
    if await ProjectRepository(session).has_executions(project.id):
        raise Conflict(
            f"project {project.id} already has executions in pipeline {project.pipeline_id!r}",
            hint="A project's pipeline is fixed once it has run; create a new project for the other pipeline",
        )


async def delete(session: AsyncSession, project_id: uuid.UUID, *, actor: str | None) -> DeletedProject:
    project = await load_project(session, project_id)
    await ProjectRepository(session).soft_delete(project, by=actor)
    return DeletedProject.model_validate(project)


async def restore(session: AsyncSession, project_id: uuid.UUID, *, actor: str | None) -> ProjectOut:
    project = await load_project(session, project_id, include_deleted=True)
    if project.is_deleted:
        await ProjectRepository(session).restore(project, by=actor)
    return await project_out(session, project)
