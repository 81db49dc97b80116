"""ProcessState: the state of one process within one project (docs/design.md, "Data model")."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db.base import Base
from mcp_server.db.types import GUID, UTCDateTime, utcnow
from mcp_server.enums import StateName
from mcp_server.models.process import PROCESS_ID_LENGTH


class ProcessState(Base):
    __tablename__ = "process_states"

    id: Mapped[uuid.UUID] = mapped_column(GUID(), primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(GUID(), ForeignKey("projects.id"), nullable=False)
    process_id: Mapped[str] = mapped_column(String(PROCESS_ID_LENGTH), nullable=False)
    state: Mapped[str] = mapped_column(String(50), default=StateName.EMPTY.value, nullable=False)
    version: Mapped[int] = mapped_column(Integer(), default=0, nullable=False)
    current_execution_id: Mapped[uuid.UUID | None] = mapped_column(GUID(), ForeignKey("process_executions.id"))
    invalidated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    invalidated_by_process_id: Mapped[str | None] = mapped_column(String(PROCESS_ID_LENGTH))
    invalidation_reason: Mapped[str | None] = mapped_column(Text())
    last_updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    # Failed or expired attempts in a row (a completion or a new input resets it), and when a backoff
    # lets the step be claimed again.
    attempts: Mapped[int] = mapped_column(Integer(), default=0, server_default="0", nullable=False)
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("project_id", "process_id", name="uq_project_process_state"),)

    def __repr__(self) -> str:
        return f"<ProcessState {self.process_id!r} {self.state} v{self.version}>"
