"""What live state needs from the database: ids that start with what a person typed (completions), and a
change token per watched project, pipeline and execution (resource updates)."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import case, func, literal, or_, select, union

from mcp_server.enums import ExecutionStatus
from mcp_server.models import ExecutionCheck, ProcessDefinition, ProcessExecution, ProcessState, Project, Revision
from mcp_server.repositories.base import Repository
from mcp_server.repositories.revisions import CATALOGUE_PREFIX

UuidRange = tuple[uuid.UUID, uuid.UUID]


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class LiveRepository(Repository):
    async def project_ids(self, ids: UuidRange | None, name: str | None, limit: int) -> list[uuid.UUID]:
        """Live projects whose id lies in ``ids`` or whose name starts with ``name`` (any case), newest first."""
        matches = []
        if ids is not None:
            matches.append(Project.id.between(*ids))
        if name:
            matches.append(func.lower(Project.name).like(_like_prefix(name.lower()), escape="\\"))
        query = select(Project.id).where(Project.is_deleted.is_(False))
        if matches:
            query = query.where(or_(*matches))
        query = query.order_by(Project.created_at.desc(), Project.id).limit(limit)
        return list(await self.session.scalars(query))

    async def execution_ids(self, ids: UuidRange | None, project_id: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
        """Executions whose id lies in ``ids`` (of one project, if given), newest first."""
        query = select(ProcessExecution.id)
        if ids is not None:
            query = query.where(ProcessExecution.id.between(*ids))
        if project_id is not None:
            query = query.where(ProcessExecution.project_id == project_id)
        query = query.order_by(ProcessExecution.created_at.desc(), ProcessExecution.id).limit(limit)
        return list(await self.session.scalars(query))

    async def pipeline_ids(self, prefix: str, limit: int) -> list[str]:
        """Pipelines (with a definition or a project) whose id starts with ``prefix``, in id order."""
        pattern = _like_prefix(prefix)
        defined = select(ProcessDefinition.pipeline_id.label("pipeline_id")).where(
            ProcessDefinition.pipeline_id.like(pattern, escape="\\")
        )
        used = select(Project.pipeline_id.label("pipeline_id")).where(Project.pipeline_id.like(pattern, escape="\\"))
        both = union(defined, used).subquery()
        return list(await self.session.scalars(select(both.c.pipeline_id).order_by(both.c.pipeline_id).limit(limit)))

    async def catalogued_pipelines(self, limit: int) -> list[str]:
        """Pipelines with at least one process definition, in id order."""
        query = select(ProcessDefinition.pipeline_id).distinct().order_by(ProcessDefinition.pipeline_id).limit(limit)
        return list(await self.session.scalars(query))

    async def project_tokens(self, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Per project, a token that changes whenever what its status resource shows changes: its row,
        its states (a step's every change raises its version), its running executions' leases, its checks
        (docs/design.md, "Checks") and its pipeline's catalogue token. A deleted project's token is its
        deleted row's."""
        if not ids:
            return {}
        states = (
            select(
                ProcessState.project_id,
                func.count().label("n"),
                func.sum(ProcessState.version).label("versions"),
                func.max(ProcessState.last_updated_at).label("last"),
            )
            .where(ProcessState.project_id.in_(ids))
            .group_by(ProcessState.project_id)
            .subquery()
        )
        leases = (
            select(
                ProcessExecution.project_id,
                func.count().label("running"),
                func.max(ProcessExecution.lease_expires_at).label("lease"),
            )
            .where(ProcessExecution.project_id.in_(ids), ProcessExecution.status == ExecutionStatus.RUNNING.value)
            .group_by(ProcessExecution.project_id)
            .subquery()
        )
        checks = (
            select(
                ExecutionCheck.project_id,
                func.count().label("checks"),
                func.sum(case((ExecutionCheck.passed, 1), else_=0)).label("passed"),
                func.max(func.coalesce(ExecutionCheck.updated_at, ExecutionCheck.created_at)).label("checked"),
            )
            .where(ExecutionCheck.project_id.in_(ids))
            .group_by(ExecutionCheck.project_id)
            .subquery()
        )
        catalogue = select(Revision.token).where(Revision.name == literal(CATALOGUE_PREFIX) + Project.pipeline_id)
        query = (
            select(
                Project.id,
                *(Project.updated_at, Project.is_deleted, Project.status, Project.pipeline_id, Project.budget_usd),
                *(Project.budget_policy, Project.spent_usd, Project.reserved_usd, Project.unpriced_calls),
                *(states.c.n, states.c.versions, states.c.last, leases.c.running, leases.c.lease),
                *(checks.c.checks, checks.c.passed, checks.c.checked),
                catalogue.scalar_subquery(),
            )
            .outerjoin(states, states.c.project_id == Project.id)
            .outerjoin(leases, leases.c.project_id == Project.id)
            .outerjoin(checks, checks.c.project_id == Project.id)
            .where(Project.id.in_(ids))
        )
        return {row[0]: repr(tuple(row[1:])) for row in await self.session.execute(query)}

    async def pipeline_tokens(self, ids: Collection[str]) -> dict[str, str]:
        """Per pipeline, its catalogue's change token (new at every change of its definitions) and size."""
        if not ids:
            return {}
        query = (
            select(ProcessDefinition.pipeline_id, func.count(), func.max(ProcessDefinition.updated_at))
            .where(ProcessDefinition.pipeline_id.in_(ids))
            .group_by(ProcessDefinition.pipeline_id)
        )
        found = {row[0]: repr(tuple(row[1:])) for row in await self.session.execute(query)}
        names = {CATALOGUE_PREFIX + pipeline_id: pipeline_id for pipeline_id in ids}
        tokens = select(Revision.name, Revision.token).where(Revision.name.in_(names))
        for name, token in await self.session.execute(tokens):
            found[names[name]] = found.get(names[name], "") + token
        return found

    async def execution_tokens(self, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Per execution, a token of its status, lease and last change."""
        if not ids:
            return {}
        query = select(
            ProcessExecution.id,
            ProcessExecution.status,
            ProcessExecution.updated_at,
            ProcessExecution.lease_expires_at,
            ProcessExecution.completed_at,
        ).where(ProcessExecution.id.in_(ids))
        return {row[0]: repr(tuple(row[1:])) for row in await self.session.execute(query)}
