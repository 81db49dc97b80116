"""Budgets that hold under concurrency, and the team's own prices.

Projects gain ``budget_policy`` (``warn`` | ``block``) and ``reserved_usd`` (the running total of the
reservations their running executions hold); executions gain ``reserved_usd`` (held while running);
``llm_prices`` holds custom prices per (provider, model), in exact 1e-10 USD units per million tokens.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mcp_server.db.types as types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("budget_policy", sa.String(length=10), server_default="warn", nullable=False))
        batch_op.add_column(sa.Column("reserved_usd", types.Money(), server_default="0", nullable=False))
    with op.batch_alter_table("process_executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reserved_usd", types.Money(), nullable=True))
    op.create_table(
        "llm_prices",
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("input_per_mtok", types.Money(), nullable=False),
        sa.Column("output_per_mtok", types.Money(), nullable=False),
        sa.Column("cache_read_per_mtok", types.Money(), nullable=True),
        sa.Column("cache_write_per_mtok", types.Money(), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("provider", "model", name="pk_llm_prices"),
    )


def downgrade() -> None:
    op.drop_table("llm_prices")
    with op.batch_alter_table("process_executions", schema=None) as batch_op:
        batch_op.drop_column("reserved_usd")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("reserved_usd")
        batch_op.drop_column("budget_policy")
