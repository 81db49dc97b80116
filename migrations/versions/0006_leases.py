"""Leases, attempts and retries: what lets a team of agents share a pipeline's work.

Executions get a lease (``lease_expires_at``), a fencing token (``lease_token``, new for every attempt)
and their attempt number. States count the failed or expired attempts in a row (``attempts``) and when
a backoff lets the step be claimed again (``retry_at``). Definitions say how many attempts a step gets
(``max_attempts``), the backoff's base (``retry_backoff_seconds``) and the start-to-close limit
(``timeout_seconds``). Running executions started before this revision get no lease: they never expire.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mcp_server.db.types import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("process_executions") as table:
        table.add_column(sa.Column("lease_expires_at", UTCDateTime(), nullable=True))
        table.add_column(sa.Column("lease_token", sa.String(length=64), nullable=True))
        table.add_column(sa.Column("attempt", sa.Integer(), nullable=True))
    with op.batch_alter_table("process_states") as table:
        table.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("retry_at", UTCDateTime(), nullable=True))
    with op.batch_alter_table("process_definitions") as table:
        table.add_column(sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="3"))
        table.add_column(sa.Column("retry_backoff_seconds", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("timeout_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("process_definitions") as table:
        table.drop_column("timeout_seconds")
        table.drop_column("retry_backoff_seconds")
        table.drop_column("max_attempts")
    with op.batch_alter_table("process_states") as table:
        table.drop_column("retry_at")
        table.drop_column("attempts")
    with op.batch_alter_table("process_executions") as table:
        table.drop_column("attempt")
        table.drop_column("lease_token")
        table.drop_column("lease_expires_at")
