"""Process states: one row per (project, process), updated with a version check."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, Update, bindparam, select, text, update
from sqlalchemy.orm.attributes import set_committed_value

from mcp_server.db.types import GUID
from mcp_server.models import ProcessExecution, ProcessState
from mcp_server.repositories.base import Repository

# A project's state rows with their current execution's output hash and completion time (built once).
_WITH_CURRENT = (
    select(ProcessState, ProcessExecution.output_hash, ProcessExecution.completed_at)
    .outerjoin(ProcessExecution, ProcessExecution.id == ProcessState.current_execution_id)
    .where(ProcessState.project_id == bindparam("project_id"))
)
_WITH_CURRENT_OF = _WITH_CURRENT.where(ProcessState.process_id.in_(bindparam("process_ids", expanding=True)))


class StateRepository(Repository):
    async def get(self, project_id: uuid.UUID, process_id: str, *, for_update: bool = False) -> ProcessState | None:
        query = select(ProcessState).where(ProcessState.project_id == project_id, ProcessState.process_id == process_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.scalars(query)).first()

    async def list_for_project(self, project_id: uuid.UUID, *, for_update: bool = False) -> list[ProcessState]:
        query = select(ProcessState).where(ProcessState.project_id == project_id).order_by(ProcessState.process_id)
        if for_update:
            query = query.with_for_update()
        return list(await self.session.scalars(query))

    async def with_current(
        self, project_id: uuid.UUID, process_ids: Collection[str] | None = None
    ) -> list[tuple[ProcessState, str | None, datetime | None]]:
        """The project's state rows (those of ``process_ids`` when given), each with its current execution's
        output hash and completion time (the no-op and superseded checks), in one query."""
        parameters: dict[str, Any] = {"project_id": project_id}
        query = _WITH_CURRENT
        if process_ids is not None:
            query, parameters = _WITH_CURRENT_OF, {**parameters, "process_ids": list(process_ids)}
        return [(row[0], row[1], row[2]) for row in await self.session.execute(query, parameters)]

    async def create(self, **fields: Any) -> ProcessState:
        return await self._insert(ProcessState, fields)

    async def compare_and_set(self, row: ProcessState, /, *, expected_version: int, **fields: Any) -> bool:
        """``UPDATE … WHERE version = :expected``; False when another writer got there first."""
        parameters = {f"new_{name}": value for name, value in fields.items()}
        result = await self.session.execute(
            _compare_and_set(frozenset(fields)), {"row_id": row.id, "expected": expected_version, **parameters}
        )
        if getattr(result, "rowcount", 0) != 1:
            return False
        for key, value in fields.items():
            set_committed_value(row, key, value)  # already written: keep the row clean, no second UPDATE
        return True

    async def bump_all(self, rows: list[ProcessState], **fields: Any) -> None:
        """Set the same fields on several rows and raise each version by one, in one UPDATE.

        Only for callers that hold the project lock (the rows cannot have changed since they were read)."""
        if not rows:
            return
        await self.session.execute(
            update(ProcessState)
            .where(ProcessState.id.in_([row.id for row in rows]))
            .values(version=ProcessState.version + 1, **fields)
            .execution_options(synchronize_session=False)
        )
        for row in rows:
            set_committed_value(row, "version", row.version + 1)
            for key, value in fields.items():
                set_committed_value(row, key, value)

    async def lock_project(self, project_id: uuid.UUID) -> None:
        """Serialise the pipeline writers of one project until the transaction ends (PostgreSQL: a
        transaction-scoped advisory lock, which also covers state rows not created yet; SQLite: writers
        already hold the database's write lock from BEGIN IMMEDIATE)."""
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), _project_key(project_id))

    async def lock_project_and_catalogue(self, project_id: uuid.UUID) -> str | None:
        """``lock_project``, and the project's pipeline catalogue held in shared mode first, so that no
        definition of it changes or goes away under an execution being written (no foreign key can say
        so: a process id is unique only within its pipeline). Returns the pipeline locked (PostgreSQL;
        None on SQLite, or when there is no such project): the caller reads the project after this, and
        checks it still runs through that pipeline.

        PostgreSQL: both locks in one round trip, the catalogue's first (the OFFSET 0 subquery runs before
        the outer lock). The catalogue's writers take it exclusively, then project locks: one order, no
        deadlock. Taken before anything is read, so every read of the call sees what the locks protect.
        """
        if self.session.get_bind().dialect.name != "postgresql":
            return None
        both = text(
            "SELECT catalogue.pipeline_id, pg_advisory_xact_lock(hashtext(:key)) FROM "
            "(SELECT pipeline_id, pg_advisory_xact_lock_shared(hashtext('catalogue:' || pipeline_id)) "
            "FROM projects WHERE id = :id OFFSET 0) AS catalogue"
        ).bindparams(bindparam("id", type_=GUID()))
        row = (await self.session.execute(both, {**_project_key(project_id), "id": project_id})).first()
        return None if row is None else str(row[0])


@cache
def _compare_and_set(names: frozenset[str]) -> Update:
    """The UPDATE of these columns, built once per set of columns (see repositories.base._insert_into)."""
    table = cast(Table, ProcessState.__table__)
    return (
        update(table)
        .where(table.c.id == bindparam("row_id"), table.c.version == bindparam("expected"))
        .values({name: bindparam(f"new_{name}") for name in sorted(names)})
    )


def _project_key(project_id: uuid.UUID) -> dict[str, str]:
    return {"key": f"project:{project_id}"}


def catalogue_lock_key(pipeline_id: str) -> str:
    return f"catalogue:{pipeline_id}"
