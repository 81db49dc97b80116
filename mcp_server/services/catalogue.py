"""A pipeline's catalogue as the rules need it, kept in memory between calls and checked by its token.

Reading the whole catalogue on every write made a call's cost follow the pipeline's size (50-80 ms at
2,000 steps). A ``Catalogue`` is read once per change: each server keeps the last ones it read, keyed by
database and pipeline, with the token (``revisions``) that was current; a call reads the token along
with its project and uses the copy when they match. The graph, the reverse edges, the order to run the
steps and each step's JSON schemas (read when first needed) are computed once per change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.engine import database_key
from mcp_server.repositories import ProcessDefinitionRepository
from mcp_server.repositories.processes import Node
from mcp_server.services import dag
from mcp_server.services.kept import Kept

# Pipelines kept per server process; a pipeline read again after eviction costs one catalogue read.
KEPT = 32
# Past this many steps around a process, its project's state rows are read whole (one plain query).
SCOPE_LIMIT = 500

Schemas = tuple[dict[str, Any] | None, dict[str, Any] | None]


@dataclass
class Catalogue:
    pipeline_id: str
    token: str | None
    nodes: dict[str, Node]
    graph: dict[str, list[str]]
    dependents: dict[str, list[str]]
    order: list[str]
    position: dict[str, int]
    schemas: dict[str, Schemas] = field(default_factory=dict)

    @classmethod
    def of(cls, pipeline_id: str, token: str | None, nodes: list[Node]) -> Catalogue:
        by_id = {node.id: node for node in nodes}
        graph = {pid: list(node.depends_on) for pid, node in by_id.items()}
        order = dag.topological_order(graph, {pid: node.order_index for pid, node in by_id.items()})
        return cls(
            pipeline_id=pipeline_id,
            token=token,
            nodes=by_id,
            graph=graph,
            dependents=dag.dependents_of(graph),
            order=order,
            position={pid: index for index, pid in enumerate(order)},
        )

    @property
    def checked(self) -> bool:
        """Some step requires checks (docs/design.md, "Checks"): only then are check results read."""
        return any(node.required_checks for node in self.nodes.values())

    def descendants(self, process_id: str) -> list[str]:
        return dag.descendants(self.graph, [process_id], reverse=self.dependents)

    def around(self, process_id: str) -> set[str] | None:
        """The steps a write to ``process_id`` reads: itself, its dependencies and its transitive dependents
        (None: too many to name, read every row)."""
        scope = {process_id, *self.graph.get(process_id, ()), *self.descendants(process_id)}
        return scope if len(scope) <= SCOPE_LIMIT else None

    async def schemas_of(self, session: AsyncSession, process_id: str) -> Schemas:
        """The process's input and output schemas, read on first use (the caller checked the token in this
        transaction, so what is read belongs to this copy)."""
        found = self.schemas.get(process_id)
        if found is None:
            found = await ProcessDefinitionRepository(session).schemas(self.pipeline_id, process_id)
            self.schemas[process_id] = found
        return found


_kept: Kept[tuple[str, str], Catalogue] = Kept(KEPT)


async def load(session: AsyncSession, pipeline_id: str, token: str | None) -> Catalogue:
    """The pipeline's catalogue at ``token`` (read in this transaction): the kept copy when its token is
    the same, otherwise read now and kept. A pipeline without a token (never defined since the token
    was introduced) is read every time."""
    key = (database_key(session), pipeline_id)
    if (kept := _kept.get(key, token)) is not None:
        return kept[0]
    catalogue = Catalogue.of(pipeline_id, token, await ProcessDefinitionRepository(session).list_nodes(pipeline_id))
    _kept.put(key, token, catalogue)
    return catalogue
