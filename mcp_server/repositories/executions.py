"""Process executions."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypedDict, Unpack

from sqlalchemy import BigInteger, Select, Text, cast, func, select, text, type_coerce, update

from mcp_server.db.types import units_to_money
from mcp_server.models import ExecutionStatus, ProcessExecution, ProcessState, Project
from mcp_server.repositories.base import Page, Repository, raced


class ExecutionChange(TypedDict, total=False):
    """What finishing or failing an execution sets."""

    status: str
    prompt_version_id: uuid.UUID | None
    output_data: Any
    output_hash: str | None
    reasoning: str | None
    missing_info: Any
    error_message: str | None
    completed_at: datetime
    idempotency_key: str | None
    request_hash: str | None
    updated_by: str | None
    updated_at: datetime
    reserved_usd: Decimal | None
    lease_expires_at: datetime | None
    superseded_by: uuid.UUID | None


class NewExecution(ExecutionChange, total=False):
    """An execution as start_execution or a one-call record_execution writes it."""

    project_id: uuid.UUID
    process_id: str
    input_data: Any
    inputs_from: dict[str, str] | None
    reserved_usd: Decimal | None
    started_at: datetime
    created_by: str | None
    agent: str | None
    model: str | None
    input_key: str | None
    reused_from: uuid.UUID | None
    saved_usd: Decimal | None
    lease_token: str | None
    attempt: int | None


class ExecutionRepository(Repository):
    async def current_among(self, executions: Iterable[ProcessExecution]) -> set[uuid.UUID]:
        """Those of the executions whose output is their step's current one (a state row points at them);
        read through the states' (project, process) index, so only these projects' states are looked at."""
        wanted = list(executions)
        if not wanted:
            return set()
        query = select(ProcessState.current_execution_id).where(
            ProcessState.project_id.in_({e.project_id for e in wanted}),
            ProcessState.current_execution_id.in_([e.id for e in wanted]),
        )
        return {found for found in await self.session.scalars(query) if found is not None}

    async def get(self, execution_id: uuid.UUID, *, for_update: bool = False) -> ProcessExecution | None:
        query = select(ProcessExecution).where(ProcessExecution.id == execution_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.scalars(query)).first()

    async def outputs(self, execution_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Any]:
        """The output_data of these executions, by id."""
        ids = list(execution_ids)
        if not ids:
            return {}
        query = select(ProcessExecution.id, ProcessExecution.output_data).where(ProcessExecution.id.in_(ids))
        return {row[0]: row[1] for row in await self.session.execute(query)}

    async def output_heads(self, execution_ids: Iterable[uuid.UUID], chars: int) -> dict[uuid.UUID, str | None]:
        """The first ``chars`` characters of each execution's output as JSON text, cut in the database (a
        large output is never read whole), by id; None for no output. PostgreSQL writes JSONB with a space
        after ',' and ':'."""
        ids = list(execution_ids)
        if not ids:
            return {}
        head = func.substr(cast(ProcessExecution.output_data, Text), 1, chars)
        query = select(ProcessExecution.id, head).where(ProcessExecution.id.in_(ids))
        return {
            execution_id: None if found is None or found == "null" else found
            for execution_id, found in await self.session.execute(query)
        }

    async def by_idempotency_key(self, key: str) -> ProcessExecution | None:
        query = select(ProcessExecution).where(ProcessExecution.idempotency_key == key)
        return (await self.session.scalars(query)).first()

    async def latest_running(self, project_id: uuid.UUID, process_id: str) -> ProcessExecution | None:
        query = (
            select(ProcessExecution)
            .where(
                ProcessExecution.project_id == project_id,
                ProcessExecution.process_id == process_id,
                ProcessExecution.status == "running",
            )
            .order_by(ProcessExecution.created_at.desc())
            .limit(1)
        )
        return (await self.session.scalars(query)).first()

    async def running(self, project_id: uuid.UUID, process_ids: Iterable[str]) -> list[ProcessExecution]:
        """The running executions of these steps of a project, oldest first."""
        ids = list(process_ids)
        if not ids:
            return []
        query = (
            select(ProcessExecution)
            .where(
                ProcessExecution.project_id == project_id,
                ProcessExecution.process_id.in_(ids),
                ProcessExecution.status == "running",
            )
            .order_by(ProcessExecution.created_at)
        )
        return list(await self.session.scalars(query))

    async def newer_attempt(self, execution: ProcessExecution) -> ProcessExecution | None:
        """The latest execution of the same step started after this one (a claim that took the step over)."""
        query = (
            select(ProcessExecution)
            .where(
                ProcessExecution.project_id == execution.project_id,
                ProcessExecution.process_id == execution.process_id,
                ProcessExecution.id != execution.id,
                ProcessExecution.created_at >= execution.created_at,
            )
            .order_by(ProcessExecution.created_at.desc())
            .limit(1)
        )
        return (await self.session.scalars(query)).first()

    async def list(
        self,
        *,
        project_id: uuid.UUID | None = None,
        process_id: str | None = None,
        status: str | None = None,
        page: int = 1,
        page_size: int = 20,
    ) -> Page[ProcessExecution]:
        query = select(ProcessExecution)
        if project_id is not None:
            query = query.where(ProcessExecution.project_id == project_id)
        if process_id is not None:
            query = query.where(ProcessExecution.process_id == process_id)
        if status is not None:
            query = query.where(ProcessExecution.status == status)
        query = query.order_by(ProcessExecution.created_at.desc(), ProcessExecution.id.desc())
        return await self._page(query, page=page, page_size=page_size)

    async def create(self, **fields: Unpack[NewExecution]) -> ProcessExecution:
        async with raced(
            f"an execution of step {fields.get('process_id')!r}",
            hint="Re-read the step with get_process_state and retry; a retry with the same idempotency_key "
            "returns the first call's reply",
        ):
            return await self._insert(ProcessExecution, dict(fields))

    async def reusable(
        self,
        process_id: str,
        input_key: str,
        *,
        project_id: uuid.UUID,
        pipeline_id: str | None = None,
        since: datetime | None = None,
    ) -> ProcessExecution | None:
        """The newest completed execution of the step with this input key, completed at or after ``since``:
        in the project (ix_executions_input_key) or, with ``pipeline_id``, in any live project of that
        pipeline (ix_executions_key)."""
        query = self._same_key(process_id, input_key, project_id, pipeline_id).where(
            ProcessExecution.status == ExecutionStatus.COMPLETED.value
        )
        if since is not None:
            query = query.where(ProcessExecution.completed_at >= since)
        query = query.order_by(ProcessExecution.completed_at.desc()).limit(1)
        found: ProcessExecution | None = (await self.session.execute(query)).scalars().first()
        return found

    async def computing(
        self, process_id: str, input_key: str, *, project_id: uuid.UUID, pipeline_id: str, now: datetime
    ) -> ProcessExecution | None:
        """A running execution of the step with this input key in another project of the pipeline whose lease
        still holds (a dead holder's, not yet expired by a call on its project, blocks nobody)."""
        query = self._same_key(process_id, input_key, project_id, pipeline_id).where(
            ProcessExecution.status == ExecutionStatus.RUNNING.value,
            ProcessExecution.project_id != project_id,
            ProcessExecution.lease_expires_at > now,
        )
        found: ProcessExecution | None = (
            (await self.session.execute(query.order_by(ProcessExecution.started_at).limit(1))).scalars().first()
        )
        return found

    @staticmethod
    def _same_key(process_id: str, input_key: str, project_id: uuid.UUID, pipeline_id: str | None) -> Select[Any]:
        query = select(ProcessExecution).where(
            ProcessExecution.process_id == process_id, ProcessExecution.input_key == input_key
        )
        if pipeline_id is None:
            return query.where(ProcessExecution.project_id == project_id)
        return query.join(Project, Project.id == ProcessExecution.project_id).where(
            Project.pipeline_id == pipeline_id, Project.is_deleted.is_(False)
        )

    async def lock_key(self, pipeline_id: str, process_id: str, input_key: str) -> None:
        """Serialise the starts of one input key across the projects of a pipeline until the transaction
        ends, so two of them never run the same work at once (PostgreSQL: a transaction-scoped advisory
        lock, taken after the project's; SQLite: writers already hold the database's write lock)."""
        if self.session.get_bind().dialect.name == "postgresql":
            key = {"key": f"input-key:{pipeline_id}:{process_id}:{input_key}"}
            await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), key)

    async def held(self, project_id: uuid.UUID, *, agent: str | None = None, model: str | None = None) -> Decimal:
        """What the project's running executions of ``agent`` (or naming ``model``) hold, exactly."""
        units = func.sum(type_coerce(ProcessExecution.reserved_usd, BigInteger()))
        query = select(units).where(
            ProcessExecution.project_id == project_id,
            ProcessExecution.status == ExecutionStatus.RUNNING.value,
            ProcessExecution.reserved_usd.is_not(None),
        )
        if agent is not None:
            query = query.where(ProcessExecution.agent == agent)
        if model is not None:
            query = query.where(ProcessExecution.model == model)
        return units_to_money(int(await self.session.scalar(query) or 0))

    async def saved(
        self,
        *,
        project_id: uuid.UUID | None = None,
        process_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Decimal:
        """Exact sum of what reuses saved (each reuse's saved_usd), by the project, step and completion time."""
        units = func.sum(type_coerce(ProcessExecution.saved_usd, BigInteger()))
        query = select(units).where(ProcessExecution.reused_from.is_not(None))
        if project_id is not None:
            query = query.where(ProcessExecution.project_id == project_id)
        if process_id is not None:
            query = query.where(ProcessExecution.process_id == process_id)
        if since is not None:
            query = query.where(ProcessExecution.completed_at >= since)
        if until is not None:
            query = query.where(ProcessExecution.completed_at < until)
        return units_to_money(int(await self.session.scalar(query) or 0))

    async def supersede(self, execution_id: uuid.UUID, by: uuid.UUID) -> tuple[str | None, datetime | None] | None:
        """Mark a completed execution `superseded` by another, in one statement; its agent (or creator) and
        completion time, or None when it is gone (pruned)."""
        e = ProcessExecution
        query = (
            update(e)
            .where(e.id == execution_id)
            .values(status=ExecutionStatus.SUPERSEDED.value, superseded_by=by)
            .returning(func.coalesce(e.agent, e.created_by), e.completed_at)
            .execution_options(synchronize_session=False)
        )
        row = (await self.session.execute(query)).first()
        return None if row is None else (row[0], row[1])

    async def update(self, execution: ProcessExecution, **fields: Unpack[ExecutionChange]) -> ProcessExecution:
        for key, value in fields.items():
            setattr(execution, key, value)
        await self.session.flush()
        return execution
