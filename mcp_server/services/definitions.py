"""Process definitions: define (create or replace), list in topological order, delete."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.errors import Conflict, InvalidArgument, NotFound
from mcp_server.repositories import ProcessDefinitionRepository
from mcp_server.schemas.pipeline import DefineProcessReply, DeletedProcess, ProcessDefinitionOut, ProcessList
from mcp_server.services import dag
from mcp_server.services.validation import check_schema


class _Ordered(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def order_index(self) -> int: ...
    @property
    def depends_on(self) -> list[str]: ...


T = TypeVar("T", bound=_Ordered)


def ordered(definitions: list[T]) -> list[T]:
    """Definitions (or nodes) in topological order, ties by order_index then id."""
    by_id = {d.id: d for d in definitions}
    graph = {d.id: list(d.depends_on) for d in definitions}
    order = dag.topological_order(graph, {d.id: d.order_index for d in definitions})
    return [by_id[pid] for pid in order]


async def define(
    session: AsyncSession,
    *,
    process_id: str,
    name: str,
    depends_on: list[str],
    order_index: int,
    description: str | None,
    input_schema: dict[str, Any] | None,
    output_schema: dict[str, Any] | None,
    actor: str | None,
) -> DefineProcessReply:
    for field, schema in (("input_schema", input_schema), ("output_schema", output_schema)):
        if schema is not None:
            check_schema(schema, field=field)
    deps = list(dict.fromkeys(depends_on))
    if process_id in deps:
        raise InvalidArgument(f"process {process_id!r} cannot depend on itself: {process_id} -> {process_id}")
    repo = ProcessDefinitionRepository(session)
    await repo.lock_catalogue()
    existing = {node.id: node for node in await repo.list_nodes()}  # the DAG only: no schemas decoded
    unknown = [dep for dep in deps if dep not in existing]
    if unknown:
        raise InvalidArgument(
            f"unknown dependencies {unknown}",
            hint="Define those processes first (or fix the ids); list_processes shows the catalogue",
        )
    graph = {pid: list(d.depends_on) for pid, d in existing.items()}
    graph[process_id] = deps
    cycle = dag.find_cycle(graph)
    if cycle is not None:
        raise InvalidArgument(f"depends_on would create a cycle: {' -> '.join(cycle)}", hint="A pipeline must be a DAG")
    fields = {
        "name": name,
        "depends_on": deps,
        "order_index": order_index,
        "description": description,
        "input_schema": input_schema,
        "output_schema": output_schema,
        "updated_by": actor,
    }
    current = await repo.get(process_id) if process_id in existing else None
    if current is None:
        row = await repo.create(id=process_id, created_by=actor, **fields)
        return DefineProcessReply(process=ProcessDefinitionOut.model_validate(row), created=True)
    await repo.update(current, **fields)
    return DefineProcessReply(process=ProcessDefinitionOut.model_validate(current), created=False)


async def list_all(
    session: AsyncSession, *, include_schemas: bool = True, page: int = 1, page_size: int | None = None
) -> ProcessList:
    """The catalogue in topological order: one page of it, or all of it when ``page_size`` is None."""
    rows = ordered(await ProcessDefinitionRepository(session).list_all())
    first = (page - 1) * page_size if page_size else 0
    chosen = rows[first : first + page_size] if page_size else rows
    items = [ProcessDefinitionOut.model_validate(d) for d in chosen]
    if not include_schemas:
        items = [item.model_copy(update={"input_schema": None, "output_schema": None}) for item in items]
    return ProcessList(
        items=items,
        schemas_included=include_schemas,
        total=len(rows),
        page=page,
        has_more=bool(page_size) and first + len(chosen) < len(rows),
    )


async def delete(session: AsyncSession, process_id: str) -> DeletedProcess:
    repo = ProcessDefinitionRepository(session)
    await repo.lock_catalogue()
    definitions = await repo.list_nodes()
    if not any(d.id == process_id for d in definitions):
        raise NotFound(f"process {process_id!r} is not defined", hint="list_processes shows the catalogue")
    dependents = sorted(d.id for d in definitions if process_id in d.depends_on)
    if dependents:
        raise Conflict(
            f"process {process_id!r} has dependents {dependents}",
            hint="Delete or redefine the dependents without it first",
        )
    if await repo.has_executions(process_id):
        raise Conflict(
            f"process {process_id!r} has executions; its history cannot be deleted",
            hint="Keep it, or redefine it (define_process replaces name, schemas and dependencies)",
        )
    await repo.delete_states(process_id)
    await repo.delete(process_id)
    return DeletedProcess(process_id=process_id, deleted=True)
