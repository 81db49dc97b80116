"""Prompt versions: numbered 1, 2, 3… per prompt_id; identical content is not saved twice."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.errors import InvalidArgument, NotFound
from mcp_server.models import PromptVersion
from mcp_server.repositories import PromptRepository
from mcp_server.schemas.common import SLUG_PATTERN, envelope
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
        **envelope(result),
    )


def version_note(text: str | None, version: int, version_id: uuid.UUID) -> str:
    """A prompt's MCP description ends with the version id an execution records (no extra call to learn it)."""
    note = f"[version {version}; prompt_version_id {version_id}]"
    return f"{text}\n\n{note}" if text else note


@dataclass(frozen=True)
class PromptListing:
    """A saved prompt as an MCP prompt: named by its prompt_id, its arguments the placeholders of the latest
    version's user template."""

    prompt_id: str
    version: int
    version_id: uuid.UUID
    system_prompt: str | None
    placeholders: list[str]

    @property
    def description(self) -> str:
        return version_note(self.system_prompt or f"Prompt {self.prompt_id}", self.version, self.version_id)


@dataclass(frozen=True)
class RenderedPrompt:
    """The latest version rendered: the system prompt (carried as the description and as a leading
    message, MCP prompt messages being user or assistant) and the filled-in user template."""

    description: str | None
    messages: list[str]


async def listing(session: AsyncSession) -> list[PromptListing]:
    return [
        PromptListing(row.prompt_id, row.version, row.id, row.system_prompt, templates.placeholders(row.user_template))
        for row in await PromptRepository(session).latest_of_each()
    ]


async def render(session: AsyncSession, prompt_id: str, arguments: dict[str, str]) -> RenderedPrompt:
    """The prompt's latest version with ``arguments`` filled in: not_found for an unknown prompt (any name
    that is not a slug is one), invalid_argument naming the placeholders left without a value."""
    row = await PromptRepository(session).latest(prompt_id) if re.fullmatch(SLUG_PATTERN, prompt_id) else None
    if row is None:
        raise NotFound(f"no prompt named {prompt_id[:200]!r}", hint="prompts/list shows the saved prompts")
    missing = templates.missing_arguments(row.user_template, arguments)
    if missing:
        raise InvalidArgument(f"missing prompt argument(s): {', '.join(missing)}")
    messages = [f"[system]\n{row.system_prompt}"] if row.system_prompt else []
    if row.user_template:
        messages.append(templates.render(row.user_template, arguments))
    return RenderedPrompt(description=version_note(row.system_prompt, row.version, row.id), messages=messages)
