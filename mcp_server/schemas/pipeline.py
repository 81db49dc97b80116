"""Pipeline inputs and outputs: definitions, executions, states, status."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from mcp_server.schemas.common import Out, PageInfo


class ProcessDefinitionOut(Out):
    id: str
    name: str
    description: str | None
    order_index: int
    depends_on: list[str]
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime | None


class DefineProcessReply(BaseModel):
    process: ProcessDefinitionOut
    created: bool = Field(description="True for a new process, false when an existing one was replaced.")


class ProcessList(BaseModel):
    items: list[ProcessDefinitionOut] = Field(description="In topological order; ties by order_index.")


class DeletedProcess(BaseModel):
    process_id: str
    deleted: bool


class ExecutionOut(Out):
    id: uuid.UUID
    project_id: uuid.UUID
    process_id: str
    status: str = Field(description="running, completed, failed, or stale (finished after the process went stale).")
    input_data: Any
    output_data: Any | None
    output_hash: str | None
    reasoning: str | None
    missing_info: Any | None
    error_message: str | None
    prompt_version_id: uuid.UUID | None
    idempotency_key: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    created_by: str | None


class ExecutionPage(PageInfo):
    items: list[ExecutionOut]


class StateOut(Out):
    process_id: str
    state: str = Field(description="empty, running, completed, failed or stale.")
    version: int = Field(description="Rises by one at every state change; pass as expected_version.")
    current_execution_id: uuid.UUID | None
    invalidated_at: datetime | None
    invalidated_by_process_id: str | None = Field(description="The root cause of the invalidation.")
    invalidation_reason: str | None
    last_updated_at: datetime | None


class InvalidatedOut(BaseModel):
    process_id: str
    previous_state: str
    version: int = Field(description="The stale state's new version.")


class Blocker(BaseModel):
    process_id: str
    state: str


class StartReply(BaseModel):
    execution: ExecutionOut
    state: StateOut
    replayed: bool = Field(False, description="True when this repeats an earlier call with the same idempotency_key.")


class RecordReply(BaseModel):
    execution: ExecutionOut
    state: StateOut
    output_changed: bool = Field(description="False when the output equals the current one: nothing was invalidated.")
    invalidated: list[InvalidatedOut] = Field(description="Downstream processes this made stale.")
    late_finish: bool = Field(
        False, description="True when the process went stale while this ran: stored, but the state stays stale."
    )
    note: str | None = None
    cost: dict[str, Any] | None = Field(None, description="The usage logged with it (when `usage` was given).")
    budget: dict[str, Any] | None = Field(None, description="The project's budget status after logging the usage.")
    replayed: bool = False


class FailReply(BaseModel):
    execution: ExecutionOut
    state: StateOut


class InvalidateReply(BaseModel):
    state: StateOut
    invalidated: list[InvalidatedOut] = Field(description="Downstream processes that went stale with it.")


class DependencyState(BaseModel):
    process_id: str
    state: str
    version: int


class ProcessStateDetail(StateOut):
    name: str
    ready: bool = Field(description="Every dependency is completed.")
    blocked_by: list[Blocker]
    dependencies: list[DependencyState]
    current_output: Any | None = Field(None, description="output_data of the current execution.")
    running_execution_id: uuid.UUID | None = None


class ProcessStatus(BaseModel):
    process_id: str
    name: str
    state: str
    version: int
    ready: bool
    can_run: bool = Field(description="Ready and not completed or running: it can run next.")
    blocked_by: list[Blocker]
    invalidated_by_process_id: str | None
    invalidation_reason: str | None
    invalidated_at: datetime | None
    current_execution_id: uuid.UUID | None
    last_updated_at: datetime | None


class PipelineStatus(BaseModel):
    project_id: uuid.UUID
    project_name: str
    processes: list[ProcessStatus] = Field(description="In topological order.")
    ready_processes: list[str] = Field(description="Ids that can run next.")
    counts: dict[str, int] = Field(description="Number of processes in each state.")
    complete: bool = Field(description="Every process is completed.")
    cost: dict[str, Any] | None = Field(None, description="The project's LLM cost so far and its budget status.")
