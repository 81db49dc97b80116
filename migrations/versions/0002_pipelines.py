"""Pipelines: each process definition belongs to a pipeline, and each project runs through one.

Every existing definition and project moves to the pipeline ``default``. A process is identified by
(pipeline_id, id), so states and executions no longer reference process_definitions.id (no longer
unique): a project's pipeline names the catalogue its process ids belong to.

Downgrade is refused while anything lives outside the ``default`` pipeline: the first release had one
catalogue, and folding several into it would merge different definitions of one step.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

import mcp_server.db.types as types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT = "default"


def _check_foreign_keys() -> None:
    """SQLite rebuilds tables with its foreign key checks off (see mcp_server.db.migrate): check them now."""
    if context.is_offline_mode():
        return
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"foreign keys broken by the migration: {broken[:5]}")


def _as_of_0001(name: str) -> sa.Table | None:
    """The table as revision 0001 made it, for SQLite's batch mode in offline (--sql) mode, which cannot
    reflect it; online, the live table is reflected instead."""
    if not context.is_offline_mode():
        return None
    metadata = sa.MetaData()
    for stub in ("projects", "prompt_versions"):
        sa.Table(stub, metadata, sa.Column("id", types.GUID(length=36), primary_key=True))
    stamp = [
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", types.UTCDateTime(timezone=True), nullable=True),
    ]
    sa.Table(
        "process_definitions",
        metadata,
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("order_index", sa.Integer(), nullable=False),
        sa.Column("input_schema", types.JSONType(), nullable=True),
        sa.Column("output_schema", types.JSONType(), nullable=True),
        sa.Column("depends_on", types.ArrayType(sa.String(length=100)), nullable=False),
        *[column.copy() for column in stamp],
        sa.PrimaryKeyConstraint("id", name="pk_process_definitions"),
    )
    sa.Table(
        "process_executions",
        metadata,
        sa.Column("id", types.GUID(length=36), nullable=False),
        sa.Column("project_id", types.GUID(length=36), nullable=False),
        sa.Column("process_id", sa.String(length=100), nullable=False),
        sa.Column("prompt_version_id", types.GUID(length=36), nullable=True),
        sa.Column("input_data", types.JSONType(), nullable=False),
        sa.Column("output_data", types.JSONType(), nullable=True),
        sa.Column("output_hash", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=50), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("reasoning", sa.Text(), nullable=True),
        sa.Column("missing_info", types.JSONType(), nullable=True),
        sa.Column("started_at", types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("reply", types.JSONType(), nullable=True),
        *[column.copy() for column in stamp],
        sa.ForeignKeyConstraint(
            ["process_id"], ["process_definitions.id"], name="fk_process_executions_process_id_process_definitions"
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name="fk_process_executions_project_id_projects"),
        sa.ForeignKeyConstraint(
            ["prompt_version_id"],
            ["prompt_versions.id"],
            name="fk_process_executions_prompt_version_id_prompt_versions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_process_executions"),
        sa.UniqueConstraint("idempotency_key", name="uq_process_executions_idempotency_key"),
        sa.Index("ix_execution_project_created", "project_id", "created_at"),
        sa.Index("ix_execution_project_process", "project_id", "process_id"),
        sa.Index("ix_process_executions_process_id", "process_id"),
        sa.Index("ix_process_executions_project_id", "project_id"),
    )
    sa.Table(
        "process_states",
        metadata,
        sa.Column("id", types.GUID(length=36), nullable=False),
        sa.Column("project_id", types.GUID(length=36), nullable=False),
        sa.Column("process_id", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=50), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("current_execution_id", types.GUID(length=36), nullable=True),
        sa.Column("invalidated_at", types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("invalidated_by_process_id", sa.String(length=100), nullable=True),
        sa.Column("invalidation_reason", sa.Text(), nullable=True),
        sa.Column("last_updated_at", types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["current_execution_id"],
            ["process_executions.id"],
            name="fk_process_states_current_execution_id_process_executions",
        ),
        sa.ForeignKeyConstraint(
            ["process_id"], ["process_definitions.id"], name="fk_process_states_process_id_process_definitions"
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name="fk_process_states_project_id_projects"),
        sa.PrimaryKeyConstraint("id", name="pk_process_states"),
        sa.UniqueConstraint("project_id", "process_id", name="uq_project_process_state"),
    )
    return metadata.tables[name]


def upgrade() -> None:
    with op.batch_alter_table("process_executions", copy_from=_as_of_0001("process_executions")) as batch_op:
        batch_op.drop_constraint("fk_process_executions_process_id_process_definitions", type_="foreignkey")
    with op.batch_alter_table("process_states", copy_from=_as_of_0001("process_states")) as batch_op:
        batch_op.drop_constraint("fk_process_states_process_id_process_definitions", type_="foreignkey")
    with op.batch_alter_table("process_definitions", copy_from=_as_of_0001("process_definitions")) as batch_op:
        batch_op.add_column(sa.Column("pipeline_id", sa.String(length=100), server_default=DEFAULT, nullable=False))
        batch_op.drop_constraint("pk_process_definitions", type_="primary")
        batch_op.create_primary_key("pk_process_definitions", ["pipeline_id", "id"])
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pipeline_id", sa.String(length=100), server_default=DEFAULT, nullable=False))
        batch_op.create_index("ix_projects_pipeline_id", ["pipeline_id"], unique=False)
    _check_foreign_keys()


def _refuse_other_pipelines() -> None:
    bind = op.get_bind()
    others: set[str] = set()
    for table in ("process_definitions", "projects"):
        query = sa.text(f"SELECT DISTINCT pipeline_id FROM {table} WHERE pipeline_id <> :d")  # noqa: S608
        others.update(row[0] for row in bind.execute(query, {"d": DEFAULT}))
    if others:
        raise RuntimeError(
            f"cannot downgrade below 0002 while pipelines other than {DEFAULT!r} exist ({', '.join(sorted(others))}):"
            " revision 0001 has one catalogue. Delete those pipelines' processes and projects first"
        )


def downgrade() -> None:
    if not context.is_offline_mode():
        _refuse_other_pipelines()
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_index("ix_projects_pipeline_id")
        batch_op.drop_column("pipeline_id")
    with op.batch_alter_table("process_definitions", schema=None) as batch_op:
        batch_op.drop_constraint("pk_process_definitions", type_="primary")
        batch_op.create_primary_key("pk_process_definitions", ["id"])
        batch_op.drop_column("pipeline_id")
    with op.batch_alter_table("process_states", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_process_states_process_id_process_definitions", "process_definitions", ["process_id"], ["id"]
        )
    with op.batch_alter_table("process_executions", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_process_executions_process_id_process_definitions", "process_definitions", ["process_id"], ["id"]
        )
    _check_foreign_keys()
