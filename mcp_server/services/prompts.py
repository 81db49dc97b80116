"""Prompt versions: numbered 1, 2, 3… per prompt_id; identical content is not saved twice."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.errors import InvalidArgument, NotFound
from mcp_server.models import PromptVersion
from mcp_server.repositories import PromptRepository
from mcp_server.schemas.prompt import PromptVersionOut, PromptVersionPage, SavedPromptVersion
from mcp_server.services import templates


def to_out(row: PromptVersion) -> PromptVersionOut:
    out = PromptVersionOut.model_validate(row)
    out.placeholders = templates.placeholders(row.user_template)
    return out


async def save(
    session: AsyncSession,
    *,
    prompt_id: str,
    system_prompt: str | None,
    user_template: str | None,
    temperature: float | None,
    created_by: str | None,
) -> SavedPromptVersion:
    if system_prompt is None and user_template is None:
        raise InvalidArgument("a prompt version needs a system_prompt, a user_template or both")
    prompts = PromptRepository(session)
    # Serialise savers of the same prompt_id so that two at once cannot both take version N+1.
    await prompts.lock_prompt(prompt_id)
    digest = templates.content_hash(system_prompt, user_template, temperature)
    latest = await prompts.latest(prompt_id)
    if latest is not None and latest.content_hash == digest:
        return SavedPromptVersion(**dict(to_out(latest)), created=False)
    row = await prompts.create(
        prompt_id=prompt_id,
        version=1 if latest is None else latest.version + 1,
        system_prompt=system_prompt,
        user_template=user_template,
        temperature=temperature,
        content_hash=digest,
        created_by=created_by,
    )
    return SavedPromptVersion(**dict(to_out(row)), created=True)


async def get(session: AsyncSession, *, prompt_id: str, version: int | None) -> PromptVersionOut:
    prompts = PromptRepository(session)
    row = await (prompts.latest(prompt_id) if version is None else prompts.get(prompt_id, version))
    if row is None:
        problem = "does not exist" if version is None else f"has no version {version}"
        raise NotFound(
            f"prompt {prompt_id!r} {problem}",
            hint="Call list_prompt_versions to see the versions, or save_prompt_version to create one",
        )
    return to_out(row)


async def list_page(session: AsyncSession, *, prompt_id: str, page: int, page_size: int) -> PromptVersionPage:
    result = await PromptRepository(session).list_versions(prompt_id, page=page, page_size=page_size)
    return PromptVersionPage(
        items=[to_out(row) for row in result.items],
        total=result.total,
        page=result.page,
        page_size=result.page_size,
        has_more=result.has_more,
    )
