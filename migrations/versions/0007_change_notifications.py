"""Change notifications (PostgreSQL): every committed change to a project, its states and executions, or a
pipeline's definitions sends ``NOTIFY pipeline_state_changes`` with ``project:<id>`` or ``pipeline:<id>``.

A trigger sends it inside the writer's transaction, so it is delivered on commit only, and by every writer
(tools, CLI imports, copies). Servers whose clients subscribe to resources LISTEN on the channel
(mcp_server/live.py). SQLite has no NOTIFY: its servers check ``PRAGMA data_version`` instead, and this
revision changes nothing there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "pipeline_state_changes"
TABLES = ("projects", "process_states", "process_executions", "process_definitions")

FUNCTION = f"""
CREATE OR REPLACE FUNCTION pipeline_state_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed record;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    IF TG_TABLE_NAME = 'projects' THEN
        PERFORM pg_notify('{CHANNEL}', 'project:' || changed.id::text);
    ELSIF TG_TABLE_NAME = 'process_definitions' THEN
        PERFORM pg_notify('{CHANNEL}', 'pipeline:' || changed.pipeline_id);
    ELSE
        PERFORM pg_notify('{CHANNEL}', 'project:' || changed.project_id::text);
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_notify AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION pipeline_state_notify()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify ON {table}")
    op.execute("DROP FUNCTION IF EXISTS pipeline_state_notify()")
