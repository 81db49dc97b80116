"""The ``pipeline`` toolset: definitions, executions, state and status."""

from __future__ import annotations

import uuid
from functools import partial
from typing import TYPE_CHECKING, Annotated, Literal

from mcp.server.mcpserver import Context
from pydantic import Field, StringConstraints

from mcp_server.app import App
from mcp_server.enums import DEFAULT_PIPELINE as DEFAULT
from mcp_server.enums import ExecutionStatus, StateName
from mcp_server.lazy import lazy_module
from mcp_server.schemas.common import (
    Agent,
    JsonObject,
    Name,
    NoNul,
    Page,
    PageSize,
    ShortText,
    Slug,
    SlugRef,
    Text,
    Usd,
)
from mcp_server.schemas.cost import UsageIn
from mcp_server.schemas.pipeline import (
    DEFAULT_STATUS_PAGE,
    MAX_STATUS_PAGE,
    ApplyReply,
    CheckName,
    CheckReply,
    DefineProcessReply,
    DeletedProcess,
    ExecutionOut,
    ExecutionPage,
    FailReply,
    InvalidateReply,
    LeaseReply,
    MaxAttempts,
    PipelineBudgetIn,
    PipelineList,
    PipelineStatus,
    ProcessList,
    ProcessSpec,
    ProcessStateDetail,
    RecordReply,
    RequiredChecks,
    RetryBackoff,
    ReuseScope,
    ReuseTtl,
    StartReply,
    TimeoutSeconds,
)
from mcp_server.tools.base import ToolEntry, actor_of, app_of, tell_alerts

if TYPE_CHECKING:
    from mcp_server.services import checks, definitions, executions, leases, status
else:  # loaded on the first call: start-up does not import the database layer
    checks = lazy_module("mcp_server.services.checks")
    definitions = lazy_module("mcp_server.services.definitions")
    leases = lazy_module("mcp_server.services.leases")
    executions = lazy_module("mcp_server.services.executions")
    status = lazy_module("mcp_server.services.status")

MAX_APPLIED = 2_000  # steps in one apply_pipeline call
ProjectId = Annotated[uuid.UUID, Field(description="From create_project.")]
ProcessId = Annotated[SlugRef, Field(description="Step id, e.g. `design`.")]
ExecutionId = Annotated[uuid.UUID, Field(description="From start_execution or record_execution.")]
RunningId = Annotated[uuid.UUID, Field(description="From start_execution.")]  # a running execution
# `provider/model`, as a model cap names it (provider in lower case, as costs store it).
ModelRef = Annotated[str, StringConstraints(min_length=3, max_length=151), NoNul]  # checked by caps.model_ref
AgentArg = Annotated[Agent | None, Field(description="Sub-agent or role; default: client.")]
ExpectedVersion = Annotated[
    int | None,
    Field(ge=0, description="`conflict` unless the version is this."),
]
IdempotencyKey = Annotated[
    ShortText | None,
    Field(min_length=1, description="Retry-safe key (`replayed`)."),
]
PipelineId = Annotated[SlugRef, Field(description="Pipeline, default `default`.")]
Clearable = Literal[
    "depends_on",
    "description",
    "input_schema",
    "output_schema",
    "max_attempts",
    "retry_backoff_seconds",
    "timeout_seconds",
    "order_index",
    "reuse_ttl_seconds",
]
Force = Annotated[bool, Field(description="Skip the dependency check (record: also a running step).")]


