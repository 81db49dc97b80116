"""Process states: one row per (project, process), updated with a version check."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, Update, bindparam, func, insert, select, text, update

from mcp_server.db.types import GUID
from mcp_server.enums import StateName
from mcp_server.models import ProcessExecution, ProcessState
from mcp_server.repositories.base import Repository, raced


@dataclass(slots=True)
class StateRow:
    """One process_states row as the pipeline rules read and change it (plain data: no ORM bookkeeping),
    with its current execution's output hash and completion time (the no-op and superseded checks)."""

    id: uuid.UUID
    project_id: uuid.UUID
    process_id: str
    state: str
    version: int
    current_execution_id: uuid.UUID | None
    invalidated_at: datetime | None
    invalidated_by_process_id: str | None
    invalidation_reason: str | None
    last_updated_at: datetime
    attempts: int = 0
    retry_at: datetime | None = None
    current_hash: str | None = None
    current_completed_at: datetime | None = None


# The columns of a StateRow that are the table's, in its order.
ROW_COLUMNS = (
    "id",
    "project_id",
    "process_id",
    "state",
    "version",
    "current_execution_id",
    "invalidated_at",
    "invalidated_by_process_id",
    "invalidation_reason",
    "last_updated_at",
    "attempts",
    "retry_at",
)


@dataclass(frozen=True, slots=True)
class StateChange:
    """What one write sets on state rows; each row's version rises by one with it. An invalidation names
    its root cause (``invalidated_by``) and reason; any other change clears them. With ``sets_current``,
    ``current`` becomes the row's current execution (its output hash ``current_hash``)."""

    state: StateName
    at: datetime
    invalidated_by: str | None = None
    reason: str | None = None
    sets_current: bool = False
    current: uuid.UUID | None = None
    current_hash: str | None = None
    # Failed or expired attempts in a row after this change, and the backoff's end (a failure sets them;
    # a completion or a new input, stale, starts the count again; a start keeps them).
    attempts: int | None = None
    retry_at: datetime | None = None

    def values(self) -> dict[str, Any]:
        """The columns written (the version apart)."""
        invalidated = self.invalidated_by is not None
        values: dict[str, Any] = {
            "state": self.state.value,
            "last_updated_at": self.at,
            "invalidated_at": self.at if invalidated else None,
            "invalidated_by_process_id": self.invalidated_by,
            "invalidation_reason": self.reason if invalidated else None,
        }
        if self.attempts is not None:
            values["attempts"], values["retry_at"] = self.attempts, self.retry_at
        elif self.state in (StateName.COMPLETED, StateName.STALE):
            values["attempts"], values["retry_at"] = 0, None
        if self.sets_current:
            values["current_execution_id"] = self.current
        return values

    def apply_to(self, row: StateRow) -> None:
        """The row as the database holds it after this change."""
        for name, value in self.values().items():
            setattr(row, name, value)
        row.version += 1
        if self.sets_current:
            row.current_hash, row.current_completed_at = self.current_hash, self.at


