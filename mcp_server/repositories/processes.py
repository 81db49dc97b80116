"""Process definitions: the pipeline catalogue."""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import delete, exists, select

from mcp_server.models import ProcessDefinition, ProcessExecution, ProcessState
from mcp_server.repositories.base import Repository


class Node(NamedTuple):
    """A process as the DAG rules need it: no schemas to decode."""

    id: str
    name: str
    order_index: int
    depends_on: list[str]


class ProcessDefinitionRepository(Repository):
    async def list_nodes(self) -> list[Node]:
        """Every process's id, name, order and dependencies (the schemas stay in the database)."""
        query = select(
            ProcessDefinition.id, ProcessDefinition.name, ProcessDefinition.order_index, ProcessDefinition.depends_on
        )
        return [Node(*row) for row in await self.session.execute(query)]

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
