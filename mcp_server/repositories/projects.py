"""Projects: get, list, create, update, soft delete and restore."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import BigInteger, select, type_coerce, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from mcp_server.db.types import units_to_money, utcnow
from mcp_server.models import Project, ProjectStatus
from mcp_server.repositories.base import Page, Repository


class ProjectRepository(Repository):
    async def get(self, project_id: uuid.UUID, *, include_deleted: bool = False) -> Project | None:
        project = await self.session.get(Project, project_id)
        if project is None or (project.is_deleted and not include_deleted):
            return None
        return project

    async def list(
        self,
        *,
        status: ProjectStatus | None = None,
        include_deleted: bool = False,
        page: int = 1,
        page_size: int = 20,
    ) -> Page[Project]:
        query = select(Project)
        if not include_deleted:
            query = query.where(Project.is_deleted.is_(False))
        if status is not None:
            query = query.where(Project.status == status)
        query = query.order_by(Project.created_at.desc(), Project.id)
        return await self._page(query, page=page, page_size=page_size)

    async def create(self, **fields: Any) -> Project:
        project = Project(**fields)
        self.session.add(project)
        await self.session.flush()
        return project

    async def update(self, project: Project, **fields: Any) -> Project:
        for key, value in fields.items():
            setattr(project, key, value)
        project.updated_at = utcnow()
        await self.session.flush()
        return project

    async def soft_delete(self, project: Project, *, by: str | None = None) -> Project:
        project.soft_delete()
        return await self.update(project, updated_by=by)

    async def restore(self, project: Project, *, by: str | None = None) -> Project:
        project.restore()
        return await self.update(project, updated_by=by)

    async def add_spend(self, project_id: uuid.UUID, *, units: int, unpriced_calls: int) -> None:
        """Add to the running cost totals in SQL (exact integer units), and to a loaded row."""
        raw = type_coerce(Project.spent_usd, BigInteger())  # add integer units, not Decimal USD
        result = await self.session.execute(
            update(Project)
            .where(Project.id == project_id)
            .values(spent_usd=raw + units, unpriced_calls=Project.unpriced_calls + unpriced_calls)
            .returning(type_coerce(Project.spent_usd, BigInteger()), Project.unpriced_calls)
            .execution_options(synchronize_session=False)
        )
        row = result.first()
        loaded = self.session.identity_map.get(identity_key(Project, project_id))
        if row is not None and isinstance(loaded, Project):
            set_committed_value(loaded, "spent_usd", units_to_money(row[0]))
            set_committed_value(loaded, "unpriced_calls", int(row[1]))
