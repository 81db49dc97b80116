"""Process definitions: the catalogue of each pipeline."""

from __future__ import annotations

from typing import Any, NamedTuple, TypedDict, Unpack

from sqlalchemy import delete, exists, func, select, text

from mcp_server.models import ProcessDefinition, ProcessExecution, ProcessState, Project
from mcp_server.repositories.base import Repository, raced
from mcp_server.repositories.states import catalogue_lock_key


class Node(NamedTuple):
    """A process as the DAG rules need it; its schemas only when asked for (they can be large)."""

    id: str
    name: str
    order_index: int
    depends_on: list[str]
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    max_attempts: int = 3
    retry_backoff_seconds: int = 0
    timeout_seconds: int | None = None
    reuse: str = "project"
    reuse_ttl_seconds: int | None = None
    required_checks: list[str] | None = None


class DefinitionChange(TypedDict, total=False):
    """What redefining a process sets: every field of its definition."""

    name: str
    depends_on: list[str]
    order_index: int
    description: str | None
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    max_attempts: int
    retry_backoff_seconds: int
    timeout_seconds: int | None
    reuse: str
    reuse_ttl_seconds: int | None
    required_checks: list[str] | None


class ProcessDefinitionRepository(Repository):
    async def lock_catalogue(self, pipeline_id: str) -> None:
        """Serialise the writers of a pipeline's catalogue (define, apply, delete) until the transaction
        ends, so that its invariants (a DAG, no dependency on a missing process, no execution of a
        deleted one) hold under concurrency.

        PostgreSQL: a transaction-scoped advisory lock, exclusive here and shared for the writers of
        executions (StateRepository.lock_project). SQLite: BEGIN IMMEDIATE already serialises writers.
        """
        if self.session.get_bind().dialect.name == "postgresql":
            lock = text("SELECT pg_advisory_xact_lock(hashtext(:key))")
            await self.session.execute(lock, {"key": catalogue_lock_key(pipeline_id)})

    async def list_nodes(self, pipeline_id: str) -> list[Node]:
        """Every process of the pipeline: id, name, order, dependencies and retry policy (not the schemas),
        in one query."""
        d = ProcessDefinition
        query = select(
            d.id,
            d.name,
            d.order_index,
            d.depends_on,
            d.max_attempts,
            d.retry_backoff_seconds,
            d.timeout_seconds,
            d.reuse,
            d.reuse_ttl_seconds,
            d.required_checks,
        ).where(d.pipeline_id == pipeline_id)
        return [
            Node(
                *row[:4],
                max_attempts=row[4],
                retry_backoff_seconds=row[5],
                timeout_seconds=row[6],
                reuse=row[7],
                reuse_ttl_seconds=row[8],
                required_checks=row[9] or None,
            )
            for row in await self.session.execute(query)
        ]

    async def schemas(self, pipeline_id: str, process_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """One process's input and output schemas (both None when it is not defined)."""
        query = select(ProcessDefinition.input_schema, ProcessDefinition.output_schema).where(
            ProcessDefinition.pipeline_id == pipeline_id, ProcessDefinition.id == process_id
        )
        row = (await self.session.execute(query)).first()
        return (None, None) if row is None else (row[0], row[1])

    async def get(self, pipeline_id: str, process_id: str) -> ProcessDefinition | None:
        return await self.session.get(ProcessDefinition, (pipeline_id, process_id))

    async def defined(self, process_id: str, pipeline_id: str | None) -> bool:
        """Whether the process is defined in the pipeline (in any pipeline, for None)."""
        query = exists().where(ProcessDefinition.id == process_id)
        if pipeline_id is not None:
            query = query.where(ProcessDefinition.pipeline_id == pipeline_id)
        return bool(await self.session.scalar(select(query)))

    async def list_all(self, pipeline_id: str) -> list[ProcessDefinition]:
        rows = await self.session.scalars(
            select(ProcessDefinition)
            .where(ProcessDefinition.pipeline_id == pipeline_id)
            .order_by(ProcessDefinition.order_index, ProcessDefinition.id)
        )
        return list(rows)

    async def pipelines(self) -> dict[str, tuple[int, int]]:
        """Every pipeline that has processes or (not deleted) projects: (process count, project count)."""
        processes = select(ProcessDefinition.pipeline_id, func.count()).group_by(ProcessDefinition.pipeline_id)
        projects = (
            select(Project.pipeline_id, func.count()).where(Project.is_deleted.is_(False)).group_by(Project.pipeline_id)
        )
        counts: dict[str, tuple[int, int]] = {}
        for pipeline_id, count in await self.session.execute(processes):
            counts[pipeline_id] = (int(count), 0)
        for pipeline_id, count in await self.session.execute(projects):
            counts[pipeline_id] = (counts.get(pipeline_id, (0, 0))[0], int(count))
        return counts

    async def exists(self, pipeline_id: str) -> bool:
        """A pipeline exists once it has a process or a project (``default`` always does)."""
        query = select(
            exists().where(ProcessDefinition.pipeline_id == pipeline_id)
            | exists().where(Project.pipeline_id == pipeline_id)
        )
        return bool(await self.session.scalar(query))

    async def create(self, **fields: Any) -> ProcessDefinition:
        definition = ProcessDefinition(**fields)
        async with raced(
            f"process {definition.id!r} of pipeline {definition.pipeline_id!r}",
            hint="Re-read the pipeline with list_processes and retry",
        ):
            self.session.add(definition)
            await self.session.flush()
        return definition

    async def update(
        self, definition: ProcessDefinition, *, updated_by: str | None, **fields: Unpack[DefinitionChange]
    ) -> ProcessDefinition:
        for key, value in fields.items():
            setattr(definition, key, value)
        definition.updated_by = updated_by
        await self.session.flush()
        return definition

    def _in_pipeline(self, pipeline_id: str) -> Any:
        return select(Project.id).where(Project.pipeline_id == pipeline_id)

    async def with_executions(self, pipeline_id: str, process_ids: list[str]) -> list[str]:
        """Those of the processes that have executions in the pipeline's projects."""
        if not process_ids:
            return []
        query = (
            select(ProcessExecution.process_id)
            .where(
                ProcessExecution.process_id.in_(process_ids),
                ProcessExecution.project_id.in_(self._in_pipeline(pipeline_id)),
            )
            .distinct()
        )
        return sorted(await self.session.scalars(query))

    async def projects_with_states(self, pipeline_id: str, process_ids: list[str], states: list[str]) -> list[Any]:
        """Ids of the pipeline's projects where one of the processes is in one of the states, in id order."""
        query = (
            select(ProcessState.project_id)
            .where(
                ProcessState.process_id.in_(process_ids),
                ProcessState.state.in_(states),
                ProcessState.project_id.in_(self._in_pipeline(pipeline_id)),
            )
            .distinct()
        )
        return sorted(await self.session.scalars(query))

    async def delete(self, pipeline_id: str, process_ids: list[str]) -> None:
        """Delete the definitions and the (never run) state rows that name them in the pipeline's projects."""
        await self.session.execute(
            delete(ProcessState).where(
                ProcessState.process_id.in_(process_ids), ProcessState.project_id.in_(self._in_pipeline(pipeline_id))
            )
        )
        await self.session.execute(
            delete(ProcessDefinition).where(
                ProcessDefinition.pipeline_id == pipeline_id, ProcessDefinition.id.in_(process_ids)
            )
        )
