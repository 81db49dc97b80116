"""ProcessExecution: one run of a process for a project (docs/design.md, "Data model")."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db.base import AuditMixin, Base
from mcp_server.db.types import GUID, JSONType, Money, UTCDateTime
from mcp_server.enums import ExecutionStatus
from mcp_server.models.process import PROCESS_ID_LENGTH


class ProcessExecution(AuditMixin, Base):
    __tablename__ = "process_executions"

    id: Mapped[uuid.UUID] = mapped_column(GUID(), primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(GUID(), ForeignKey("projects.id"), nullable=False, index=True)
    process_id: Mapped[str] = mapped_column(String(PROCESS_ID_LENGTH), nullable=False, index=True)
    prompt_version_id: Mapped[uuid.UUID | None] = mapped_column(GUID(), ForeignKey("prompt_versions.id"))

    input_data: Mapped[Any] = mapped_column(JSONType(), nullable=False)
    # Lineage: dependency process id -> the execution whose output this one was handed (or was current).
    inputs_from: Mapped[Any | None] = mapped_column(JSONType())
    output_data: Mapped[Any | None] = mapped_column(JSONType())
    output_hash: Mapped[str | None] = mapped_column(String(64))

    status: Mapped[str] = mapped_column(String(50), default=ExecutionStatus.PENDING.value, nullable=False)
    error_message: Mapped[str | None] = mapped_column(Text())
    reasoning: Mapped[str | None] = mapped_column(Text())
    missing_info: Mapped[Any | None] = mapped_column(JSONType())

    # The budget this execution holds while it runs (start_execution's reserve_usd); released (None)
    # when it is recorded or failed.
    reserved_usd: Mapped[Decimal | None] = mapped_column(Money())
    # Who runs it (start_execution's agent, by default the MCP client): its costs are charged to it.
    agent: Mapped[str | None] = mapped_column(String(200))
    # The model it names (`provider/model`), judged by the project's model caps.
    model: Mapped[str | None] = mapped_column(String(160))
    # What it computed from, hashed (services/pipeline_state.input_key): the same key, the same work.
    input_key: Mapped[str | None] = mapped_column(String(64))
    # A reuse: the execution whose output this one took at no cost, and what that output had cost.
    reused_from: Mapped[uuid.UUID | None] = mapped_column(GUID())
    saved_usd: Mapped[Decimal | None] = mapped_column(Money())
    # The execution whose record replaced this one's output as the current one of a completed step.
    superseded_by: Mapped[uuid.UUID | None] = mapped_column(GUID())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A started execution's lease (docs/design.md, "Agent teams"): past it, the execution is expired. The
    # token fences late writers (new for every attempt); attempt counts the step's tries in a row.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_token: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int | None] = mapped_column(Integer())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # Idempotency: the key is unique when set; the hash of the call's arguments tells a true
    # replay from a reuse of the key with different arguments; the reply is what a replay returns.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    reply: Mapped[Any | None] = mapped_column(JSONType())

    __table_args__ = (
        Index("ix_execution_project_process", "project_id", "process_id"),
        Index("ix_execution_project_created", "project_id", "created_at"),
        Index("ix_executions_input_key", "project_id", "process_id", "input_key"),
        Index("ix_executions_key", "input_key"),
    )

    def __repr__(self) -> str:
        return f"<ProcessExecution id={self.id} process={self.process_id!r} status={self.status}>"
