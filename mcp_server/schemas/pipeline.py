"""Pipeline inputs and outputs: definitions, executions, states, status."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from mcp_server.enums import BudgetPolicy, ExecutionStatus, StateName
from mcp_server.schemas.common import (
    SLUG_PATTERN,
    JsonObject,
    JsonObjectOut,
    Name,
    NoNul,
    Out,
    PageInfo,
    SlugRef,
    Text,
    Usd,
    UsdOut,
)
from mcp_server.schemas.cost import BudgetStatus, LoggedCost, PipelineBudgetStatus

# Retries of a step (docs/design.md, "Agent teams"): shared by define_process, apply_pipeline and files;
# described once, in define_process (apply_pipeline's items say they take its fields).
Attempts = Annotated[int, Field(ge=1, le=100)]
Backoff = Annotated[int, Field(ge=0, le=86_400)]
Timeout = Annotated[int, Field(ge=1, le=86_400)]
MaxAttempts = Annotated[Attempts, Field(description="Failed/expired attempts before it gives up.")]
RetryBackoff = Annotated[Backoff, Field(description="Seconds before a retry, doubled per failure in a row.")]
TimeoutSeconds = Annotated[Timeout, Field(description="Start-to-close limit of one attempt.")]
# Reuse and checks (docs/design.md, "Reuse and stale causes").
ReuseScope = Literal["project", "pipeline", "off"]
Ttl = Annotated[int, Field(ge=1, le=31_536_000)]
ReuseTtl = Annotated[Ttl, Field(description="Max age of a reused run.")]
CheckName = Annotated[str, StringConstraints(pattern=SLUG_PATTERN), WithJsonSchema({"type": "string"})]
Checks = Annotated[list[CheckName], Field(max_length=20)]
RequiredChecks = Annotated[Checks, Field(description="record_check names that must pass before dependants run.")]


class ProcessSpec(BaseModel):
    # One process as define_process takes it: apply_pipeline's items and a pipeline file's processes.
    model_config = ConfigDict(extra="forbid")

    process_id: SlugRef
    name: Name
    depends_on: Annotated[list[SlugRef], Field(max_length=100)] = []
    order_index: Annotated[int, Field(ge=-1_000_000, le=1_000_000)] = 0
    description: Text | None = None
    input_schema: JsonObject | None = None
    output_schema: JsonObject | None = None
    max_attempts: Attempts = 3
    retry_backoff_seconds: Backoff = 0
    timeout_seconds: Timeout | None = None
    reuse: ReuseScope = "project"
    reuse_ttl_seconds: Ttl | None = None
    required_checks: Checks = []


class ProcessDefinitionOut(Out):
    id: str
    name: str
    description: str | None
    order_index: int
    depends_on: list[str]
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    max_attempts: int = 3
    retry_backoff_seconds: int = 0
    timeout_seconds: int | None = None
    reuse: str = "project"
    reuse_ttl_seconds: int | None = None
    required_checks: list[str] | None = None
    created_at: datetime
    updated_at: datetime | None


class DefineProcessReply(BaseModel):
    # Not the definition the agent just sent (list_processes has it).
    pipeline_id: str
    process_id: str
    created: bool = Field(description="False: an existing definition was replaced.")
    changed: list[str] | None = Field(None, description="Fields unlike the old definition.")
    stale_states: int | None = None  # the tool's description says what makes them stale
    stale_projects: int | None = None
    stale_by_project: dict[str, list[str]] | None = None  # project id -> its steps gone stale; first 100 projects


class ProcessList(PageInfo):
    pipeline_id: str
    items: list[ProcessDefinitionOut] = Field(description="In topological order; ties by order_index.")
    schemas_included: bool = True


class PipelineOut(BaseModel):
    pipeline_id: str
    processes: int
    projects: int
    budget: PipelineBudgetStatus | None = None


class PipelineBudgetIn(BaseModel):
    """A budget shared by every project of the pipeline."""

    budget_usd: Usd | None = None  # null removes the budget (the tool's description says so)
    policy: BudgetPolicy = BudgetPolicy.WARN
    period: Annotated[str, StringConstraints(max_length=20), NoNul] = "none"


class PipelineList(PageInfo):
    items: list[PipelineOut]


class ApplyReply(BaseModel):
    pipeline_id: str
    dry_run: bool
    added: list[str]
    changed: list[str] = Field(description="Replaced (name, description or order only, or what they compute).")
    removed: list[str]
    blocked: list[str] | None = Field(None, description="Dry run: removals apply would refuse (executions).")
    unchanged: int
    stale_states: int = Field(description="States made stale by changed depends_on or schemas.")
    budget: PipelineBudgetStatus | None = None
    stale_projects: int
    stale_steps: list[str] | None = None  # which steps go stale, first 100
    stale_by_project: dict[str, list[str]] | None = None  # project id -> its steps going stale; first 100 projects


class DeletedProcess(BaseModel):
    pipeline_id: str
    process_id: str
    deleted: bool


CURRENT = "The step's current output."


class CheckOut(BaseModel):
    # One check of an execution (docs/design.md, "Checks"): its latest result, by whom, when.
    name: str
    passed: bool
    details: JsonObjectOut | None = None
    agent: str | None = None
    at: datetime


class CheckReply(BaseModel):
    check: CheckOut
    current: bool  # of the step's current execution: only those gate dependants
    state: StateName  # the step's
    released: list[str] | None = None  # dependants that can run now
    held: list[str] | None = None  # dependants its checks hold
    note: str | None = None


class ExecutionOut(Out):
    id: uuid.UUID
    project_id: uuid.UUID
    process_id: str
    status: ExecutionStatus
    input_data: JsonObjectOut
    inputs_from: dict[str, uuid.UUID] | None = None  # dependency -> the execution whose output was used
    input_key: str | None = None  # what it computed from, hashed: equal keys, equal work
    reused_from: uuid.UUID | None = None  # a reuse: the execution whose output it took, at no cost
    saved_usd: UsdOut | None = None
    superseded_by: uuid.UUID | None = None  # the record that replaced its output as current
    output_data: JsonObjectOut | None
    output_hash: str | None
    reasoning: str | None
    missing_info: JsonObjectOut | None
    error_message: str | None
    prompt_version_id: uuid.UUID | None
    idempotency_key: str | None
    reserved_usd: UsdOut | None = None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    created_by: str | None
    current: bool = Field(False, description=CURRENT)
    checks: list[CheckOut] | None = None


class ExecutionRef(Out):
    # What a writing tool says of the execution it wrote; get_execution has the rest.

    id: uuid.UUID
    status: ExecutionStatus
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None = None


class ExecutionRow(Out):
    # A listed execution: its data (input, output, hash, reasoning, missing info) only with include_data,
    # and its project only when the list is not of one project.
    id: uuid.UUID
    project_id: uuid.UUID | None = None
    process_id: str
    status: ExecutionStatus
    current: bool = Field(False, description=CURRENT)
    started_at: datetime | None
    completed_at: datetime | None
    created_by: str | None
    error_message: str | None = None
    prompt_version_id: uuid.UUID | None = None
    reserved_usd: UsdOut | None = None
    input_data: JsonObjectOut | None = None
    output_data: JsonObjectOut | None = None
    output_hash: str | None = None
    reasoning: str | None = None
    missing_info: JsonObjectOut | None = None


class ExecutionPage(PageInfo):
    items: list[ExecutionRow]


class StateOut(Out):
    process_id: str
    state: StateName
    version: int
    current_execution_id: uuid.UUID | None
    invalidated_by_process_id: str | None = Field(description="Root cause.")
    invalidation_reason: str | None


class InvalidatedOut(BaseModel):
    process_id: str
    previous_state: StateName
    version: int = Field(description="The stale state's new version.")


CAN_RUN = "Claimable now: dependencies completed; itself not completed, held, backing off or given up."


class HandedInputs(BaseModel):
    inputs: dict[str, JsonObjectOut] | None = Field(None, description="Each dependency's current output, by id.")
    inputs_omitted: dict[str, uuid.UUID] | None = Field(None, description="Over 64 KB in all: get_execution these.")


class ReusableOut(BaseModel):
    execution_id: uuid.UUID
    cost_usd: UsdOut | None = None
    completed_at: datetime | None = None
    project_id: uuid.UUID | None = None


class StartReply(HandedInputs):
    execution: ExecutionRef
    state: StateOut
    reusable: ReusableOut | None = Field(None, description="A completed run with the same input_key (get_execution).")
    output_schema: dict[str, Any] | None = None  # a claim's step: what record_execution's output_data must match
    took_over: uuid.UUID | None = None  # the execution whose lease had passed: now expired, its late finish refused
    reused_from: uuid.UUID | None = Field(None, description="Completed from this run's output at no cost: done.")
    saved_usd: UsdOut | None = None
    invalidated_count: int | None = None
    unblocked: list[str] | None = None
    project_completed: bool | None = None
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    attempt: int | None = None
    budget: BudgetStatus | None = Field(None, description="With reserve_usd: the budget after it.")
    replayed: bool = False


# Replies about many steps stay under 100 KB (docs/design.md, "MCP surface"): lists give a count and the first ones.
MAX_LISTED = 100
MAX_BLOCKERS = 10
DEFAULT_STATUS_PAGE = 20  # step rows: an agent reads counts, ready steps and the plan first
MAX_STATUS_PAGE = 200


class ReplacedOut(BaseModel):
    execution_id: uuid.UUID
    completed_at: datetime | None = None
    by: str | None = None  # its agent, when the step was completed (a replacement, not a redo): now superseded


class RecordReply(BaseModel):
    execution: ExecutionRef
    state: StateOut
    output_changed: bool = Field(description="False: same output as before, nothing invalidated.")
    invalidated: list[InvalidatedOut] = Field(description="Steps made stale (first 100).")
    invalidated_count: int = 0
    late_finish: bool = Field(False, description="Went stale while running: stays stale.")
    superseded_by: uuid.UUID | None = Field(None, description="The winner: this one is superseded.")
    replaced: ReplacedOut | None = None  # the execution whose output this one replaced as current
    unblocked: list[str] | None = Field(None, description="Steps now runnable.")
    project_completed: bool | None = None
    note: str | None = None
    cost: LoggedCost | None = Field(None, description="The cost logged from `usage`.")
    budget: BudgetStatus | None = Field(None, description="The project's budget after it.")
    replayed: bool = False


class FailReply(BaseModel):
    execution: ExecutionRef
    state: StateOut


class InvalidateReply(BaseModel):
    state: StateOut
    invalidated: list[InvalidatedOut] = Field(description="Steps made stale (first 100).")
    invalidated_count: int = 0


class DependencyState(BaseModel):
    process_id: str
    state: StateName
    version: int


class ProcessStateDetail(HandedInputs, StateOut):
    invalidated_at: datetime | None
    last_updated_at: datetime | None
    name: str
    can_run: bool = Field(description=CAN_RUN)
    blocked_by: list[str] = Field(description="Dependencies not completed; unpassed checks.")
    dependencies: list[DependencyState]
    current_output: JsonObjectOut | None = Field(None, description="output_data of the current execution.")
    running_execution_id: uuid.UUID | None = None
    lease_expires_at: datetime | None = None  # the running execution's lease: past it, claimable again
    lease_expired: bool | None = None  # true: that lease has passed (by the server's clock); a claim takes it over
    input_schema: dict[str, Any] | None = None  # the definition's, so a resuming agent needs no other call
    output_schema: dict[str, Any] | None = None
    checks: list[CheckOut] | None = None  # of the current execution
    checks_missing: list[str] | None = None  # required, not recorded yet


class ProcessStatus(BaseModel):
    process_id: str
    name: str
    state: StateName
    version: int
    can_run: bool = Field(description=CAN_RUN)
    blocked_by: list[str] | None = Field(None, description="Unfinished dependencies; unpassed checks (up to 10).")
    blocked_count: int | None = None
    invalidated_by_process_id: str | None = Field(None, description="Root cause of stale.")
    invalidation_reason: str | None = None
    last_updated_at: datetime | None = None
    execution_id: uuid.UUID | None = None  # running: its holder, and the lease (past: claimable again)
    started_by: str | None = None  # its agent
    lease_expires_at: datetime | None = None
    lease_expired: bool | None = None  # true: past it by the server's clock (a claim takes the step over)
    attempt: int | None = None
    retry_at: datetime | None = None
    gave_up: bool | None = None
    checks_failed: list[str] | None = None  # required checks of its current execution: they hold dependants
    checks_missing: list[str] | None = None


class LeaseReply(BaseModel):
    execution_id: uuid.UUID
    lease_expires_at: datetime
    capped_by_timeout: bool = False


class PipelineStatus(PageInfo):
    project_id: uuid.UUID
    project_name: str
    pipeline_id: str
    processes: list[ProcessStatus] = Field(description="This page, in topological order.")
    ready_processes: list[str] = Field(description="Ids that can run next (first 100).")
    ready_count: int
    plan: list[str] = Field(description="Steps not completed or failing a check, in run order (first 100).")
    plan_count: int
    counts: dict[str, int] = Field(description="Steps in each state.")
    complete: bool
    cost: BudgetStatus = Field(description="LLM cost so far and budget.")
