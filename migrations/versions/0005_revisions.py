"""Change tokens for what servers keep in memory.

``revisions`` holds one token per cached thing: ``catalogue:<pipeline_id>`` (a pipeline's definitions)
and ``prices`` (the team's own prices). Whoever changes the thing writes a new random token in the
same transaction, so a server checks its copy with the token alone (read with the project, in the
statement a write does anyway) instead of re-reading the catalogue on every call. Random tokens,
not counters: a database rebuilt under a running server can never bring back a token it has seen.

Every pipeline that already has definitions, and the prices, get a token here.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revisions",
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_revisions"),
    )
    random_token = (
        "md5(random()::text || clock_timestamp()::text)"
        if op.get_context().dialect.name == "postgresql"
        else "lower(hex(randomblob(16)))"
    )
    op.execute(
        f"INSERT INTO revisions (name, token) SELECT 'catalogue:' || pipeline_id, {random_token} "
        "FROM (SELECT DISTINCT pipeline_id FROM process_definitions) AS pipelines"
    )
    op.execute(f"INSERT INTO revisions (name, token) VALUES ('prices', {random_token})")


def downgrade() -> None:
    op.drop_table("revisions")
