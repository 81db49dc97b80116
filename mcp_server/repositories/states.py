"""Process states: one row per (project, process), updated with a version check."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm.attributes import set_committed_value

from mcp_server.models import ProcessState
from mcp_server.repositories.base import Repository


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

    async def create(self, **fields: Any) -> ProcessState:
        state = ProcessState(**fields)
        self.session.add(state)
        await self.session.flush()
        return state

    async def compare_and_set(self, row: ProcessState, /, *, expected_version: int, **fields: Any) -> bool:
        """``UPDATE … WHERE version = :expected``; False when another writer got there first."""
        result = await self.session.execute(
            update(ProcessState)
            .where(ProcessState.id == row.id, ProcessState.version == expected_version)
            .values(**fields)
            .execution_options(synchronize_session=False)
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

    async def lock_project(self, project_id: uuid.UUID, *, pipeline_id: str | None = None) -> None:
        """Serialise the pipeline writers of one project until the transaction ends; with ``pipeline_id``,
        also hold that pipeline's catalogue in shared mode, so that no definition of it changes or goes
        away under an execution being written (no foreign key can say so: a process id is unique only
        within its pipeline).

        PostgreSQL: transaction-scoped advisory locks (they also cover state rows not created yet), the
        catalogue's first (the OFFSET 0 subquery runs before the outer lock), in one round trip. The
        catalogue's writers take it exclusively, then project locks: one order, no deadlock.
        SQLite: writers already hold the database's write lock from BEGIN IMMEDIATE.
        """
        if self.session.get_bind().dialect.name != "postgresql":
            return
        key = {"key": f"project:{project_id}"}
        if pipeline_id is None:
            await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), key)
            return
        both = text(
            "SELECT pg_advisory_xact_lock(hashtext(:key)) FROM "
            "(SELECT pg_advisory_xact_lock_shared(hashtext(:catalogue)) OFFSET 0) AS catalogue"
        )
        await self.session.execute(both, {**key, "catalogue": catalogue_lock_key(pipeline_id)})


def catalogue_lock_key(pipeline_id: str) -> str:
    return f"catalogue:{pipeline_id}"
