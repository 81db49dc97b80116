"""Budgets for teams: who spent it, budget periods, and threshold alerts fired once per period.

``agent`` names who spent a cost row or runs an execution (a sub-agent, a worker, a role; by default the
MCP client). ``projects.budget_period`` is what the budget is judged over: ``none`` (the project's whole
life, as before), ``day``/``week``/``month`` (UTC calendar) or ``rolling:<N>d``/``rolling:<N>h``.
``projects.caps`` holds caps per agent and per model (``{"agent:<name>": "0.50", "model:<provider>/<model>":
"2.00"}``) judged like the budget, and ``alert_thresholds`` the percents of the budget and of each cap that
are reported (null: 50, 80, 100); ``process_executions.model`` is the model a start names for model caps.
A cost row keeps ``cache_write_1h_tokens`` (of its cache writes, those with a one-hour TTL, priced apart)
and ``price_rule``, the rule that priced it (dated price, long-context tier, cache TTL).
``pipeline_budgets`` holds one budget shared by every project of a pipeline. ``budget_alerts`` keeps each
threshold a project's or pipeline's spend crossed (``owner``), once per period (the unique key).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mcp_server.db.types import GUID, JSONType, Money, UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("llm_metrics") as table:
        table.add_column(sa.Column("agent", sa.String(200), nullable=True))
        table.add_column(sa.Column("cache_write_1h_tokens", sa.BigInteger(), nullable=False, server_default="0"))
        table.add_column(sa.Column("price_rule", sa.String(300), nullable=True))
    with op.batch_alter_table("process_executions") as table:
        table.add_column(sa.Column("agent", sa.String(200), nullable=True))
        table.add_column(sa.Column("model", sa.String(160), nullable=True))
        table.add_column(sa.Column("input_key", sa.String(64), nullable=True))
        table.create_index("ix_executions_input_key", ["project_id", "process_id", "input_key"])
    with op.batch_alter_table("projects") as table:
        table.add_column(sa.Column("budget_period", sa.String(20), nullable=False, server_default="none"))
        table.add_column(sa.Column("caps", JSONType(), nullable=True))
        table.add_column(sa.Column("alert_thresholds", JSONType(), nullable=True))
    op.create_table(
        "pipeline_budgets",
        sa.Column("pipeline_id", sa.String(100), primary_key=True),
        sa.Column("budget_usd", Money(), nullable=False),
        sa.Column("budget_policy", sa.String(10), nullable=False, server_default="warn"),
        sa.Column("budget_period", sa.String(20), nullable=False, server_default="none"),
        sa.Column("alert_thresholds", JSONType(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.Column("created_by", sa.String(100), nullable=True),
        sa.Column("updated_by", sa.String(100), nullable=True),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("id", GUID(), primary_key=True),
        sa.Column("owner", sa.String(120), nullable=False),
        sa.Column("project_id", GUID(), sa.ForeignKey("projects.id"), nullable=True),
        sa.Column("scope", sa.String(120), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("spent_usd", Money(), nullable=False),
        sa.Column("budget_usd", Money(), nullable=False),
        sa.Column("crossed_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("owner", "scope", "threshold", "period_start", name="uq_budget_alerts_once"),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    op.drop_table("pipeline_budgets")
    with op.batch_alter_table("projects") as table:
        table.drop_column("alert_thresholds")
        table.drop_column("caps")
        table.drop_column("budget_period")
    with op.batch_alter_table("process_executions") as table:
        table.drop_index("ix_executions_input_key")
        table.drop_column("input_key")
        table.drop_column("model")
        table.drop_column("agent")
    with op.batch_alter_table("llm_metrics") as table:
        table.drop_column("price_rule")
        table.drop_column("cache_write_1h_tokens")
        table.drop_column("agent")
