"""Prompt version inputs and outputs."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from mcp_server.schemas.common import Out, PageInfo


class PromptVersionOut(Out):
    id: uuid.UUID = Field(description="Pass this as prompt_version_id when recording an execution.")
    prompt_id: str
    version: int
    system_prompt: str | None
    user_template: str | None
    temperature: float | None
    content_hash: str
    placeholders: list[str] = Field(default_factory=list, description="The {{placeholders}} of user_template.")
    created_at: datetime
    created_by: str | None


class SavedPromptVersion(PromptVersionOut):
    created: bool = Field(description="False when the content equalled the latest version, which is returned.")


class PromptVersionPage(PageInfo):
    items: list[PromptVersionOut]
