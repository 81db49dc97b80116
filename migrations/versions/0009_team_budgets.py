"""Budgets for teams: who spent it, budget periods, and threshold alerts fired once per period.

``agent`` names who spent a cost row or runs an execution (a sub-agent, a worker, a role; by default the
MCP client). ``projects.budget_period`` is what the budget is judged over: ``none`` (the project's whole
life, as before), ``day``/``week``/``month`` (UTC calendar) or ``rolling:<N>d``/``rolling:<N>h``.
``budget_alerts`` keeps each threshold a project's spend crossed, once per period (the unique key).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mcp_server.db.types import GUID, Money, UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("llm_metrics") as table:
        table.add_column(sa.Column("agent", sa.String(200), nullable=True))
    with op.batch_alter_table("process_executions") as table:
        table.add_column(sa.Column("agent", sa.String(200), nullable=True))
    with op.batch_alter_table("projects") as table:
        table.add_column(sa.Column("budget_period", sa.String(20), nullable=False, server_default="none"))
    op.create_table(
        "budget_alerts",
        sa.Column("id", GUID(), primary_key=True),
        sa.Column("project_id", GUID(), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("scope", sa.String(120), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("spent_usd", Money(), nullable=False),
        sa.Column("budget_usd", Money(), nullable=False),
        sa.Column("crossed_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("project_id", "scope", "threshold", "period_start", name="uq_budget_alerts_once"),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    with op.batch_alter_table("projects") as table:
        table.drop_column("budget_period")
    with op.batch_alter_table("process_executions") as table:
        table.drop_column("agent")
    with op.batch_alter_table("llm_metrics") as table:
        table.drop_column("agent")
