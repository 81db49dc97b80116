"""Prompt version inputs and outputs."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from mcp_server.schemas.common import Out, PageInfo


class PromptVersionOut(Out):
    id: uuid.UUID
    prompt_id: str
    version: int
    system_prompt: str | None
    user_template: str | None
    temperature: float | None
    content_hash: str
    placeholders: list[str] = Field(default_factory=list)
    created_at: datetime
    created_by: str | None


class SavedPromptVersion(PromptVersionOut):
    created: bool = Field(description="False: same content as the latest version, returned.")


class PromptVersionPage(PageInfo):
    items: list[PromptVersionOut]
