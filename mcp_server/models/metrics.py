"""LLMMetrics: one LLM call's usage and cost (docs/design.md, "Data model")."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db.base import AuditMixin, Base
from mcp_server.db.types import GUID, JSONType, Money
from mcp_server.models.process import PROCESS_ID_LENGTH

AGENT_LENGTH = 200


class LLMMetrics(AuditMixin, Base):
    __tablename__ = "llm_metrics"

    id: Mapped[uuid.UUID] = mapped_column(GUID(), primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID | None] = mapped_column(GUID(), ForeignKey("projects.id"), index=True)
    process_id: Mapped[str | None] = mapped_column(String(PROCESS_ID_LENGTH), index=True)
    execution_id: Mapped[uuid.UUID | None] = mapped_column(GUID(), ForeignKey("process_executions.id"), index=True)

    provider: Mapped[str] = mapped_column(String(50), nullable=False)
    model: Mapped[str] = mapped_column(String(100), nullable=False)

    prompt_tokens: Mapped[int] = mapped_column(BigInteger(), default=0, nullable=False)
    completion_tokens: Mapped[int] = mapped_column(BigInteger(), default=0, nullable=False)
    total_tokens: Mapped[int] = mapped_column(BigInteger(), default=0, nullable=False)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger(), default=0, nullable=False)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger(), default=0, nullable=False)
    # Of cache_write_tokens, those written with a one-hour TTL (priced apart from 5-minute writes).
    cache_write_1h_tokens: Mapped[int] = mapped_column(BigInteger(), default=0, server_default="0", nullable=False)

    cost_usd: Mapped[Decimal | None] = mapped_column(Money())
    cost_source: Mapped[str] = mapped_column(String(20), nullable=False)
    # The rule that priced it: the price table and model, a dated price, a long-context tier, cache TTLs.
    price_rule: Mapped[str | None] = mapped_column(String(300))
    inference_time_ms: Mapped[int | None] = mapped_column(Integer())

    # Set by `db prune` when the row's execution (superseded, old) is deleted: the cost still counts as
    # rework, and the prompt version that execution used is kept here for cost by prompt.
    detached: Mapped[bool] = mapped_column(Boolean(), default=False, server_default=false(), nullable=False)
    prompt_version_id: Mapped[uuid.UUID | None] = mapped_column(GUID())

    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    reply: Mapped[Any | None] = mapped_column(JSONType())
    # Who spent it: a sub-agent, worker or role named by the call (by default the MCP client).
    agent: Mapped[str | None] = mapped_column(String(AGENT_LENGTH))

    __table_args__ = (
        Index("ix_metrics_project_created", "project_id", "created_at"),
        Index("ix_metrics_created", "created_at"),
        Index("ix_metrics_provider_model", "provider", "model"),
    )

    def __repr__(self) -> str:
        return f"<LLMMetrics {self.provider}/{self.model} cost={self.cost_usd}>"


class LLMPrice(AuditMixin, Base):
    """The team's own price for a model (fine-tunes, self-hosted, negotiated rates): preferred over
    genai-prices. USD per million tokens, exact (Money)."""

    __tablename__ = "llm_prices"

    provider: Mapped[str] = mapped_column(String(50), primary_key=True)
    model: Mapped[str] = mapped_column(String(100), primary_key=True)
    input_per_mtok: Mapped[Decimal] = mapped_column(Money(), nullable=False)
    output_per_mtok: Mapped[Decimal] = mapped_column(Money(), nullable=False)
    cache_read_per_mtok: Mapped[Decimal | None] = mapped_column(Money())
    cache_write_per_mtok: Mapped[Decimal | None] = mapped_column(Money())
