"""Initial schema: the six tables of the data model (docs/design.md, "Data model") on SQLite and PostgreSQL.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 17:41:37.432980
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mcp_server.db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "process_definitions",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("order_index", sa.Integer(), nullable=False),
        sa.Column("input_schema", mcp_server.db.types.JSONType(), nullable=True),
        sa.Column("output_schema", mcp_server.db.types.JSONType(), nullable=True),
        sa.Column("depends_on", mcp_server.db.types.ArrayType(sa.String(length=100)), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_process_definitions")),
    )
    op.create_table(
        "projects",
        sa.Column("id", mcp_server.db.types.GUID(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "in_progress",
                "completed",
                "archived",
                name="project_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("metadata", mcp_server.db.types.JSONType(), nullable=False),
        sa.Column("budget_usd", mcp_server.db.types.Money(), nullable=True),
        sa.Column("spent_usd", mcp_server.db.types.Money(), server_default="0", nullable=False),
        sa.Column("unpriced_calls", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("deleted_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
    )
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.create_index("ix_projects_status_created", ["is_deleted", "status", "created_at"], unique=False)

    op.create_table(
        "prompt_versions",
        sa.Column("id", mcp_server.db.types.GUID(length=36), nullable=False),
        sa.Column("prompt_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("user_template", sa.Text(), nullable=True),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_versions")),
        sa.UniqueConstraint("prompt_id", "version", name="uq_prompt_version"),
    )
    op.create_table(
        "process_executions",
        sa.Column("id", mcp_server.db.types.GUID(length=36), nullable=False),
        sa.Column("project_id", mcp_server.db.types.GUID(length=36), nullable=False),
        sa.Column("process_id", sa.String(length=100), nullable=False),
        sa.Column("prompt_version_id", mcp_server.db.types.GUID(length=36), nullable=True),
        sa.Column("input_data", mcp_server.db.types.JSONType(), nullable=False),
        sa.Column("output_data", mcp_server.db.types.JSONType(), nullable=True),
        sa.Column("output_hash", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=50), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("reasoning", sa.Text(), nullable=True),
        sa.Column("missing_info", mcp_server.db.types.JSONType(), nullable=True),
        sa.Column("started_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("reply", mcp_server.db.types.JSONType(), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["process_id"],
            ["process_definitions.id"],
            name=op.f("fk_process_executions_process_id_process_definitions"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_process_executions_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["prompt_version_id"],
            ["prompt_versions.id"],
            name=op.f("fk_process_executions_prompt_version_id_prompt_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_process_executions")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_process_executions_idempotency_key")),
    )
    with op.batch_alter_table("process_executions", schema=None) as batch_op:
        batch_op.create_index("ix_execution_project_created", ["project_id", "created_at"], unique=False)
        batch_op.create_index("ix_execution_project_process", ["project_id", "process_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_process_executions_process_id"), ["process_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_process_executions_project_id"), ["project_id"], unique=False)

    op.create_table(
        "llm_metrics",
        sa.Column("id", mcp_server.db.types.GUID(length=36), nullable=False),
        sa.Column("project_id", mcp_server.db.types.GUID(length=36), nullable=True),
        sa.Column("process_id", sa.String(length=100), nullable=True),
        sa.Column("execution_id", mcp_server.db.types.GUID(length=36), nullable=True),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", mcp_server.db.types.Money(), nullable=True),
        sa.Column("cost_source", sa.String(length=20), nullable=False),
        sa.Column("inference_time_ms", sa.Integer(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("reply", mcp_server.db.types.JSONType(), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["process_executions.id"],
            name=op.f("fk_llm_metrics_execution_id_process_executions"),
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_llm_metrics_project_id_projects")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_metrics")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_llm_metrics_idempotency_key")),
    )
    with op.batch_alter_table("llm_metrics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_llm_metrics_execution_id"), ["execution_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_llm_metrics_process_id"), ["process_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_llm_metrics_project_id"), ["project_id"], unique=False)
        batch_op.create_index("ix_metrics_created", ["created_at"], unique=False)
        batch_op.create_index("ix_metrics_project_created", ["project_id", "created_at"], unique=False)
        batch_op.create_index("ix_metrics_provider_model", ["provider", "model"], unique=False)

    op.create_table(
        "process_states",
        sa.Column("id", mcp_server.db.types.GUID(length=36), nullable=False),
        sa.Column("project_id", mcp_server.db.types.GUID(length=36), nullable=False),
        sa.Column("process_id", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=50), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("current_execution_id", mcp_server.db.types.GUID(length=36), nullable=True),
        sa.Column("invalidated_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("invalidated_by_process_id", sa.String(length=100), nullable=True),
        sa.Column("invalidation_reason", sa.Text(), nullable=True),
        sa.Column("last_updated_at", mcp_server.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["current_execution_id"],
            ["process_executions.id"],
            name=op.f("fk_process_states_current_execution_id_process_executions"),
        ),
        sa.ForeignKeyConstraint(
            ["process_id"],
            ["process_definitions.id"],
            name=op.f("fk_process_states_process_id_process_definitions"),
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_process_states_project_id_projects")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_process_states")),
        sa.UniqueConstraint("project_id", "process_id", name="uq_project_process_state"),
    )


def downgrade() -> None:
    op.drop_table("process_states")
    with op.batch_alter_table("llm_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_metrics_provider_model")
        batch_op.drop_index("ix_metrics_project_created")
        batch_op.drop_index("ix_metrics_created")
        batch_op.drop_index(batch_op.f("ix_llm_metrics_project_id"))
        batch_op.drop_index(batch_op.f("ix_llm_metrics_process_id"))
        batch_op.drop_index(batch_op.f("ix_llm_metrics_execution_id"))

    op.drop_table("llm_metrics")
    with op.batch_alter_table("process_executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_process_executions_project_id"))
        batch_op.drop_index(batch_op.f("ix_process_executions_process_id"))
        batch_op.drop_index("ix_execution_project_process")
        batch_op.drop_index("ix_execution_project_created")

    op.drop_table("process_executions")
    op.drop_table("prompt_versions")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_index("ix_projects_status_created")

    op.drop_table("projects")
    op.drop_table("process_definitions")
