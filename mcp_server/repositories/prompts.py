"""Prompt versions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text

from mcp_server.models import PromptVersion
from mcp_server.repositories.base import Page, Repository, raced


class PromptRepository(Repository):
    async def lock_prompt(self, prompt_id: str) -> None:
        """Hold a per-prompt_id lock until the transaction ends (PostgreSQL; SQLite writers are serial)."""
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"prompt:{prompt_id}"}
            )

    async def latest(self, prompt_id: str) -> PromptVersion | None:
        query = (
            select(PromptVersion)
            .where(PromptVersion.prompt_id == prompt_id)
            .order_by(PromptVersion.version.desc())
            .limit(1)
        )
        return (await self.session.scalars(query)).first()

    async def get(self, prompt_id: str, version: int) -> PromptVersion | None:
        query = select(PromptVersion).where(PromptVersion.prompt_id == prompt_id, PromptVersion.version == version)
        return (await self.session.scalars(query)).first()

    async def get_by_id(self, version_id: Any) -> PromptVersion | None:
        return await self.session.get(PromptVersion, version_id)

    async def list_versions(self, prompt_id: str, *, page: int = 1, page_size: int = 20) -> Page[PromptVersion]:
        query = select(PromptVersion).where(PromptVersion.prompt_id == prompt_id).order_by(PromptVersion.version.desc())
        return await self._page(query, page=page, page_size=page_size)

    async def latest_of_each(self) -> list[PromptVersion]:
        """The newest version of every prompt, ordered by prompt_id."""
        newest = (
            select(PromptVersion.prompt_id, func.max(PromptVersion.version).label("version"))
            .group_by(PromptVersion.prompt_id)
            .subquery()
        )
        query = (
            select(PromptVersion)
            .join(
                newest,
                (PromptVersion.prompt_id == newest.c.prompt_id) & (PromptVersion.version == newest.c.version),
            )
            .order_by(PromptVersion.prompt_id)
        )
        return list(await self.session.scalars(query))

    async def create(self, **fields: Any) -> PromptVersion:
        version = PromptVersion(**fields)
        async with raced(
            f"version {version.version} of prompt {version.prompt_id!r}",
            hint="Retry save_prompt_version: it takes the next version, or returns the latest when identical",
        ):
            self.session.add(version)
            await self.session.flush()
        return version
