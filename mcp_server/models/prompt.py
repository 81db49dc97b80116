"""PromptVersion: an immutable, numbered version of a prompt."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db.base import Base
from mcp_server.db.types import GUID, UTCDateTime, utcnow


class PromptVersion(Base):
    __tablename__ = "prompt_versions"

    id: Mapped[uuid.UUID] = mapped_column(GUID(), primary_key=True, default=uuid.uuid4)
    prompt_id: Mapped[str] = mapped_column(String(100), nullable=False)
    version: Mapped[int] = mapped_column(Integer(), nullable=False)
    system_prompt: Mapped[str | None] = mapped_column(Text())
    user_template: Mapped[str | None] = mapped_column(Text())
    temperature: Mapped[float | None] = mapped_column(Float())
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    created_by: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (UniqueConstraint("prompt_id", "version", name="uq_prompt_version"),)

    def __repr__(self) -> str:
        return f"<PromptVersion {self.prompt_id!r} v{self.version}>"
