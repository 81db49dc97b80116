"""The ``costs`` toolset: log LLM usage and cost, and sum it up."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated

from mcp.server.mcpserver import Context
from pydantic import Field, StringConstraints

from mcp_server.app import App
from mcp_server.lazy import lazy_module
from mcp_server.schemas.common import NoNul, ShortText, Slug, Usd
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
from mcp_server.tools.base import Registrar, actor_of, app_of

if TYPE_CHECKING:
    from mcp_server.services import costs
else:  # loaded on the first call: start-up does not import the database layer
    costs = lazy_module("mcp_server.services.costs")

IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=200), NoNul]


def register(registrar: Registrar) -> None:
    tool = registrar.tool

    @tool(title="Report LLM cost", read_only=False, idempotent=False)
    async def report_cost(
        provider: Provider,
        model: ModelName,
        ctx: Context[App],
        prompt_tokens: Annotated[Tokens, Field(description="Every input token, cached ones included.")] = 0,
        completion_tokens: Annotated[Tokens, Field(description="Output tokens, reasoning tokens included.")] = 0,
        total_tokens: Annotated[
            Tokens | None,
            Field(description="Defaults to prompt_tokens + completion_tokens; refused when smaller than that."),
        ] = None,
        cache_read_tokens: Annotated[Tokens, Field(description="How many of prompt_tokens came from the cache.")] = 0,
        cache_write_tokens: Annotated[
            Tokens, Field(description="How many of prompt_tokens were written to the cache.")
        ] = 0,
        cost_usd: Annotated[
            Usd | None,
            Field(description="The cost in USD if your API returned it (stored as `reported`); omit to compute it."),
        ] = None,
        inference_time_ms: Annotated[InferenceMs | None, Field(description="How long the call took, in ms.")] = None,
        project_id: Annotated[
            uuid.UUID | None, Field(description="The project the call was for; its budget status comes back.")
        ] = None,
        process_id: Annotated[Slug | None, Field(description="The pipeline step the call was for.")] = None,
        execution_id: Annotated[
            uuid.UUID | None,
            Field(description="The execution the call belongs to (its project and process are then implied)."),
        ] = None,
        idempotency_key: Annotated[
            IdempotencyKey | None,
            Field(description="Any unique string; repeating the call with it logs nothing twice."),
        ] = None,
    ) -> CostReply:
        """Log the token usage and cost of one LLM call you made, priced automatically.

        Call it once per LLM call (or pass `usage` to record_execution instead, which logs the same
        row linked to the execution). Without `cost_usd` the cost is computed from the bundled
        genai-prices table (cost_source `computed`); an unknown provider/model is stored with a null
        cost and cost_source `unpriced` (never counted as 0); with `cost_usd` it is `reported`.
        Token convention: prompt_tokens counts ALL input tokens, cached ones included (OpenAI's
        prompt_tokens; for Anthropic add input_tokens + cache_read_input_tokens +
        cache_creation_input_tokens); cache_read_tokens and cache_write_tokens say how many of those
        were read from or written to the prompt cache, and are billed at the model's cache prices.

        Returns the stored row and, when it has a project, the project's budget: spent_usd,
        remaining_usd (negative once over) and exceeded. Retrying with the same idempotency_key
        returns the original reply with `replayed: true`; the same key with other arguments is a
        `conflict`. Unknown project/process/execution ids are `not_found`."""
        usage = UsageIn.parse(
            provider=provider,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=total_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            cost_usd=cost_usd,
            inference_time_ms=inference_time_ms,
        )
        async with app_of(ctx).db.unit_of_work() as session:
            return await costs.report_cost(
                session,
                usage,
                project_id=project_id,
                process_id=process_id,
                execution_id=execution_id,
                idempotency_key=idempotency_key,
                actor=actor_of(ctx),
            )

    @tool(title="Cost summary", read_only=True)
    async def get_cost_summary(
        ctx: Context[App],
        project_id: Annotated[uuid.UUID | None, Field(description="Only this project's calls.")] = None,
        process_id: Annotated[ShortText | None, Field(description="Only calls for this pipeline step.")] = None,
        provider: Annotated[ShortText | None, Field(description="Only this provider (e.g. openai).")] = None,
        model: Annotated[ShortText | None, Field(description="Only this model, exactly as reported.")] = None,
        since: Annotated[
            UtcDatetime | None, Field(description="Only calls at or after this time (ISO 8601; no zone means UTC).")
        ] = None,
        until: Annotated[
            UtcDatetime | None, Field(description="Only calls strictly before this time (ISO 8601; no zone means UTC).")
        ] = None,
        group_by: Annotated[
            list[GroupKey] | None,
            Field(
                max_length=5,
                description="Break the figures down by any of project, process, provider, model, day (UTC date).",
            ),
        ] = None,
    ) -> CostSummary:
        """Sum up logged LLM usage: how many calls, tokens by kind, exact cost in USD, calls with an
        unknown price, mean inference time, and superseded_cost_usd, what was spent on executions that
        are no longer current (re-run, failed or gone stale): the cost of rework.

        Use it to answer "what did this project / step / model cost?". Filters combine; `group_by`
        adds one row per group (up to 1000, ordered by the keys) with the same figures. Amounts are
        decimal strings, exact to 1e-10 USD; cost_usd leaves out unpriced calls (see unpriced_calls)."""
        filters = CostFilters(
            project_id=project_id, process_id=process_id, provider=provider, model=model, since=since, until=until
        )
        async with app_of(ctx).db.unit_of_work(write=False) as session:
            return await costs.summary(session, filters, list(group_by or []))
