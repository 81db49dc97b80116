"""The ``pipeline`` toolset: definitions, executions, state and status."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated

from mcp.server.mcpserver import Context
from pydantic import Field

from mcp_server.app import App
from mcp_server.enums import ExecutionStatus
from mcp_server.lazy import lazy_module
from mcp_server.schemas.common import JsonObject, JsonValue, Name, Page, PageSize, ShortText, Slug, Text
from mcp_server.schemas.cost import UsageIn
from mcp_server.schemas.pipeline import (
    DefineProcessReply,
    DeletedProcess,
    ExecutionOut,
    ExecutionPage,
    FailReply,
    InvalidateReply,
    PipelineStatus,
    ProcessList,
    ProcessStateDetail,
    RecordReply,
    StartReply,
)
from mcp_server.tools.base import Registrar, actor_of, app_of

if TYPE_CHECKING:
    from mcp_server.services import definitions, executions, status
else:  # loaded on the first call: start-up does not import the database layer
    definitions = lazy_module("mcp_server.services.definitions")
    executions = lazy_module("mcp_server.services.executions")
    status = lazy_module("mcp_server.services.status")

ProjectId = Annotated[uuid.UUID, Field(description="The project's id (from create_project).")]
ProcessId = Annotated[Slug, Field(description="The process's slug id, e.g. `requirements`.")]
ExecutionId = Annotated[uuid.UUID, Field(description="An execution id (from start_execution or record_execution).")]
ExpectedVersion = Annotated[
    int | None,
    Field(ge=0, description="Fail with `conflict` unless the process state is at this version (optimistic lock)."),
]
IdempotencyKey = Annotated[
    ShortText | None,
    Field(min_length=1, description="Repeat-safe key: a retry with the same key returns the first result."),
]
Force = Annotated[bool, Field(description="Run even though some dependencies are not completed.")]


def register(registrar: Registrar) -> None:  # noqa: C901 - one nested function per tool
    tool = registrar.tool

    @tool(title="Define process", read_only=False, destructive=True, idempotent=True)
    async def define_process(
        process_id: ProcessId,
        name: Annotated[Name, Field(description="Human-readable name.")],
        ctx: Context[App],
        depends_on: Annotated[
            list[Slug], Field(max_length=100, description="Ids of the processes whose output this one needs.")
        ] = [],  # noqa: B006 - pydantic copies defaults
        order_index: Annotated[int, Field(ge=-1_000_000, le=1_000_000, description="Tie-break in listings.")] = 0,
        description: Annotated[Text | None, Field(description="What this step does.")] = None,
        input_schema: Annotated[JsonObject | None, Field(description="JSON Schema 2020-12 for input_data.")] = None,
        output_schema: Annotated[JsonObject | None, Field(description="JSON Schema 2020-12 for output_data.")] = None,
    ) -> DefineProcessReply:
        """Create or replace a pipeline step (the catalogue is shared by all projects).

        Dependencies must already exist; self-dependencies and cycles are refused with the cycle named.
        Schemas, when given, must be valid JSON Schema 2020-12; inputs and outputs are then validated."""
        async with app_of(ctx).db.unit_of_work() as session:
            return await definitions.define(
                session,
                process_id=process_id,
                name=name,
                depends_on=depends_on,
                order_index=order_index,
                description=description,
                input_schema=input_schema,
                output_schema=output_schema,
                actor=actor_of(ctx),
            )

    @tool(title="List processes", read_only=True)
    async def list_processes(ctx: Context[App]) -> ProcessList:
        """List the pipeline's processes in topological order (dependencies first; ties by order_index)."""
        async with app_of(ctx).db.unit_of_work(write=False) as session:
            return await definitions.list_all(session)

    @tool(title="Delete process", read_only=False, destructive=True)
    async def delete_process(process_id: ProcessId, ctx: Context[App]) -> DeletedProcess:
        """Delete a process definition. Refused (`conflict`) while it has executions or dependents."""
        async with app_of(ctx).db.unit_of_work() as session:
            return await definitions.delete(session, process_id)

    @tool(title="Start execution", read_only=False)
    async def start_execution(
        project_id: ProjectId,
        process_id: ProcessId,
        ctx: Context[App],
        input_data: Annotated[JsonValue, Field(description="The step's input (checked against input_schema).")] = {},  # noqa: B006
        prompt_version_id: Annotated[uuid.UUID | None, Field(description="The prompt version used.")] = None,
        expected_version: ExpectedVersion = None,
        idempotency_key: IdempotencyKey = None,
        force: Force = False,
    ) -> StartReply:
        """Mark a step as running and open an execution; finish it with record_execution(execution_id=…)
        or fail_execution. Refused with `not_ready` (naming the blockers) unless every dependency is
        completed, or `force` is true; `invalid_transition` if the step is already running."""
        async with app_of(ctx).db.unit_of_work() as session:
            return await executions.start(
                session,
                project_id=project_id,
                process_id=process_id,
                input_data=input_data,
                prompt_version_id=prompt_version_id,
                expected_version=expected_version,
                idempotency_key=idempotency_key,
                force=force,
                actor=actor_of(ctx),
            )

    @tool(title="Record execution", read_only=False)
    async def record_execution(
        project_id: ProjectId,
        process_id: ProcessId,
        output_data: Annotated[JsonValue, Field(description="The step's output (checked against output_schema).")],
        ctx: Context[App],
        input_data: Annotated[JsonValue | None, Field(description="The input (new executions only).")] = None,
        execution_id: Annotated[
            uuid.UUID | None, Field(description="Finish this started execution; omit to record a new one in one call.")
        ] = None,
        reasoning: Annotated[Text | None, Field(description="Why the output is what it is.")] = None,
        missing_info: Annotated[JsonValue | None, Field(description="What was missing or assumed.")] = None,
        prompt_version_id: Annotated[uuid.UUID | None, Field(description="The prompt version used.")] = None,
        usage: Annotated[UsageIn | None, Field(description="LLM usage of this step, logged as by report_cost.")] = None,
        expected_version: ExpectedVersion = None,
        idempotency_key: IdempotencyKey = None,
        force: Force = False,
    ) -> RecordReply:
        """Record a step's completed output: the step becomes `completed` (version + 1) and every completed,
        failed or running step downstream becomes `stale` (listed in `invalidated`) unless the output equals
        the current one. Returns the execution, the new state, the invalidated steps and the logged cost.
        If the step went stale while a started execution ran, the output is stored but the state stays stale."""
        async with app_of(ctx).db.unit_of_work() as session:
            return await executions.record(
                session,
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
            )

    @tool(title="Fail execution", read_only=False)
    async def fail_execution(
        execution_id: ExecutionId,
        error_message: Annotated[Text, Field(min_length=1, description="What went wrong.")],
        ctx: Context[App],
    ) -> FailReply:
        """Mark a running execution as failed; its step becomes `failed` (if it was still running)."""
        async with app_of(ctx).db.unit_of_work() as session:
            return await executions.fail(
                session, execution_id=execution_id, error_message=error_message, actor=actor_of(ctx)
            )

    @tool(title="Get execution", read_only=True)
    async def get_execution(execution_id: ExecutionId, ctx: Context[App]) -> ExecutionOut:
        """Get one execution with its input, output, reasoning and status."""
        async with app_of(ctx).db.unit_of_work(write=False) as session:
            return await executions.get(session, execution_id)

    @tool(title="List executions", read_only=True)
    async def list_executions(
        ctx: Context[App],
        project_id: Annotated[uuid.UUID | None, Field(description="Only this project's executions.")] = None,
        process_id: Annotated[Slug | None, Field(description="Only this process's executions.")] = None,
        status: Annotated[ExecutionStatus | None, Field(description="Only executions in this status.")] = None,
        page: Page = 1,
        page_size: PageSize = 20,
    ) -> ExecutionPage:
        """List executions, newest first, one page at a time."""
        async with app_of(ctx).db.unit_of_work(write=False) as session:
            return await executions.list_page(
                session,
                project_id=project_id,
                process_id=process_id,
                status=status.value if status else None,
                page=page,
                page_size=page_size,
            )

    @tool(title="Get process state", read_only=True)
    async def get_process_state(project_id: ProjectId, process_id: ProcessId, ctx: Context[App]) -> ProcessStateDetail:
        """One step's state in a project: state, version, readiness, dependency states, the current
        output and, when stale, the root cause of the invalidation."""
        async with app_of(ctx).db.unit_of_work(write=False) as session:
            return await status.process_state(session, project_id, process_id)

    @tool(title="Get pipeline status", read_only=True)
    async def get_pipeline_status(project_id: ProjectId, ctx: Context[App]) -> PipelineStatus:
        """The whole pipeline of a project: every step's state, version, readiness or blockers and
        invalidation cause, `ready_processes` (what can run next) and the project's cost so far."""
        async with app_of(ctx).db.unit_of_work(write=False) as session:
            return await status.pipeline_status(session, project_id)

    @tool(title="Invalidate process", read_only=False, destructive=True, idempotent=True)
    async def invalidate_process(
        project_id: ProjectId,
        process_id: ProcessId,
        ctx: Context[App],
        reason: Annotated[Text | None, Field(description="Why it must be redone.")] = None,
        expected_version: ExpectedVersion = None,
    ) -> InvalidateReply:
        """Mark a step stale by hand; every completed, failed or running step downstream goes stale too,
        with this step recorded as the cause. Returns the state and the steps it invalidated."""
        async with app_of(ctx).db.unit_of_work() as session:
            return await executions.invalidate(
                session,
                project_id=project_id,
                process_id=process_id,
                reason=reason,
                expected_version=expected_version,
            )