_STATES = cast(Table, ProcessState.__table__)
_EXECUTIONS = cast(Table, ProcessExecution.__table__)
# Built once (see repositories.base._insert_into). A project's state rows with their current execution's
# output hash and completion time:
# (project_id is the caller's: not read back)
_READ = [name for name in ROW_COLUMNS if name != "project_id"]
_WITH_CURRENT = (
    select(*(_STATES.c[name] for name in _READ), _EXECUTIONS.c.output_hash, _EXECUTIONS.c.completed_at)
    .select_from(_STATES.outerjoin(_EXECUTIONS, _EXECUTIONS.c.id == _STATES.c.current_execution_id))
    .where(_STATES.c.project_id == bindparam("project_id"))
)
_WITH_CURRENT_OF = _WITH_CURRENT.where(_STATES.c.process_id.in_(bindparam("process_ids", expanding=True)))
_CREATE = insert(_STATES)
_BUMPED = (
    "state",
    "last_updated_at",
    "invalidated_at",
    "invalidated_by_process_id",
    "invalidation_reason",
    "attempts",
    "retry_at",
)
_BUMP = (
    update(_STATES)
    .where(_STATES.c.id.in_(bindparam("row_ids", expanding=True)))
    .values(version=_STATES.c.version + 1, **{name: bindparam(f"new_{name}") for name in _BUMPED})
)


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

    async def rows(self, project_id: uuid.UUID, process_ids: Collection[str] | None = None) -> list[StateRow]:
        """The project's state rows (those of ``process_ids`` when given), with their current executions'
        output hashes and completion times, in one query."""
        parameters: dict[str, Any] = {"project_id": project_id}
        query = _WITH_CURRENT
        if process_ids is not None:
            query, parameters = _WITH_CURRENT_OF, {**parameters, "process_ids": list(process_ids)}
        return [StateRow(row[0], project_id, *row[1:]) for row in await self.session.execute(query, parameters)]

    async def create(self, project_id: uuid.UUID, process_id: str, change: StateChange) -> StateRow:
        """The first row of a step in a project (version 1)."""
        row = StateRow(uuid.uuid4(), project_id, process_id, change.state.value, 0, None, None, None, None, change.at)
        change.apply_to(row)
        async with raced(f"the state of step {process_id!r}", hint="Re-read it with get_process_state and retry"):
            await self.session.execute(_CREATE, {name: getattr(row, name) for name in ROW_COLUMNS})
        return row

    async def compare_and_set(
        self, row: StateRow | ProcessState, change: StateChange, *, expected_version: int | None = None
    ) -> bool:
        """``UPDATE … SET version = version + 1, … WHERE version = :expected`` (by default the version the row
        was read at); False when another writer got there first. A StateRow is brought up to date."""
        expected = row.version if expected_version is None else expected_version
        values = change.values()
        parameters = {f"new_{name}": value for name, value in values.items()}
        result = await self.session.execute(
            _compare_and_set(frozenset(values)), {"row_id": row.id, "expected": expected, **parameters}
        )
        if getattr(result, "rowcount", 0) != 1:
            return False
        if isinstance(row, StateRow):
            change.apply_to(row)
        return True

    async def bump_all(self, rows: list[StateRow], change: StateChange) -> None:
        """The same change (a state and an invalidation) on several rows, each version raised by one, in one
        UPDATE. Only for callers that hold the project lock (the rows cannot have changed since read)."""
        if not rows:
            return
        if change.sets_current or change.state != StateName.STALE:
            raise ValueError("bump_all only makes rows stale")
        parameters = {f"new_{name}": value for name, value in change.values().items()}
        await self.session.execute(_BUMP, {"row_ids": [row.id for row in rows], **parameters})
        for row in rows:
            change.apply_to(row)

    async def counts(self, project_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        """Per project: its state rows counted by state, and when the last one changed (the dashboard's list)."""
        ids = list(project_ids)
        if not ids:
            return {}
        query = (
            select(_STATES.c.project_id, _STATES.c.state, func.count(), func.max(_STATES.c.last_updated_at))
            .where(_STATES.c.project_id.in_(ids))
            .group_by(_STATES.c.project_id, _STATES.c.state)
        )
        found: dict[uuid.UUID, dict[str, Any]] = {}
        for project_id, state, count, last in await self.session.execute(query):
            entry = found.setdefault(project_id, {"counts": {}, "last": None})
            entry["counts"][state] = int(count)
            if last is not None and (entry["last"] is None or last > entry["last"]):
                entry["last"] = last
        return found

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
            "(SELECT pipeline_id, pg_advisory_xact_lock_shared(hashtext(:catalogue || pipeline_id)) "
            "FROM projects WHERE id = :id OFFSET 0) AS catalogue"
        ).bindparams(bindparam("id", type_=GUID()))
        # The lock key of the pipeline the project runs through, built in SQL as catalogue_lock_key builds it.
        parameters = {**_project_key(project_id), "id": project_id, "catalogue": catalogue_lock_key("")}
        row = (await self.session.execute(both, parameters)).first()
        return None if row is None else str(row[0])


@cache
def _compare_and_set(names: frozenset[str]) -> Update:
    """The UPDATE of these columns and the version, built once per set of columns (see
    repositories.base._insert_into)."""
    return (
        update(_STATES)
        .where(_STATES.c.id == bindparam("row_id"), _STATES.c.version == bindparam("expected"))
        .values(version=_STATES.c.version + 1, **{name: bindparam(f"new_{name}") for name in sorted(names)})
    )


def _project_key(project_id: uuid.UUID) -> dict[str, str]:
    return {"key": f"project:{project_id}"}


def catalogue_lock_key(pipeline_id: str) -> str:
    return f"catalogue:{pipeline_id}"
