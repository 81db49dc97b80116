"""Project: a unit of work that runs through the pipeline (docs/design.md, "Data model")."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Enum, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db.base import AuditMixin, Base, SoftDeleteMixin
from mcp_server.db.types import GUID, JSONType, Money
from mcp_server.enums import DEFAULT_PIPELINE, BudgetPolicy, ProjectStatus
from mcp_server.models.process import PROCESS_ID_LENGTH


class Project(AuditMixin, SoftDeleteMixin, Base):
    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = mapped_column(GUID(), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text())
    status: Mapped[ProjectStatus] = mapped_column(
        Enum(
            ProjectStatus,
            name="project_status",
            native_enum=False,
            create_constraint=True,
            length=20,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=ProjectStatus.DRAFT,
        nullable=False,
    )
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType(), default=dict, nullable=False)
    budget_usd: Mapped[Decimal | None] = mapped_column(Money())
    # Running totals of the project's LLM cost, kept by the ledger in the same transaction as each
    # usage row, so that a budget or status reply costs one row, not a SUM over the whole history.
    spent_usd: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0), server_default="0", nullable=False)
    unpriced_calls: Mapped[int] = mapped_column(BigInteger(), default=0, server_default="0", nullable=False)
    budget_policy: Mapped[str] = mapped_column(
        String(10), default=BudgetPolicy.WARN.value, server_default=BudgetPolicy.WARN.value, nullable=False
    )
    # What the budget is judged over: `none` (the whole life), `day`, `week`, `month` (UTC calendar) or
    # `rolling:<N>d` / `rolling:<N>h` (services/periods.py).
    budget_period: Mapped[str] = mapped_column(String(20), default="none", server_default="none", nullable=False)
    # Caps per agent and per model, judged like the budget ({"agent:<name>": "0.50", "model:<p>/<m>": "2"}),
    # and the percents of the budget and of each cap that are reported (None: 50, 80, 100).
    caps: Mapped[dict[str, str] | None] = mapped_column(JSONType())
    alert_thresholds: Mapped[list[int] | None] = mapped_column(JSONType())
    # What the project's running executions hold against the budget (start_execution's reserve_usd),
    # kept in the same transaction as each start and finish.
    reserved_usd: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0), server_default="0", nullable=False)
    # The pipeline whose processes this project runs; fixed once the project has executions.
    pipeline_id: Mapped[str] = mapped_column(
        String(PROCESS_ID_LENGTH), default=DEFAULT_PIPELINE, server_default=DEFAULT_PIPELINE, nullable=False
    )

    __table_args__ = (
        Index("ix_projects_status_created", "is_deleted", "status", "created_at"),
        Index("ix_projects_pipeline_id", "pipeline_id"),
    )

    def __repr__(self) -> str:
        return f"<Project id={self.id} name={self.name!r}>"
