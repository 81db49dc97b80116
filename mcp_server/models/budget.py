"""Budgets beyond one project: a pipeline's budget shared by all its projects, and the threshold alerts
kept once per period (docs/design.md, "Costs and budgets")."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db.base import AuditMixin, Base
from mcp_server.db.types import GUID, JSONType, Money, UTCDateTime
from mcp_server.enums import BudgetPolicy
from mcp_server.models.process import PROCESS_ID_LENGTH


class PipelineBudget(AuditMixin, Base):
    """One budget shared by every project of a pipeline, judged like a project's (policy, period)."""

    __tablename__ = "pipeline_budgets"

    pipeline_id: Mapped[str] = mapped_column(String(PROCESS_ID_LENGTH), primary_key=True)
    budget_usd: Mapped[Decimal] = mapped_column(Money(), nullable=False)
    budget_policy: Mapped[str] = mapped_column(
        String(10), default=BudgetPolicy.WARN.value, server_default=BudgetPolicy.WARN.value, nullable=False
    )
    budget_period: Mapped[str] = mapped_column(String(20), default="none", server_default="none", nullable=False)
    alert_thresholds: Mapped[Any | None] = mapped_column(JSONType())


class BudgetAlert(Base):
    """A threshold of a budget or cap that spend crossed: kept once per period (the unique key), so each
    crossing is reported once. ``owner`` is `project:<id>` or `pipeline:<id>`; ``project_id`` the project
    whose cost crossed it."""

    __tablename__ = "budget_alerts"

    id: Mapped[uuid.UUID] = mapped_column(GUID(), primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(120), nullable=False)
    project_id: Mapped[uuid.UUID | None] = mapped_column(GUID(), ForeignKey("projects.id"))
    scope: Mapped[str] = mapped_column(String(120), nullable=False)  # `budget`, or a cap's key
    threshold: Mapped[int] = mapped_column(Integer(), nullable=False)  # percent
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)  # the epoch without a period
    spent_usd: Mapped[Decimal] = mapped_column(Money(), nullable=False)
    budget_usd: Mapped[Decimal] = mapped_column(Money(), nullable=False)
    crossed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (UniqueConstraint("owner", "scope", "threshold", "period_start", name="uq_budget_alerts_once"),)