async def define_process(
    process_id: Annotated[Slug, Field(description="Step id, e.g. `design`.")],
    ctx: Context[App],
    name: Annotated[Name | None, Field(description="Human-readable name (required for a new step).")] = None,
    depends_on: Annotated[
        list[SlugRef] | None, Field(max_length=100, description="Ids of the steps whose output this one needs.")
    ] = None,
    order_index: Annotated[int | None, Field(ge=-1_000_000, le=1_000_000, description="Tie-break in listings.")] = None,
    description: Annotated[Text | None, Field(description="What this step does.")] = None,
    input_schema: Annotated[JsonObject | None, Field(description="JSON Schema 2020-12 for input_data.")] = None,
    output_schema: Annotated[JsonObject | None, Field(description="JSON Schema 2020-12 for output_data.")] = None,
    pipeline_id: PipelineId = DEFAULT,
    max_attempts: MaxAttempts | None = None,
    retry_backoff_seconds: RetryBackoff | None = None,
    timeout_seconds: TimeoutSeconds | None = None,
    reuse: Annotated[
        ReuseScope | None, Field(description="Where a start finds a same-input run (default project).")
    ] = None,
    reuse_ttl_seconds: ReuseTtl | None = None,
    required_checks: RequiredChecks | None = None,
    clear: Annotated[list[Clearable] | None, Field(max_length=10, description="Fields to reset.")] = None,
) -> DefineProcessReply:
    """Create a step of a pipeline, or change the fields given (others keep their value; `clear` empties
    some). Changing depends_on or a schema makes the step `stale` wherever it ran, with the cascade
    (`stale_states`). Errors: `invalid_argument` for an unknown dependency, a cycle (named) or an
    invalid schema."""
    given = {
        "name": name,
        "depends_on": depends_on,
        "order_index": order_index,
        "description": description,
        "input_schema": input_schema,
        "output_schema": output_schema,
        "max_attempts": max_attempts,
        "retry_backoff_seconds": retry_backoff_seconds,
        "timeout_seconds": timeout_seconds,
        "reuse": reuse,
        "reuse_ttl_seconds": reuse_ttl_seconds,
        "required_checks": required_checks,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    return await app_of(ctx).db.run(
        lambda session: definitions.define(
            session,
            pipeline_id=pipeline_id,
            process_id=process_id,
            changes=changes,
            clear=list(clear or []),
            actor=actor_of(ctx),
        )
    )


async def list_processes(
    ctx: Context[App],
    pipeline_id: PipelineId = DEFAULT,
    include_schemas: Annotated[bool, Field(description="Also each step's input_schema and output_schema.")] = False,
    page: Page = 1,
    page_size: PageSize = 100,
) -> ProcessList:
    """A pipeline's steps in run order, one page at a time."""
    return await app_of(ctx).db.run(
        lambda session: definitions.list_all(
            session, pipeline_id, include_schemas=include_schemas, page=page, page_size=page_size
        ),
        write=False,
    )


async def list_pipelines(ctx: Context[App], page: Page = 1, page_size: PageSize = 20) -> PipelineList:
    """Every pipeline with its number of steps and projects, by id, one page at a time."""
    return await app_of(ctx).db.run(
        lambda session: definitions.pipelines(session, page=page, page_size=page_size), write=False
    )


async def apply_pipeline(
    processes: Annotated[
        list[ProcessSpec], Field(max_length=MAX_APPLIED, description="Every step, with define_process's fields.")
    ],
    ctx: Context[App],
    pipeline_id: PipelineId = DEFAULT,
    dry_run: Annotated[bool, Field(description="Only say what would change.")] = False,
    budget: Annotated[
        PipelineBudgetIn | None, Field(description="Shared by all its projects (budget_usd null removes it).")
    ] = None,
) -> ApplyReply:
    """Make a pipeline exactly these steps in one call: adds, replaces, and deletes the steps left out
    (`conflict` if they have executions). Returns the plan and how many states go stale."""
    # Not a unit on the connection's thread (Database.run): thousands of steps are checked in slices that
    # yield to the event loop, so other calls interleave; whole on a thread it would hold the interpreter
    # against every other call (docs/design.md, "SQLite").
    async with app_of(ctx).db.unit_of_work() as session:
        return await definitions.apply(
            session, pipeline_id=pipeline_id, specs=processes, dry_run=dry_run, actor=actor_of(ctx), budget=budget
        )


async def delete_process(process_id: ProcessId, ctx: Context[App], pipeline_id: PipelineId = DEFAULT) -> DeletedProcess:
    """Delete a step's definition. `conflict` while it has executions or dependents."""
    return await app_of(ctx).db.run(lambda session: definitions.delete(session, process_id, pipeline_id))


async def start_execution(
    project_id: ProjectId,
    ctx: Context[App],
    process_id: Annotated[SlugRef | None, Field(description="Omit to claim the next runnable step.")] = None,
    input_data: Annotated[JsonObject, Field(description="The step's input.")] = {},  # noqa: B006
    prompt_version_id: Annotated[uuid.UUID | None, Field(description="The prompt version used.")] = None,
    reserve_usd: Annotated[Usd | None, Field(description="Expected cost to hold.")] = None,
    lease_seconds: Annotated[int | None, Field(ge=1, le=86_400, description="Lease; default 900.")] = None,
    agent: AgentArg = None,
    model: Annotated[ModelRef | None, Field(description="provider/model, for model caps.")] = None,
    reuse: Annotated[bool | None, Field(description="true: take `reusable` free; false: run anyway.")] = None,
    expected_version: ExpectedVersion = None,
    idempotency_key: IdempotencyKey = None,
    force: Force = False,
) -> StartReply:
    """Start a step, or claim the next one nobody holds (concurrent claims differ). Returns
    the execution, `inputs` and a lease (renew_lease before lease_expires_at). Errors include
    `nothing_ready` (wait or stop) and `budget_exceeded`."""
    app = app_of(ctx)
    return await app.db.run(
        lambda session: executions.start(
            session,
            project_id=project_id,
            process_id=process_id,
            input_data=input_data,
            prompt_version_id=prompt_version_id,
            expected_version=expected_version,
            idempotency_key=idempotency_key,
            force=force,
            actor=actor_of(ctx),
            reserve_usd=reserve_usd,
            lease_seconds=lease_seconds or app.settings.lease_seconds,
            agent=agent,
            default_reserve=app.settings.default_reserve_usd,
            model=model,
            reuse=reuse,
        )
    )


async def renew_lease(
    execution_id: RunningId,
    lease_token: Annotated[ShortText, Field(description="From start_execution.")],
    ctx: Context[App],
    lease_seconds: Annotated[int | None, Field(ge=1, le=86_400, description="From now; default 900.")] = None,
) -> LeaseReply:
    """Extend a running execution's lease (heartbeat); `lease_expired` if too late."""
    app = app_of(ctx)
    return await app.db.run(
        lambda session: leases.renew(
            session,
            execution_id=execution_id,
            lease_token=lease_token,
            lease_seconds=lease_seconds or app.settings.lease_seconds,
        )
    )


async def record_execution(
    project_id: ProjectId,
    process_id: ProcessId,
    output_data: Annotated[
        JsonObject,
        Field(description="The step's result (an object)."),
    ],
    ctx: Context[App],
    input_data: Annotated[JsonObject | None, Field(description="The input (new executions only).")] = None,
    execution_id: Annotated[
        uuid.UUID | None, Field(description="Finish this started execution; omit to record in one call.")
    ] = None,
    reasoning: Annotated[Text | None, Field(description="Why this output.")] = None,
    missing_info: Annotated[JsonObject | None, Field(description="What was missing or assumed.")] = None,
    prompt_version_id: Annotated[uuid.UUID | None, Field(description="The prompt version used.")] = None,
    usage: Annotated[UsageIn | None, Field(description="LLM usage, as report_cost takes it.")] = None,
    agent: AgentArg = None,
    expected_version: ExpectedVersion = None,
    idempotency_key: IdempotencyKey = None,
    force: Force = False,
) -> RecordReply:
    """Record a step's output: it becomes `completed`, steps downstream `stale` unless the output is
    unchanged; a started execution overtaken meanwhile is `superseded`. `lease_expired`: reclaimed
    (output kept, not current)."""
    reply = await app_of(ctx).db.run(
        partial(
            executions.record,
            project_id=project_id,
            process_id=process_id,
            output_data=output_data,
            input_data=input_data,
            execution_id=execution_id,
            reasoning=reasoning,
            missing_info=missing_info,
            prompt_version_id=prompt_version_id,
            usage=usage,
            expected_version=expected_version,
            idempotency_key=idempotency_key,
            force=force,
            actor=actor_of(ctx),
            agent=agent,
        )
    )
    if not reply.replayed:
        await tell_alerts(ctx, reply.budget)  # after the commit: only what was kept is told
    return reply


async def fail_execution(
    execution_id: RunningId,
    error_message: Annotated[Text, Field(min_length=1, description="What went wrong.")],
    ctx: Context[App],
) -> FailReply:
    """Fail a running execution: its step becomes `failed` (claims retry up to max_attempts)."""
    return await app_of(ctx).db.run(
        lambda session: executions.fail(
            session, execution_id=execution_id, error_message=error_message, actor=actor_of(ctx)
        )
    )


async def get_execution(execution_id: ExecutionId, ctx: Context[App]) -> ExecutionOut:
    """One execution with its input, output, reasoning, status and checks."""
    return await app_of(ctx).db.run(lambda session: executions.get(session, execution_id), write=False)


async def list_executions(
    ctx: Context[App],
    project_id: Annotated[uuid.UUID | None, Field(description="Only this project's.")] = None,
    process_id: Annotated[SlugRef | None, Field(description="Only this step's.")] = None,
    status: Annotated[ExecutionStatus | None, Field(description="Only in this status.")] = None,
    include_data: Annotated[bool, Field(description="Also inputs, outputs and reasoning.")] = False,
    page: Page = 1,
    page_size: PageSize = 20,
) -> ExecutionPage:
    """Executions, newest first, one page at a time; get_execution gives one whole."""
    return await app_of(ctx).db.run(
        lambda session: executions.list_page(
            session,
            project_id=project_id,
            process_id=process_id,
            status=status.value if status else None,
            page=page,
            page_size=page_size,
            include_data=include_data,
        ),
        write=False,
    )


async def get_process_state(project_id: ProjectId, process_id: ProcessId, ctx: Context[App]) -> ProcessStateDetail:
    """One step: state, version, `can_run`, `blocked_by`, `inputs`, schemas, current output, stale
    cause."""
    return await app_of(ctx).db.run(lambda session: status.process_state(session, project_id, process_id), write=False)


async def get_pipeline_status(
    project_id: ProjectId,
    ctx: Context[App],
    state: Annotated[StateName | None, Field(description="Only rows of steps in this state.")] = None,
    page: Page = 1,
    page_size: Annotated[
        int, Field(ge=1, le=MAX_STATUS_PAGE, description="Step rows per page, default 20.")
    ] = DEFAULT_STATUS_PAGE,
) -> PipelineStatus:
    """A project's counts by state, `ready_processes` (runnable now), `plan` (the steps not completed, in
    the order to run them), cost so far, and a page of step rows."""
    return await app_of(ctx).db.run(
        lambda session: status.pipeline_status(
            session, project_id, state=state.value if state else None, page=page, page_size=page_size
        ),
        write=False,
    )


async def invalidate_process(
    project_id: ProjectId,
    process_id: ProcessId,
    ctx: Context[App],
    reason: Annotated[Text | None, Field(description="Why it must be redone.")] = None,
    expected_version: ExpectedVersion = None,
) -> InvalidateReply:
    """Mark a step `stale` by hand (to redo it); what ran downstream goes stale too. Returns the steps
    invalidated."""
    return await app_of(ctx).db.run(
        lambda session: executions.invalidate(
            session,
            project_id=project_id,
            process_id=process_id,
            reason=reason,
            expected_version=expected_version,
        )
    )


async def record_check(
    execution_id: ExecutionId,
    name: CheckName,
    passed: bool,
    ctx: Context[App],
    details: JsonObject | None = None,
    agent: AgentArg = None,
) -> CheckReply:
    """Record a named check of a finished execution (again: replaces it). A step's required_checks must
    pass on its current execution before dependants run."""
    return await app_of(ctx).db.run(
        lambda session: checks.record(
            session,
            execution_id=execution_id,
            name=name,
            passed=passed,
            details=details,
            agent=agent,
            actor=actor_of(ctx),
        )
    )


# The toolset, in the order tools/list publishes it.
TOOLS: tuple[ToolEntry, ...] = (
    ToolEntry(define_process, "Define process", read_only=False, destructive=True, idempotent=True),
    ToolEntry(list_processes, "List processes", read_only=True),
    ToolEntry(list_pipelines, "List pipelines", read_only=True),
    ToolEntry(apply_pipeline, "Apply pipeline", read_only=False, destructive=True, idempotent=True),
    ToolEntry(delete_process, "Delete process", read_only=False, destructive=True),
    ToolEntry(start_execution, "Start execution", read_only=False),
    ToolEntry(renew_lease, "Renew lease", read_only=False, idempotent=True),
    ToolEntry(record_execution, "Record execution", read_only=False),
    ToolEntry(fail_execution, "Fail execution", read_only=False),
    ToolEntry(get_execution, "Get execution", read_only=True),
    ToolEntry(list_executions, "List executions", read_only=True),
    ToolEntry(get_process_state, "Get process state", read_only=True),
    ToolEntry(get_pipeline_status, "Get pipeline status", read_only=True),
    ToolEntry(invalidate_process, "Invalidate process", read_only=False, destructive=True, idempotent=True),
    ToolEntry(record_check, "Record check", read_only=False, destructive=True, idempotent=True),
)
