"""ProcessDefinition: one step of a pipeline (a named catalogue of processes; `default` always exists)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db.base import AuditMixin, Base
from mcp_server.db.types import ArrayType, JSONType
from mcp_server.enums import DEFAULT_PIPELINE

PROCESS_ID_LENGTH = 100


class ProcessDefinition(AuditMixin, Base):
    __tablename__ = "process_definitions"

    # A process is identified within its pipeline: the same id may exist in several pipelines.
    pipeline_id: Mapped[str] = mapped_column(
        String(PROCESS_ID_LENGTH), primary_key=True, default=DEFAULT_PIPELINE, server_default=DEFAULT_PIPELINE
    )
    id: Mapped[str] = mapped_column(String(PROCESS_ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text())
    order_index: Mapped[int] = mapped_column(Integer(), default=0, nullable=False)
    input_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONType())
    output_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONType())
    depends_on: Mapped[list[str]] = mapped_column(ArrayType(String(PROCESS_ID_LENGTH)), default=list, nullable=False)
    # Retries (docs/design.md, "Agent teams"): attempts before the step gives up, the backoff's base
    # (doubling per failed attempt) and the start-to-close limit of one attempt, renewals or not.
    max_attempts: Mapped[int] = mapped_column(Integer(), default=3, server_default="3", nullable=False)
    retry_backoff_seconds: Mapped[int] = mapped_column(Integer(), default=0, server_default="0", nullable=False)
    timeout_seconds: Mapped[int | None] = mapped_column(Integer())
    # Reuse and checks (docs/design.md, "Reuse and stale causes"): where a start looks for a completed
    # execution with the same input key (project, pipeline or off) and how old it may be; the checks the
    # current execution must pass before the steps that depend on it may run.
    reuse: Mapped[str] = mapped_column(String(16), default="project", server_default="project", nullable=False)
    reuse_ttl_seconds: Mapped[int | None] = mapped_column(Integer())
    required_checks: Mapped[list[str] | None] = mapped_column(JSONType())

    def __repr__(self) -> str:
        return f"<ProcessDefinition {self.pipeline_id}/{self.id}>"
