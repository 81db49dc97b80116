"""Cost inputs and outputs: one call's usage, the stored row, budgets and summaries."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)

from mcp_server.enums import BudgetPolicy, CostSource
from mcp_server.errors import InvalidArgument
from mcp_server.schemas.common import DecimalOut, NoNul, Out, Usd

if TYPE_CHECKING:
    from mcp_server.models import LLMMetrics

# Far above any single call (a thousand of today's largest context windows), and low enough that no
# number of calls a server can take brings a token sum near SQLite's 64-bit integers.
MAX_TOKENS = 10**9
MAX_INFERENCE_MS = 2**31 - 1  # the column is a 32-bit INTEGER

ProviderText = Annotated[
    str, StringConstraints(min_length=1, max_length=50, strip_whitespace=True, to_lower=True), NoNul
]
ModelText = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True), NoNul]
Provider = Annotated[
    ProviderText,
    Field(description="e.g. openai, anthropic, google, mistral."),
]
ModelName = Annotated[
    ModelText,
    Field(description="As the API reports it, e.g. gpt-4o-mini."),
]
Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
InferenceMs = Annotated[int, Field(ge=0, le=MAX_INFERENCE_MS)]
GroupKey = Literal["project", "process", "provider", "model", "day", "prompt", "source", "agent"]

PROMPT_CONVENTION = (
    "prompt_tokens counts ALL input tokens, cached ones included (OpenAI's prompt_tokens; for Anthropic "
    "add input_tokens + cache_read_input_tokens + cache_creation_input_tokens); cache_read_tokens and "
    "cache_write_tokens say how many of those were read from or written to the prompt cache"
)


def _as_utc(value: datetime) -> datetime:
    """A naive datetime is taken to be UTC; an aware one is converted to UTC."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise ValueError("the time is out of range once converted to UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class UsageIn(BaseModel):
    """One LLM call's usage, as report_cost and record_execution's `usage` take it."""

    # The fields mean what report_cost's arguments of the same names say; their descriptions are written
    # there once (record_execution's `usage` refers to them), so the model reads each rule once.
    provider: ProviderText
    model: ModelText
    prompt_tokens: Tokens = 0
    completion_tokens: Tokens = 0
    total_tokens: Tokens | None = None
    cache_read_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0
    cache_write_1h_tokens: Tokens = 0
    cost_usd: Usd | None = None
    inference_time_ms: InferenceMs | None = None

    @model_validator(mode="after")
    def _consistent(self) -> UsageIn:
        floor = self.prompt_tokens + self.completion_tokens
        if self.total_tokens is None:
            self.total_tokens = floor
        elif self.total_tokens < floor:
            raise ValueError(
                f"total_tokens ({self.total_tokens}) is smaller than prompt_tokens + completion_tokens ({floor}); "
                "omit total_tokens to have it computed"
            )
        cached = self.cache_read_tokens + self.cache_write_tokens
        if cached > self.prompt_tokens:
            raise ValueError(
                f"cache_read_tokens + cache_write_tokens ({cached}) exceed prompt_tokens ({self.prompt_tokens}): "
                + PROMPT_CONVENTION
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise ValueError(
                f"cache_write_1h_tokens ({self.cache_write_1h_tokens}) exceed cache_write_tokens "
                f"({self.cache_write_tokens}): the one-hour writes are part of all cache writes"
            )
        return self

    @classmethod
    def parse(cls, **fields: Any) -> UsageIn:
        """Build from tool arguments, refusing inconsistent counts as ``invalid_argument``."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            problems = "; ".join(
                (".".join(str(p) for p in err["loc"]) + ": " if err["loc"] else "") + err["msg"]
                for err in exc.errors(include_url=False, include_input=False)
            )
            raise InvalidArgument(problems, hint="Fix the token counts and retry") from None


def _note(source: str, provider: str, model: str) -> str:
    if source == CostSource.COMPUTED:
        return f"priced from the bundled genai-prices data for {provider}/{model}"
    if source == CostSource.REPORTED:
        return "cost as reported by the caller"
    return (
        f"unpriced: no price is known for provider {provider!r} model {model!r}; cost_usd is null and left out of "
        "every sum (unpriced_calls counts it). Pass cost_usd to record the cost yourself"
    )


class CostRecord(Out):
    id: uuid.UUID
    project_id: uuid.UUID | None
    process_id: str | None
    execution_id: uuid.UUID | None
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int = 0
    cost_usd: DecimalOut | None = Field(description="Exact USD; absent when unpriced.")
    cost_source: CostSource = Field(description="reported (given by you), computed (genai-prices) or unpriced.")
    inference_time_ms: int | None
    created_at: datetime
    created_by: str | None
    priced: bool
    note: str = Field(description="How the cost was obtained, or why it is missing.")

    @classmethod
    def from_row(cls, row: LLMMetrics) -> CostRecord:
        fields = {name: getattr(row, name) for name in cls.model_fields if name not in ("priced", "note")}
        note = row.price_rule or _note(row.cost_source, row.provider, row.model)
        return cls(**fields, priced=row.cost_usd is not None, note=note)


class LoggedCost(BaseModel):
    """What a record reply says of the usage it logged: the agent sent the tokens, so only what it did not
    know comes back (the note only when the cost is missing)."""

    id: uuid.UUID
    cost_usd: DecimalOut | None = None
    cost_source: CostSource
    note: str | None = None


class CapStatus(BaseModel):
    """A cap that judged this call (agent:<name> or model:<provider>/<model>), over the budget's period."""

    cap: str
    cap_usd: DecimalOut
    spent_usd: DecimalOut
    reserved_usd: DecimalOut
    remaining_usd: DecimalOut
    crossed: list[int] | None = None


class PipelineBudgetStatus(BaseModel):
    """The budget shared by every project of the pipeline, over its period."""

    pipeline_id: str
    budget_usd: DecimalOut
    policy: BudgetPolicy
    period: str | None = None
    period_start: datetime | None = None
    resets_at: datetime | None = None
    spent_usd: DecimalOut = Field(description="By all its projects (in the period).")
    reserved_usd: DecimalOut
    remaining_usd: DecimalOut
    exceeded: bool
    crossed: list[int] | None = None


class BudgetStatus(BaseModel):
    # A project's budget as every reply about a project carries it (the reply names the project); no
    # docstring, which every output schema carrying it would repeat.

    budget_usd: DecimalOut | None = None
    policy: BudgetPolicy
    spent_usd: DecimalOut = Field(description="All time.")
    reserved_usd: DecimalOut = Field(description="Held by running executions.")
    remaining_usd: DecimalOut | None = Field(description="budget - spent (in the period) - reserved.")
    exceeded: bool
    period: str | None = None
    period_start: datetime | None = None
    period_spent_usd: DecimalOut | None = None
    period_remaining_usd: DecimalOut | None = None
    resets_at: datetime | None = None
    crossed: list[int] | None = Field(None, description="Percents of the budget first crossed by this call.")
    # Written as plain objects in the output schemas (each tool with a budget would repeat their shapes):
    # the fields are those of CapStatus and PipelineBudgetStatus, named in the descriptions.
    caps: Annotated[
        list[CapStatus] | None,
        WithJsonSchema({"type": "array", "items": {"type": "object"}, "description": "Caps that judged this call."}),
    ] = None
    pipeline: Annotated[
        PipelineBudgetStatus | None,
        WithJsonSchema({"type": "object", "description": "The pipeline's shared budget."}),
    ] = None
    unpriced_calls: int = Field(description="Not in spent_usd.")
    note: str | None = None

    @field_serializer("caps", "pipeline")
    def _plain(self, value: Any) -> Any:
        # Written as plain objects in the schema: null fields are left out here, as the tools leave them out.
        if isinstance(value, list):
            return [item.model_dump(mode="json", exclude_none=True) for item in value]
        return None if value is None else value.model_dump(mode="json", exclude_none=True)

    @field_validator("crossed", mode="before")
    @classmethod
    def _one_threshold(cls, value: Any) -> Any:
        # Replies stored before every threshold was listed (replays, bundles) said one number.
        return [value] if isinstance(value, int) else value


class CostReply(BaseModel):
    cost: CostRecord
    budget: BudgetStatus | None = Field(description="The project's budget after it.")
    replayed: bool = False


class CostFilters(BaseModel):
    project_id: uuid.UUID | None = None
    process_id: str | None = None
    provider: str | None = None
    model: str | None = None
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None


class CostFigures(BaseModel):
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    # Both sums are absent when every call in them is unpriced (an unknown cost is not 0); the tool's
    # description says what superseded means, so the schema spends no characters on it.
    cost_usd: DecimalOut | None = None
    unpriced_calls: int
    mean_inference_time_ms: float | None
    superseded_cost_usd: DecimalOut | None
    superseded_unpriced_calls: int = 0


class CostGroup(CostFigures):
    project_id: uuid.UUID | None = None
    process_id: str | None = None
    provider: str | None = None
    model: str | None = None
    day: date | None = Field(None, description="UTC date.")
    prompt_id: str | None = None
    prompt_version: int | None = None
    cost_source: str | None = None
    agent: str | None = None


class CostSummary(BaseModel):
    # The filters the agent sent are not echoed back; the grouping is, as the key of every row.
    group_by: list[GroupKey]
    totals: CostGroup = Field(description="Every matching call (no keys).")
    groups: list[CostGroup] = Field(description="One row per group, ordered by the keys.")
    groups_truncated: bool = Field(False, description="More groups exist than were returned.")
    saved_usd: DecimalOut | None = None  # what reuses of finished work saved (not by provider or model)
