"""Executions that can be pruned without changing a cost figure.

``db prune`` deletes superseded executions; their cost rows stay, detached. ``llm_metrics.detached``
says a row's execution was pruned (its cost still counts as rework), and ``llm_metrics.prompt_version_id``
keeps the prompt version that execution used (cost by prompt stays exact).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mcp_server.db.types as types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (no table rebuild: llm_metrics is the largest table).
    op.add_column("llm_metrics", sa.Column("detached", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("llm_metrics", sa.Column("prompt_version_id", types.GUID(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("llm_metrics", schema=None) as batch_op:
        batch_op.drop_column("prompt_version_id")
        batch_op.drop_column("detached")
