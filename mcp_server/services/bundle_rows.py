"""The rows of a bundle, each checked by the rules the tools apply before they store one.

A bundle is data from outside: every record is validated into one of the row models below (types, ranges,
lengths, UUIDs, timezone-aware times, finite numbers, known states and statuses, storable JSON) before
anything is written. The types are the tools' own (``schemas.common``, ``schemas.cost``), stricter only
where JSON would let a wrong type through (a number where text is expected, a float for money).
A refusal is an ``InvalidArgument`` naming the line and the field, never echoing the value.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    model_validator,
)

from mcp_server.enums import DEFAULT_PIPELINE, BudgetPolicy, CostSource, ExecutionStatus, ProjectStatus, StateName
from mcp_server.errors import DomainError, InvalidArgument
from mcp_server.schemas.common import ACTOR_MAX, Agent, JsonObject, Name, NoNul, Slug, Text, Usd, bounded_json
from mcp_server.schemas.cost import CostReply, InferenceMs, ModelText, ProviderText, Tokens, UsageIn
from mcp_server.schemas.pipeline import (
    CheckName,
    MaxAttempts,
    RecordReply,
    RequiredChecks,
    RetryBackoff,
    ReuseScope,
    ReuseTtl,
    StartReply,
    TimeoutSeconds,
)
from mcp_server.services import caps as limits
from mcp_server.services import periods, templates
from mcp_server.services.validation import check_schema, json_hash

INT32 = 2**31 - 1  # INTEGER columns (order, versions)
NOTHING_WRITTEN = "Nothing was written. Export the bundle again from its source rather than editing it"


def _text_time(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 time, as text, with its time zone")
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise ValueError("the time is out of range once converted to UTC") from None


def _exact_money(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a decimal string (money is never a binary float)")
    return value


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return float(value)


def _strict_int(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a whole number")
    return value


Time = Annotated[AwareDatetime, BeforeValidator(_text_time), AfterValidator(_utc)]
Money = Annotated[Usd, BeforeValidator(_exact_money)]
Whole = Annotated[int, BeforeValidator(_strict_int)]
Count = Annotated[Whole, Field(ge=0, le=2**63 - 1)]
Version = Annotated[Whole, Field(ge=1, le=INT32)]
StateVersion = Annotated[Whole, Field(ge=0, le=INT32)]  # at least the step's executions (checked with them)
Who = Annotated[str, StringConstraints(max_length=ACTOR_MAX), NoNul]
Key = Annotated[str, StringConstraints(min_length=1, max_length=200), NoNul]
Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Json = Annotated[Any, AfterValidator(bounded_json)]
# Execution data was not always a JSON object (older rows hold scalars, read back wrapped): any storable JSON.
Data = Json


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Audited(_Row):
    created_at: Time
    updated_at: Time | None = None
    created_by: Who | None = None
    updated_by: Who | None = None


class DefinitionRow(_Audited):
    pipeline_id: Slug = DEFAULT_PIPELINE
    id: Slug
    name: Name
    description: Text | None = None
    order_index: Annotated[Whole, Field(ge=-1_000_000, le=1_000_000)] = 0
    input_schema: JsonObject | None = None
    output_schema: JsonObject | None = None
    depends_on: Annotated[list[Slug], Field(max_length=100)] = []
    max_attempts: MaxAttempts = 3
    retry_backoff_seconds: RetryBackoff = 0
    timeout_seconds: TimeoutSeconds | None = None
    reuse: ReuseScope = "project"
    reuse_ttl_seconds: ReuseTtl | None = None
    required_checks: RequiredChecks | None = None

    @model_validator(mode="after")
    def _definable(self) -> DefinitionRow:
        for field, schema in (("input_schema", self.input_schema), ("output_schema", self.output_schema)):
            if schema is not None:
                check_schema(schema, field=field)
        if self.id in self.depends_on:
            raise ValueError(f"process {self.id!r} cannot depend on itself")
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValueError("depends_on names a process twice")
        return self


class ProjectRow(_Audited):
    id: uuid.UUID
    name: Name
    description: Text | None = None
    status: ProjectStatus = ProjectStatus.DRAFT
    metadata: JsonObject = {}
    budget_usd: Money | None = None
    # Derived (the project's cost rows and running executions): checked against them, or computed.
    spent_usd: Money | None = None
    unpriced_calls: Count | None = None
    reserved_usd: Money | None = None
    budget_policy: BudgetPolicy = BudgetPolicy.WARN
    budget_period: Annotated[str, StringConstraints(max_length=20), AfterValidator(periods.check)] = periods.NONE
    caps: Annotated[dict[str, str], Field(max_length=50), AfterValidator(limits.check)] | None = None
    alert_thresholds: Annotated[list[int], AfterValidator(limits.check_thresholds)] | None = None
    pipeline_id: Slug = DEFAULT_PIPELINE
    is_deleted: StrictBool = False
    deleted_at: Time | None = None

    @model_validator(mode="after")
    def _deletion(self) -> ProjectRow:
        if self.is_deleted != (self.deleted_at is not None):
            raise ValueError("is_deleted and deleted_at disagree (a deleted project has deleted_at, no other has)")
        return self


class PromptVersionRow(_Row):
    id: uuid.UUID
    prompt_id: Slug
    version: Version
    system_prompt: Text | None = None
    user_template: Text | None = None
    temperature: Annotated[float, BeforeValidator(_number), Field(ge=0, le=2)] | None = None
    content_hash: Hash | None = None
    created_at: Time
    created_by: Who | None = None

    @model_validator(mode="after")
    def _content(self) -> PromptVersionRow:
        if self.system_prompt is None and self.user_template is None:
            raise ValueError("a prompt version needs a system_prompt, a user_template or both")
        digest = templates.content_hash(self.system_prompt, self.user_template, self.temperature)
        if self.content_hash is not None and self.content_hash != digest:
            raise ValueError("content_hash is not the hash of the prompt's content")
        self.content_hash = digest
        return self


def _reply(value: Any, *models: type[BaseModel]) -> Any:
    """A stored idempotent reply is what a replay returns: it must read back as one."""
    for model in models:
        try:
            model.model_validate(value)
        except ValidationError:
            continue
        return value
    raise ValueError("is not a reply the tools could have given")


def _uuid_text(value: str) -> str:
    return str(uuid.UUID(value))


class ExecutionRow(_Audited):
    id: uuid.UUID
    project_id: uuid.UUID
    process_id: Slug
    prompt_version_id: uuid.UUID | None = None
    input_data: Data
    # Stored as the tools store it (ids as text), so a row already here compares equal.
    inputs_from: Annotated[dict[Slug, Annotated[str, AfterValidator(_uuid_text)]], Field(max_length=100)] | None = None
    output_data: Data | None = None
    output_hash: Hash | None = None  # derived: recomputed from output_data when the row is stored
    status: ExecutionStatus = ExecutionStatus.PENDING
    error_message: Text | None = None
    reasoning: Text | None = None
    missing_info: Data | None = None
    reserved_usd: Money | None = None
    agent: Agent | None = None
    model: Annotated[str, StringConstraints(max_length=160), NoNul] | None = None
    input_key: Hash | None = None
    reused_from: uuid.UUID | None = None
    saved_usd: Money | None = None  # what the reused output had cost: reported as saved, never judged
    superseded_by: uuid.UUID | None = None
    started_at: Time | None = None
    completed_at: Time | None = None
    lease_expires_at: Time | None = None
    lease_token: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    attempt: Annotated[Whole, Field(ge=1, le=1_000_000)] | None = None
    idempotency_key: Key | None = None
    request_hash: Hash | None = None
    reply: Annotated[Json, AfterValidator(lambda v: _reply(v, StartReply, RecordReply))] | None = None

    @model_validator(mode="after")
    def _held(self) -> ExecutionRow:
        if self.input_data is None:
            raise ValueError("input_data is required (an empty object when the step took none)")
        # Derived: the hash record_execution keeps of the output, recomputed from the output itself.
        self.output_hash = None if self.output_data is None else json_hash(self.output_data)
        if self.reserved_usd is not None and self.status != ExecutionStatus.RUNNING:
            raise ValueError(f"a {self.status.value} execution holds no budget (reserved_usd is for running ones)")
        return self


class CheckRow(_Audited):
    """One check of an execution (record_check's): which execution, project and step are checked
    against the bundle's executions when it is imported."""

    id: uuid.UUID
    execution_id: uuid.UUID
    project_id: uuid.UUID
    process_id: Slug
    name: CheckName
    passed: StrictBool
    details: JsonObject | None = None
    agent: Agent | None = None


class StateRow(_Row):
    id: uuid.UUID
    project_id: uuid.UUID
    process_id: Slug
    state: StateName = StateName.EMPTY
    version: StateVersion
    current_execution_id: uuid.UUID | None = None
    invalidated_at: Time | None = None
    invalidated_by_process_id: Slug | None = None
    invalidation_reason: Text | None = None
    last_updated_at: Time
    attempts: Annotated[Whole, Field(ge=0, le=1_000_000)] = 0
    retry_at: Time | None = None


class CostRow(_Audited):
    id: uuid.UUID
    project_id: uuid.UUID | None = None
    process_id: Slug | None = None
    execution_id: uuid.UUID | None = None
    provider: ProviderText
    model: ModelText
    prompt_tokens: Annotated[Tokens, BeforeValidator(_strict_int)] = 0
    completion_tokens: Annotated[Tokens, BeforeValidator(_strict_int)] = 0
    total_tokens: Annotated[Tokens, BeforeValidator(_strict_int)] = 0
    cache_read_tokens: Annotated[Tokens, BeforeValidator(_strict_int)] = 0
    cache_write_tokens: Annotated[Tokens, BeforeValidator(_strict_int)] = 0
    cache_write_1h_tokens: Annotated[Tokens, BeforeValidator(_strict_int)] = 0
    cost_usd: Money | None = None
    cost_source: CostSource
    inference_time_ms: Annotated[InferenceMs, BeforeValidator(_strict_int)] | None = None
    detached: StrictBool = False
    prompt_version_id: uuid.UUID | None = None
    idempotency_key: Key | None = None
    request_hash: Hash | None = None
    reply: Annotated[Json, AfterValidator(lambda v: _reply(v, CostReply))] | None = None
    agent: Agent | None = None
    price_rule: Annotated[str, StringConstraints(max_length=300), NoNul] | None = None

    @model_validator(mode="after")
    def _usage(self) -> CostRow:
        # The same token rules as report_cost (UsageIn), on the counts as stored.
        UsageIn.parse(**self.model_dump(include=set(UsageIn.model_fields) - {"cost_usd"}))
        if (self.cost_usd is None) != (self.cost_source == CostSource.UNPRICED):
            raise ValueError("cost_usd is absent exactly when cost_source is unpriced")
        return self


ROW_MODELS: dict[str, type[_Row]] = {
    "definition": DefinitionRow,
    "project": ProjectRow,
    "prompt_version": PromptVersionRow,
    "execution": ExecutionRow,
    "check": CheckRow,
    "state": StateRow,
    "cost": CostRow,
}
MAX_PROBLEMS = 3


def _problems(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = [
        (".".join(str(p) for p in err["loc"]) + ": " if err["loc"] else "") + err["msg"].removeprefix("Value error, ")
        for err in errors[:MAX_PROBLEMS]
    ]
    more = f" (and {len(errors) - MAX_PROBLEMS} more)" if len(errors) > MAX_PROBLEMS else ""
    return "; ".join(parts) + more


def checked(kind: str, record: dict[str, Any], line: int) -> dict[str, Any]:
    """The record as the row to store (column name -> value), or InvalidArgument naming the line and field."""
    values = {name: value for name, value in record.items() if name != "kind"}
    try:
        row = ROW_MODELS[kind].model_validate(values)
    except ValidationError as exc:
        raise InvalidArgument(f"line {line}: {kind} {_problems(exc)}", hint=NOTHING_WRITTEN) from None
    except DomainError as exc:  # a schema the tools would refuse
        raise InvalidArgument(f"line {line}: {kind} {exc.message}", hint=NOTHING_WRITTEN) from None
    return {name: value.value if isinstance(value, enum.Enum) else value for name, value in row.model_dump().items()}
