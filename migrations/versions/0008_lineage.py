"""Lineage: each execution keeps which upstream executions its inputs came from.

``inputs_from`` maps each dependency's process id to the execution whose output was handed to the step at
its start (or, for a one-call record, was current when it was recorded). Executions stored before this
revision have none.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 01:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mcp_server.db.types import JSONType

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("process_executions") as table:
        table.add_column(sa.Column("inputs_from", JSONType(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("process_executions") as table:
        table.drop_column("inputs_from")
