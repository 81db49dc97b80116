"""Resources: pipeline catalogues, a project's pipeline snapshot, one execution (JSON)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError

from mcp_server.app import App
from mcp_server.errors import NotFound
from mcp_server.lazy import lazy_module
from mcp_server.schemas.portable import reply_data
from mcp_server.tools.base import app_of

if TYPE_CHECKING:
    from mcp_server.services import definitions, executions, status
else:  # loaded on the first call: start-up does not import the database layer
    definitions = lazy_module("mcp_server.services.definitions")
    executions = lazy_module("mcp_server.services.executions")
    status = lazy_module("mcp_server.services.status")

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from mcp_server.server import PipelineStateServer

JSON = "application/json"


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ResourceNotFoundError(f"not_found: {what} {value!r} is not a valid id") from None


async def processes_json(app: App) -> str:
    async with app.db.unit_of_work(write=False) as session:
        return json.dumps(reply_data(await definitions.list_all(session)), indent=2, ensure_ascii=False)


async def pipeline(pipeline_id: str, ctx: Context[App]) -> str:
    return _json(await _read(ctx, lambda session: definitions.list_all(session, pipeline_id)))


async def project_pipeline(project_id: str, ctx: Context[App]) -> str:
    project = _uuid(project_id, "project")
    return _json(await _read(ctx, lambda session: status.pipeline_status(session, project)))


async def project_graph(project_id: str, ctx: Context[App]) -> str:
    project = _uuid(project_id, "project")
    graph: str = await _read(ctx, lambda session: status.graph(session, project))
    return graph


async def execution(execution_id: str, ctx: Context[App]) -> str:
    found = _uuid(execution_id, "execution")
    return _json(await _read(ctx, lambda session: executions.get(session, found)))


@dataclass(frozen=True)
class TemplateEntry:
    """One resource template: its URI (the function's parameters fill it) and what resources/templates/list says."""

    uri: str
    fn: Callable[..., Awaitable[str]]
    name: str
    title: str
    description: str
    mime_type: str = JSON


# In the order resources/templates/list publishes them.
TEMPLATES: tuple[TemplateEntry, ...] = (
    TemplateEntry(
        "pipeline://pipelines/{pipeline_id}",
        pipeline,
        "pipeline",
        "Pipeline catalogue",
        "One pipeline's process catalogue in topological order (as list_processes).",
    ),
    TemplateEntry(
        "pipeline://projects/{project_id}",
        project_pipeline,
        "project-pipeline",
        "Project pipeline status",
        "A project's pipeline status: the same snapshot as get_pipeline_status.",
    ),
    TemplateEntry(
        "pipeline://projects/{project_id}/graph",
        project_graph,
        "project-graph",
        "Project pipeline graph",
        "A project's pipeline as a Mermaid flowchart, coloured by state; stale steps name their cause.",
        mime_type="text/vnd.mermaid",
    ),
    TemplateEntry(
        "pipeline://executions/{execution_id}",
        execution,
        "execution",
        "Execution",
        "One execution with its input, output, reasoning and status (as get_execution).",
    ),
)


def register(server: PipelineStateServer) -> None:
    server.add_context_resource(
        "pipeline://processes",
        processes_json,
        name="processes",
        title="Default pipeline catalogue",
        description="The `default` pipeline's process catalogue in topological order (as list_processes).",
    )
    for entry in TEMPLATES:
        add = server.resource(
            entry.uri, name=entry.name, title=entry.title, description=entry.description, mime_type=entry.mime_type
        )
        add(entry.fn)


async def _read(ctx: Context[App], query: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    """Run one read in its own unit of work; a missing project, pipeline or execution is ResourceNotFound."""
    try:
        return await app_of(ctx).db.run(query, write=False)
    except NotFound as exc:
        raise ResourceNotFoundError(exc.render()) from None


def _json(model: Any) -> str:
    return json.dumps(reply_data(model), indent=2, ensure_ascii=False)
