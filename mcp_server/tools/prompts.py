"""The ``prompts`` toolset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from mcp.server.mcpserver import Context
from pydantic import Field

from mcp_server.app import App
from mcp_server.lazy import lazy_module
from mcp_server.schemas.common import Actor, Page, PageSize, Slug, SlugRef, Text
from mcp_server.schemas.prompt import PromptVersionOut, PromptVersionPage, SavedPromptVersion
from mcp_server.tools.base import ToolEntry, actor_of, app_of

if TYPE_CHECKING:
    from mcp_server.services import prompts
else:  # loaded on the first call: start-up does not import the database layer
    prompts = lazy_module("mcp_server.services.prompts")

PromptId = Annotated[Slug, Field(description="Prompt id, a slug such as `summarise`.")]
PromptRef = Annotated[SlugRef, Field(description="Prompt id.")]


async def save_prompt_version(
    prompt_id: PromptId,
    ctx: Context[App],
    system_prompt: Annotated[Text | None, Field(description="The system prompt.")] = None,
    user_template: Annotated[Text | None, Field(description="The user message, with {{placeholders}}.")] = None,
    temperature: Annotated[float | None, Field(ge=0, le=2, description="Sampling temperature.")] = None,
    created_by: Annotated[Actor | None, Field(description="Author; default: the client's name/version.")] = None,
) -> SavedPromptVersion:
    """Save a prompt's next version (1, 2, 3…); the same content as the latest returns that (`created:
    false`). Served as MCP prompt `prompt_id`. Pass the returned id as prompt_version_id."""
    return await app_of(ctx).db.run(
        lambda session: prompts.save(
            session,
            prompt_id=prompt_id,
            system_prompt=system_prompt,
            user_template=user_template,
            temperature=temperature,
            created_by=created_by or actor_of(ctx),
        )
    )


async def get_prompt_version(
    prompt_id: PromptRef,
    ctx: Context[App],
    version: Annotated[
        # le: the column is a 32-bit INTEGER; a larger number would reach the driver and fail there.
        int | None, Field(ge=1, le=2**31 - 1, description="Version number; default the latest.")
    ] = None,
) -> PromptVersionOut:
    """One version of a prompt (the latest by default), with its placeholders."""
    return await app_of(ctx).db.run(
        lambda session: prompts.get(session, prompt_id=prompt_id, version=version), write=False
    )


async def list_prompt_versions(
    prompt_id: PromptRef, ctx: Context[App], page: Page = 1, page_size: PageSize = 20
) -> PromptVersionPage:
    """A prompt's versions, newest first, one page at a time."""
    return await app_of(ctx).db.run(
        lambda session: prompts.list_page(session, prompt_id=prompt_id, page=page, page_size=page_size), write=False
    )


# The toolset, in the order tools/list publishes it.
TOOLS: tuple[ToolEntry, ...] = (
    ToolEntry(save_prompt_version, "Save prompt version", read_only=False, idempotent=True),
    ToolEntry(get_prompt_version, "Get prompt version", read_only=True),
    ToolEntry(list_prompt_versions, "List prompt versions", read_only=True),
)
