"""Reuse of finished work and checks that gate the steps downstream (docs/design.md, "Reuse and stale causes").

``process_definitions.reuse`` says where a start looks for a completed execution with the same input key:
``project`` (the default), ``pipeline`` (any project of the same pipeline) or ``off``; ``reuse_ttl_seconds``
how old that execution may be; ``required_checks`` the names of the checks a step's current execution must
pass before the steps that depend on it may run. ``process_executions.reused_from`` is the execution whose
output a reuse took, and ``saved_usd`` what that output had cost; ``superseded_by`` the execution whose
record replaced a completed step's current output (the replaced one is then `superseded`).
``execution_checks`` keeps the latest result of each named check of an execution (one row per execution
and name).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mcp_server.db.types import GUID, JSONType, Money, UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("process_definitions") as table:
        table.add_column(sa.Column("reuse", sa.String(16), nullable=False, server_default="project"))
        table.add_column(sa.Column("reuse_ttl_seconds", sa.Integer(), nullable=True))
        table.add_column(sa.Column("required_checks", JSONType(), nullable=True))
    with op.batch_alter_table("process_executions") as table:
        table.add_column(sa.Column("reused_from", GUID(), nullable=True))
        table.add_column(sa.Column("saved_usd", Money(), nullable=True))
        table.add_column(sa.Column("superseded_by", GUID(), nullable=True))
        table.create_index("ix_executions_key", ["input_key"])
    op.create_table(
        "execution_checks",
        sa.Column("id", GUID(), primary_key=True),
        sa.Column("execution_id", GUID(), sa.ForeignKey("process_executions.id"), nullable=False),
        sa.Column("project_id", GUID(), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("process_id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("details", JSONType(), nullable=True),
        sa.Column("agent", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.Column("created_by", sa.String(100), nullable=True),
        sa.Column("updated_by", sa.String(100), nullable=True),
        sa.UniqueConstraint("execution_id", "name", name="uq_execution_checks_name"),
    )
    op.create_index("ix_execution_checks_project", "execution_checks", ["project_id", "process_id"])


def downgrade() -> None:
    op.drop_index("ix_execution_checks_project", table_name="execution_checks")
    op.drop_table("execution_checks")
    with op.batch_alter_table("process_executions") as table:
        table.drop_index("ix_executions_key")
        table.drop_column("superseded_by")
        table.drop_column("saved_usd")
        table.drop_column("reused_from")
    with op.batch_alter_table("process_definitions") as table:
        table.drop_column("required_checks")
        table.drop_column("reuse_ttl_seconds")
        table.drop_column("reuse")
