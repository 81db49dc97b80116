"""The ``projects`` toolset."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import Field

from mcp_server.app import App
from mcp_server.enums import ProjectStatus
from mcp_server.lazy import lazy_module
from mcp_server.schemas.common import JsonObject, Name, Page, PageSize, Text, Usd
from mcp_server.schemas.project import ProjectOut, ProjectPage
from mcp_server.tools.base import Registrar, actor_of, app_of

if TYPE_CHECKING:
    from mcp_server.services import projects
else:  # loaded on the first call: start-up does not import the database layer
    projects = lazy_module("mcp_server.services.projects")

ProjectId = Annotated[uuid.UUID, Field(description="The project's id (a UUID from create_project or list_projects).")]


def register(registrar: Registrar) -> None:
    tool = registrar.tool

    @tool(title="Create project", read_only=False)
    async def create_project(
        name: Annotated[Name, Field(description="Short human-readable name.")],
        ctx: Context[App],
        description: Annotated[Text | None, Field(description="What the project is about.")] = None,
        metadata: Annotated[JsonObject | None, Field(description="Free-form JSON object kept with it.")] = None,
        budget_usd: Annotated[Usd | None, Field(description="Spending limit in USD for LLM cost.")] = None,
    ) -> ProjectOut:
        """Create a project: the unit of work that runs through the pipeline and accrues LLM cost.

        Returns the project with its `id`; pass that id to the pipeline and cost tools. Status starts
        as `draft`. Set `budget_usd` to have cost replies report spent/remaining/exceeded."""
        async with app_of(ctx).db.unit_of_work() as session:
            return await projects.create(
                session,
                name=name,
                description=description,
                metadata=metadata,
                budget_usd=budget_usd,
                actor=actor_of(ctx),
            )

    @tool(title="Get project", read_only=True)
    async def get_project(project_id: ProjectId, ctx: Context[App]) -> ProjectOut:
        """Get one project by id. Deleted projects are `not_found` (restore_project brings them back)."""
        async with app_of(ctx).db.unit_of_work(write=False) as session:
            return await projects.get(session, project_id)

    @tool(title="List projects", read_only=True)
    async def list_projects(
        ctx: Context[App],
        status: Annotated[ProjectStatus | None, Field(description="Only projects in this status.")] = None,
        page: Page = 1,
        page_size: PageSize = 20,
        include_deleted: Annotated[bool, Field(description="Also list soft-deleted projects.")] = False,
    ) -> ProjectPage:
        """List projects, newest first, one page at a time (`has_more` says if another page exists)."""
        async with app_of(ctx).db.unit_of_work(write=False) as session:
            return await projects.list_page(
                session, status=status, page=page, page_size=page_size, include_deleted=include_deleted
            )

    # Destructive: it overwrites fields (metadata as a whole), which cannot be undone.
    @tool(title="Update project", read_only=False, destructive=True, idempotent=True)
    async def update_project(
        project_id: ProjectId,
        ctx: Context[App],
        name: Annotated[Name | None, Field(description="New name.")] = None,
        description: Annotated[Text | None, Field(description="New description.")] = None,
        status: Annotated[ProjectStatus | None, Field(description="draft, in_progress, completed or archived.")] = None,
        metadata: Annotated[JsonObject | None, Field(description="Replaces the whole metadata object.")] = None,
        budget_usd: Annotated[Usd | None, Field(description="New budget in USD.")] = None,
    ) -> ProjectOut:
        """Change a project's fields; only the arguments you pass are changed. Returns the project."""
        given: dict[str, Any] = {
            "name": name,
            "description": description,
            "status": status,
            "metadata": metadata,
            "budget_usd": budget_usd,
        }
        changes = {key: value for key, value in given.items() if value is not None}
        async with app_of(ctx).db.unit_of_work() as session:
            return await projects.update(session, project_id, changes=changes, actor=actor_of(ctx))

    @tool(title="Delete project", read_only=False, destructive=True, idempotent=True)
    async def delete_project(project_id: ProjectId, ctx: Context[App]) -> ProjectOut:
        """Soft-delete a project: it disappears from get/list but keeps its history; restore_project undoes it."""
        async with app_of(ctx).db.unit_of_work() as session:
            return await projects.delete(session, project_id, actor=actor_of(ctx))

    @tool(title="Restore project", read_only=False, idempotent=True)
    async def restore_project(project_id: ProjectId, ctx: Context[App]) -> ProjectOut:
        """Bring back a soft-deleted project (a project that is not deleted is returned unchanged)."""
        async with app_of(ctx).db.unit_of_work() as session:
            return await projects.restore(session, project_id, actor=actor_of(ctx))
