"""completion/complete: the ids a person or an agent cannot type (projects by id prefix or by name, executions,
pipelines), for the resource templates' arguments and for prompt arguments of the same names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_types import Completion, CompletionArgument, CompletionContext, PromptReference, ResourceTemplateReference

from mcp_server.app import App
from mcp_server.lazy import lazy_module

if TYPE_CHECKING:
    from mcp_server.services import live
else:  # loaded on the first completion: start-up does not import the database layer
    live = lazy_module("mcp_server.services.live")

# The arguments completed, wherever they appear (a template's URI or a prompt's placeholders).
COMPLETED_ARGUMENTS = ("project_id", "execution_id", "pipeline_id")
# The most characters of a typed value looked at (an id is 36).
TYPED_MAX = 200


async def complete(
    app: App,
    ref: PromptReference | ResourceTemplateReference,
    argument: CompletionArgument,
    context: CompletionContext | None,
) -> Completion | None:
    """The values for ``argument``, or None when this server does not complete it."""
    if argument.name not in COMPLETED_ARGUMENTS:
        return None
    toolset = "prompts" if isinstance(ref, PromptReference) else "pipeline"
    if toolset not in app.settings.enabled_toolsets:
        return None
    if isinstance(ref, ResourceTemplateReference) and f"{{{argument.name}}}" not in ref.uri:
        return None
    typed = argument.value[:TYPED_MAX]
    given = (context.arguments if context is not None else None) or {}
    if argument.name == "project_id":
        found = await app.db.run(lambda session: live.project_ids(session, typed), write=False)
    elif argument.name == "execution_id":
        project_id = given.get("project_id")
        found = await app.db.run(lambda session: live.execution_ids(session, typed, project_id), write=False)
    else:
        found = await app.db.run(lambda session: live.pipeline_ids(session, typed), write=False)
    return Completion(values=found.values, total=found.total, has_more=found.has_more)
