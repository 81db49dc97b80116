"""The ``costs`` toolset: log LLM usage and cost, and sum it up."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated

from mcp.server.mcpserver import Context
from pydantic import Field, StringConstraints

from mcp_server.app import App
from mcp_server.lazy import lazy_module
from mcp_server.schemas.common import Agent, NoNul, ShortText, SlugRef, Usd
from mcp_server.schemas.cost import (
    CostFilters,
    CostReply,
    CostSummary,
    GroupKey,
    InferenceMs,
    ModelName,
    Provider,
    Tokens,
    UsageIn,
    UtcDatetime,
)
from mcp_server.tools.base import ToolEntry, actor_of, app_of, tell_alerts

if TYPE_CHECKING:
    from mcp_server.services import costs
else:  # loaded on the first call: start-up does not import the database layer
    costs = lazy_module("mcp_server.services.costs")

IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=200), NoNul]


async def report_cost(
    provider: Provider,
    model: ModelName,
    ctx: Context[App],
    prompt_tokens: Annotated[
        Tokens,
        Field(description="ALL input tokens, cached included (Anthropic: add the cache tokens)."),
    ] = 0,
    completion_tokens: Annotated[Tokens, Field(description="Output tokens, reasoning included.")] = 0,
    total_tokens: Annotated[Tokens | None, Field(description="Default prompt + completion.")] = None,
    cache_read_tokens: Annotated[Tokens, Field(description="Of prompt_tokens, cache reads.")] = 0,
    cache_write_tokens: Annotated[Tokens, Field(description="Of prompt_tokens, cache writes.")] = 0,
    cache_write_1h_tokens: Annotated[Tokens, Field(description="Of cache writes, 1-hour TTL.")] = 0,
    cost_usd: Annotated[Usd | None, Field(description='As reported, e.g. "0.0042"; omit to compute.')] = None,
    inference_time_ms: Annotated[InferenceMs | None, Field(description="Call duration.")] = None,
    project_id: Annotated[uuid.UUID | None, Field(description="Project charged.")] = None,
    process_id: Annotated[SlugRef | None, Field(description="Step it was for.")] = None,
    execution_id: Annotated[uuid.UUID | None, Field(description="Its execution (implies project, step).")] = None,
    idempotency_key: Annotated[IdempotencyKey | None, Field(description="Retry-safe key (`replayed`).")] = None,
    agent: Annotated[Agent | None, Field(description="Sub-agent or role; default: client.")] = None,
) -> CostReply:
    """Log one LLM call's tokens and cost (or pass `usage` to record_execution). Priced unless cost_usd
    is given (unknown models: `unpriced`, null). Stored even over budget."""
    usage = UsageIn.parse(
        provider=provider,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=total_tokens,
        cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens,
        cache_write_1h_tokens=cache_write_1h_tokens,
        cost_usd=cost_usd,
        inference_time_ms=inference_time_ms,
    )
    reply = await app_of(ctx).db.run(
        lambda session: costs.report_cost(
            session,
            usage,
            project_id=project_id,
            process_id=process_id,
            execution_id=execution_id,
            idempotency_key=idempotency_key,
            actor=actor_of(ctx),
            agent=agent,
        )
    )
    if not reply.replayed:
        await tell_alerts(ctx, reply.budget)  # after the commit: only what was kept is told
    return reply


async def get_cost_summary(
    ctx: Context[App],
    project_id: Annotated[uuid.UUID | None, Field(description="Only this project's calls.")] = None,
    process_id: Annotated[ShortText | None, Field(description="Only this step's.")] = None,
    provider: Annotated[ShortText | None, Field(description="Only this provider's.")] = None,
    model: Annotated[ShortText | None, Field(description="Only this model's.")] = None,
    since: Annotated[UtcDatetime | None, Field(description="From this time on (ISO 8601, UTC by default).")] = None,
    until: Annotated[UtcDatetime | None, Field(description="Before this time.")] = None,
    group_by: Annotated[
        list[GroupKey] | None, Field(max_length=8, description="Group by the tuple of these; `day` is UTC.")
    ] = None,
) -> CostSummary:
    """Totals of the logged calls the filters select: count, tokens, cost_usd (exact string; unpriced_calls
    apart), superseded_cost_usd (rework), saved_usd (reuse). group_by adds a row per group (up to 1000)."""
    filters = CostFilters(
        project_id=project_id, process_id=process_id, provider=provider, model=model, since=since, until=until
    )
    return await app_of(ctx).db.run(lambda session: costs.summary(session, filters, list(group_by or [])), write=False)


# The toolset, in the order tools/list publishes it.
TOOLS: tuple[ToolEntry, ...] = (
    ToolEntry(report_cost, "Report LLM cost", read_only=False, idempotent=False),
    ToolEntry(get_cost_summary, "Cost summary", read_only=True),
)
