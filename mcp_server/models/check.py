"""ExecutionCheck: a named verdict on an execution's output (docs/design.md, "Reuse and stale causes")."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db.base import AuditMixin, Base
from mcp_server.db.types import GUID, JSONType
from mcp_server.models.process import PROCESS_ID_LENGTH

CHECK_NAME_LENGTH = 100


class ExecutionCheck(AuditMixin, Base):
    """The latest result of one named check of an execution (a reviewer, a test run, a person): recorded
    again, it replaces the earlier one."""

    __tablename__ = "execution_checks"

    id: Mapped[uuid.UUID] = mapped_column(GUID(), primary_key=True, default=uuid.uuid4)
    execution_id: Mapped[uuid.UUID] = mapped_column(GUID(), ForeignKey("process_executions.id"), nullable=False)
    project_id: Mapped[uuid.UUID] = mapped_column(GUID(), ForeignKey("projects.id"), nullable=False)
    process_id: Mapped[str] = mapped_column(String(PROCESS_ID_LENGTH), nullable=False)
    name: Mapped[str] = mapped_column(String(CHECK_NAME_LENGTH), nullable=False)
    passed: Mapped[bool] = mapped_column(Boolean(), nullable=False)
    details: Mapped[Any | None] = mapped_column(JSONType())
    agent: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        UniqueConstraint("execution_id", "name", name="uq_execution_checks_name"),
        Index("ix_execution_checks_project", "project_id", "process_id"),
    )

    def __repr__(self) -> str:
        return f"<ExecutionCheck {self.name!r} of {self.execution_id}: {'passed' if self.passed else 'failed'}>"
