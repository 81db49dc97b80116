"""The ``projects`` toolset."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context
from pydantic import Field, StringConstraints

from mcp_server.app import App
from mcp_server.enums import DEFAULT_PIPELINE as DEFAULT
from mcp_server.enums import BudgetPolicy, ProjectStatus
from mcp_server.lazy import lazy_module
from mcp_server.schemas.common import JsonObject, Name, NoNul, Page, PageSize, SlugRef, Text, Usd
from mcp_server.schemas.project import DeletedProject, ProjectOut, ProjectPage
from mcp_server.tools.base import ToolEntry, actor_of, app_of

if TYPE_CHECKING:
    from mcp_server.services import projects
else:  # loaded on the first call: start-up does not import the database layer
    projects = lazy_module("mcp_server.services.projects")

Clearable = Literal["description", "budget_usd", "metadata", "caps", "alert_thresholds"]
POLICY = "warn (default) or block: refuse starts past it (costs are always logged)."
PERIOD = "none (all time, default), day, week, month (UTC), rolling:7d or rolling:24h."
Period = Annotated[str, StringConstraints(max_length=20), NoNul]
CAPS = 'Caps within the budget\'s period, e.g. {"agent:writer": "0.50", "model:openai/gpt-4o": "2"}.'
Caps = Annotated[dict[str, Usd], Field(max_length=50, description=CAPS)]
Thresholds = Annotated[
    list[Annotated[int, Field(ge=1, le=1000)]],
    Field(max_length=10, description="Percents of budget and caps to alert at (default 50, 80, 100)."),
]
ProjectId = Annotated[uuid.UUID, Field(description="From create_project or list_projects.")]


async def create_project(
    name: Annotated[Name, Field(description="Short human-readable name.")],
    ctx: Context[App],
    description: Annotated[Text | None, Field(description="What the project is about.")] = None,
    metadata: Annotated[JsonObject | None, Field(description="Any JSON object to keep with it.")] = None,
    budget_usd: Annotated[Usd | None, Field(description='LLM spending limit in USD, e.g. "5.00".')] = None,
    budget_policy: Annotated[BudgetPolicy, Field(description=POLICY)] = BudgetPolicy.WARN,
    budget_period: Annotated[Period, Field(description=PERIOD)] = "none",
    caps: Caps | None = None,
    alert_thresholds: Thresholds | None = None,
    pipeline_id: Annotated[SlugRef, Field(description="Its pipeline, default `default`.")] = DEFAULT,
) -> ProjectOut:
    """Create a project: one unit of work that runs through a pipeline and accrues LLM cost.
    Returns it with its `id`; status starts `draft`."""
    return await app_of(ctx).db.run(
        lambda session: projects.create(
            session,
            name=name,
            description=description,
            metadata=metadata,
            budget_usd=budget_usd,
            budget_policy=budget_policy,
            budget_period=budget_period,
            caps=caps,
            alert_thresholds=alert_thresholds,
            pipeline_id=pipeline_id,
            actor=actor_of(ctx),
        )
    )


async def get_project(project_id: ProjectId, ctx: Context[App]) -> ProjectOut:
    """One project by id. `not_found` when deleted (restore_project brings it back)."""
    return await app_of(ctx).db.run(lambda session: projects.get(session, project_id), write=False)


async def list_projects(
    ctx: Context[App],
    status: Annotated[ProjectStatus | None, Field(description="Only projects in this status.")] = None,
    page: Page = 1,
    page_size: PageSize = 20,
    include_deleted: Annotated[bool, Field(description="Also soft-deleted ones.")] = False,
) -> ProjectPage:
    """Projects, newest first, one page at a time."""
    return await app_of(ctx).db.run(
        lambda session: projects.list_page(
            session, status=status, page=page, page_size=page_size, include_deleted=include_deleted
        ),
        write=False,
    )


async def update_project(
    project_id: ProjectId,
    ctx: Context[App],
    name: Name | None = None,
    description: Text | None = None,
    status: ProjectStatus | None = None,
    metadata: Annotated[JsonObject | None, Field(description="Replaces the whole metadata object.")] = None,
    budget_usd: Annotated[Usd | None, Field(description="Budget in USD.")] = None,
    budget_policy: BudgetPolicy | None = None,
    budget_period: Annotated[Period | None, Field(description="none, day, week, month or rolling:7d.")] = None,
    caps: Annotated[dict[str, Usd] | None, Field(max_length=50, description="Replaces all caps.")] = None,
    alert_thresholds: Thresholds | None = None,
    pipeline_id: Annotated[SlugRef | None, Field(description="Another pipeline (before any execution).")] = None,
    clear: Annotated[list[Clearable] | None, Field(description="Fields to empty.")] = None,
) -> ProjectOut:
    """Change a project; only the fields you pass (not null) change. Returns the project."""
    given: dict[str, Any] = {
        "name": name,
        "description": description,
        "status": status,
        "metadata": metadata,
        "budget_usd": budget_usd,
        "budget_policy": budget_policy,
        "budget_period": budget_period,
        "caps": caps,
        "alert_thresholds": alert_thresholds,
        "pipeline_id": pipeline_id,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    return await app_of(ctx).db.run(
        lambda session: projects.update(
            session, project_id, changes=changes, clear=list(clear or []), actor=actor_of(ctx)
        )
    )


async def delete_project(project_id: ProjectId, ctx: Context[App]) -> DeletedProject:
    """Soft-delete a project: hidden from get/list, history kept; restore_project undoes it."""
    return await app_of(ctx).db.run(lambda session: projects.delete(session, project_id, actor=actor_of(ctx)))


async def restore_project(project_id: ProjectId, ctx: Context[App]) -> ProjectOut:
    """Undo delete_project (a project that is not deleted comes back unchanged)."""
    return await app_of(ctx).db.run(lambda session: projects.restore(session, project_id, actor=actor_of(ctx)))


# The toolset, in the order tools/list publishes it.
TOOLS: tuple[ToolEntry, ...] = (
    ToolEntry(create_project, "Create project", read_only=False),
    ToolEntry(get_project, "Get project", read_only=True),
    ToolEntry(list_projects, "List projects", read_only=True),
    # Destructive: it overwrites fields (metadata as a whole), which cannot be undone.
    ToolEntry(update_project, "Update project", read_only=False, destructive=True, idempotent=True),
    ToolEntry(delete_project, "Delete project", read_only=False, destructive=True, idempotent=True),
    ToolEntry(restore_project, "Restore project", read_only=False, idempotent=True),
)
