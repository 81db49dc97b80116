"""Process definitions: the pipeline catalogue."""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import case, delete, exists, select, text

from mcp_server.models import ProcessDefinition, ProcessExecution, ProcessState
from mcp_server.repositories.base import Repository


class Node(NamedTuple):
    """A process as the DAG rules need it; its schemas only when asked for (they can be large)."""

    id: str
    name: str
    order_index: int
    depends_on: list[str]
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None


class ProcessDefinitionRepository(Repository):
    async def lock_catalogue(self) -> None:
        """Serialise the writers of the catalogue (define, delete) until the transaction ends, so that
        its invariants (a DAG, no dependency on a missing process) hold under concurrency.

        PostgreSQL: a transaction-scoped advisory lock; two definitions read the catalogue one after
        the other, never both before either writes. SQLite: BEGIN IMMEDIATE already serialises writers.
        """
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext('catalogue'))"))

    async def list_nodes(self, *, schemas_of: str | None = None) -> list[Node]:
        """Every process's id, name, order and dependencies, in one query; the JSON schemas are read
        (and decoded) for the process ``schemas_of`` only."""
        definition = ProcessDefinition
        columns: list[Any] = [definition.id, definition.name, definition.order_index, definition.depends_on]
        if schemas_of is not None:
            target = definition.id == schemas_of
            columns += [case((target, definition.input_schema)), case((target, definition.output_schema))]
        return [Node(*row) for row in await self.session.execute(select(*columns))]

    async def get(self, process_id: str) -> ProcessDefinition | None:
        return await self.session.get(ProcessDefinition, process_id)

    async def list_all(self) -> list[ProcessDefinition]:
        rows = await self.session.scalars(
            select(ProcessDefinition).order_by(ProcessDefinition.order_index, ProcessDefinition.id)
        )
        return list(rows)

    async def create(self, **fields: Any) -> ProcessDefinition:
        definition = ProcessDefinition(**fields)
        self.session.add(definition)
        await self.session.flush()
        return definition

    async def update(self, definition: ProcessDefinition, **fields: Any) -> ProcessDefinition:
        for key, value in fields.items():
            setattr(definition, key, value)
        await self.session.flush()
        return definition

    async def has_executions(self, process_id: str) -> bool:
        found = await self.session.scalar(select(exists().where(ProcessExecution.process_id == process_id)))
        return bool(found)

    async def delete_states(self, process_id: str) -> None:
        """Drop the (never run) state rows that reference a process, so it can be deleted."""
        await self.session.execute(delete(ProcessState).where(ProcessState.process_id == process_id))

    async def delete(self, process_id: str) -> None:
        await self.session.execute(delete(ProcessDefinition).where(ProcessDefinition.id == process_id))
