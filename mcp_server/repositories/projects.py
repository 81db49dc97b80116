"""Projects: get, list, create, update, soft delete and restore."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, NamedTuple, TypedDict, Unpack, cast

from sqlalchemy import BigInteger, Table, bindparam, case, exists, func, literal, or_, select, type_coerce, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from mcp_server.db.types import units_to_money, utcnow
from mcp_server.enums import StateName
from mcp_server.errors import InvalidArgument
from mcp_server.models import (
    ExecutionCheck,
    PipelineBudget,
    ProcessExecution,
    ProcessState,
    Project,
    ProjectStatus,
    Revision,
)
from mcp_server.repositories.base import Page, Repository
from mcp_server.repositories.revisions import CATALOGUE_PREFIX, PRICES, token_of

# The most a project's running total holds: 900 million USD in 1e-10 units, inside a signed 64-bit integer.
MAX_SPENT_UNITS = 9 * 10**18


_PROJECTS = cast(Table, Project.__table__)
_SPENT_UNITS = type_coerce(_PROJECTS.c.spent_usd, BigInteger())  # integer units, not Decimal USD
# Built once (see repositories.base._insert_into): the running totals move on every logged cost.
_ADD_SPEND = (
    update(_PROJECTS)
    .where(_PROJECTS.c.id == bindparam("project"), bindparam("ceiling") >= _SPENT_UNITS)
    .values(
        spent_usd=_SPENT_UNITS + bindparam("units"), unpriced_calls=_PROJECTS.c.unpriced_calls + bindparam("unpriced")
    )
    .returning(_SPENT_UNITS, _PROJECTS.c.unpriced_calls)
)


# The project with the change tokens of its pipeline's catalogue and of the prices, and whether its
# pipeline has a shared budget (built once).
_WITH_TOKENS = select(
    Project,
    select(Revision.token)
    .where(Revision.name == literal(CATALOGUE_PREFIX) + Project.pipeline_id)
    .scalar_subquery()
    .label("catalogue_token"),
    token_of(PRICES).label("prices_token"),
    exists().where(PipelineBudget.pipeline_id == Project.pipeline_id).label("shared_budget"),
).where(Project.id == bindparam("project_id"))


MOVING = (StateName.RUNNING.value, StateName.FAILED.value)  # states that time alone can change
# The project columns the dashboard's project view shows or derives from (its change tokens, with the
# state rows' and the checks').
VIEW_COLUMNS = (
    "name",
    "status",
    "pipeline_id",
    "is_deleted",
    "updated_at",
    "budget_usd",
    "budget_policy",
    "spent_usd",
    "reserved_usd",
    "unpriced_calls",
)
_STATES = cast(Table, ProcessState.__table__)
# Per project: how many state rows, the sum of their versions (every change of a row raises its version by
# one), when the last one changed, and how many are running or failed.
_STATE_TOKENS = (
    select(
        _STATES.c.project_id,
        func.count().label("rows"),
        func.sum(_STATES.c.version).label("versions"),
        func.max(_STATES.c.last_updated_at).label("last"),
        func.sum(case((_STATES.c.state.in_(MOVING), 1), else_=0)).label("moving"),
    )
    .where(_STATES.c.project_id == bindparam("project_id"))
    .group_by(_STATES.c.project_id)
    .subquery()
)
_CHECKS = cast(Table, ExecutionCheck.__table__)
# Per project: its check results (docs/design.md, "Checks"): how many, how many passed, the last recorded.
_CHECK_TOKENS = (
    select(
        _CHECKS.c.project_id,
        func.count().label("checks"),
        func.sum(case((_CHECKS.c.passed, 1), else_=0)).label("passed"),
        func.max(func.coalesce(_CHECKS.c.updated_at, _CHECKS.c.created_at)).label("checked"),
    )
    .where(_CHECKS.c.project_id == bindparam("project_id"))
    .group_by(_CHECKS.c.project_id)
    .subquery()
)
# Built once (see repositories.base._insert_into): the dashboard reads it on every poll of a project view.
_VIEW_TOKENS = (
    select(
        *(_PROJECTS.c[name] for name in VIEW_COLUMNS),
        select(Revision.token)
        .where(Revision.name == literal(CATALOGUE_PREFIX) + _PROJECTS.c.pipeline_id)
        .scalar_subquery()
        .label("catalogue_token"),
        _STATE_TOKENS.c.rows,
        _STATE_TOKENS.c.versions,
        _STATE_TOKENS.c.last,
        _STATE_TOKENS.c.moving,
        _CHECK_TOKENS.c.checks,
        _CHECK_TOKENS.c.passed,
        _CHECK_TOKENS.c.checked,
    )
    .select_from(
        _PROJECTS.outerjoin(_STATE_TOKENS, _STATE_TOKENS.c.project_id == _PROJECTS.c.id).outerjoin(
            _CHECK_TOKENS, _CHECK_TOKENS.c.project_id == _PROJECTS.c.id
        )
    )
    .where(_PROJECTS.c.id == bindparam("project_id"))
)


class ViewTokens(NamedTuple):
    """What a project view is made of, as change tokens: ``values`` are the project's VIEW_COLUMNS, its
    pipeline's catalogue token, its state rows' count, version sum, last change and how many are MOVING,
    and its checks' count, passes and last record (in that order); equal values, equal view."""

    values: tuple[Any, ...]
    catalogue_token: str | None
    moving: bool


class ProjectChange(TypedDict, total=False):
    """What update_project (and the start of a project's first execution) can set."""

    name: str
    description: str | None
    status: ProjectStatus
    metadata_: dict[str, Any]
    budget_usd: Decimal | None
    budget_policy: str
    budget_period: str
    caps: dict[str, str] | None
    alert_thresholds: list[int] | None
    pipeline_id: str
    updated_by: str | None


class ProjectRepository(Repository):
    async def get(self, project_id: uuid.UUID, *, include_deleted: bool = False) -> Project | None:
        project = await self.session.get(Project, project_id)
        if project is None or (project.is_deleted and not include_deleted):
            return None
        return project

    async def get_with_tokens(
        self, project_id: uuid.UUID, *, include_deleted: bool = False
    ) -> tuple[Project, str | None, str | None, bool] | None:
        """The project with the change tokens of its pipeline's catalogue and of the prices, and whether its
        pipeline has a shared budget, in one query."""
        query, parameters = _WITH_TOKENS, {"project_id": project_id}
        row = (await self.session.execute(query, parameters)).first()
        if row is None or (row[0].is_deleted and not include_deleted):
            return None
        return row[0], row[1], row[2], bool(row[3])

    async def view_tokens(self, project_id: uuid.UUID) -> ViewTokens | None:
        """The project view's change tokens in one cheap statement (no state row is read whole); None when
        there is no such project (deleted ones included)."""
        row = (await self.session.execute(_VIEW_TOKENS, {"project_id": project_id})).first()
        if row is None:
            return None
        return ViewTokens(values=tuple(row), catalogue_token=row.catalogue_token, moving=bool(row.moving))

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

    async def has_executions(self, project_id: uuid.UUID) -> bool:
        query = select(exists().where(ProcessExecution.project_id == project_id))
        return bool(await self.session.scalar(query))

    async def create(self, **fields: Any) -> Project:
        project = Project(**fields)
        self.session.add(project)
        await self.session.flush()
        return project

    async def update(self, project: Project, **fields: Unpack[ProjectChange]) -> Project:
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

    async def reserve(
        self, project_id: uuid.UUID, *, units: int, within_budget: bool, spent_units: int | None = None
    ) -> bool:
        """Hold ``units`` against the project's budget, in one conditional UPDATE (exact under any
        concurrency: the row is locked while the condition is checked). With ``within_budget``, only if
        spent + reserved + units stays within the budget (with no units: while spent + reserved is still
        under it); ``spent_units``: the spend the budget judges when it has a period (read under the
        project's lock), instead of the all-time total. Returns whether the hold was taken."""
        spent = (
            type_coerce(Project.spent_usd, BigInteger()) if spent_units is None else literal(spent_units, BigInteger())
        )
        reserved = type_coerce(Project.reserved_usd, BigInteger())
        budget = type_coerce(Project.budget_usd, BigInteger())
        query = update(Project).where(Project.id == project_id)
        if within_budget:
            fits = spent + reserved + units <= budget if units else spent + reserved < budget
            query = query.where(or_(Project.budget_usd.is_(None), fits))
        result = await self.session.execute(
            query.values(reserved_usd=reserved + units).returning(reserved).execution_options(synchronize_session=False)
        )
        row = result.first()
        self._sync(project_id, reserved_usd=None if row is None else units_to_money(row[0]))
        return row is not None

    async def release(self, project_id: uuid.UUID, *, units: int) -> None:
        """Give back a hold taken by ``reserve`` (a running execution finished or failed)."""
        reserved = type_coerce(Project.reserved_usd, BigInteger())
        result = await self.session.execute(
            update(Project)
            .where(Project.id == project_id)
            .values(reserved_usd=reserved - units)
            .returning(reserved)
            .execution_options(synchronize_session=False)
        )
        row = result.first()
        self._sync(project_id, reserved_usd=None if row is None else units_to_money(row[0]))

    def _sync(self, project_id: uuid.UUID, **values: Any) -> None:
        """Put values written in SQL onto the loaded row, if the session holds it."""
        loaded = self.session.identity_map.get(identity_key(Project, project_id))
        if isinstance(loaded, Project):
            for key, value in values.items():
                if value is not None:
                    set_committed_value(loaded, key, value)

    async def add_spend(self, project_id: uuid.UUID, *, units: int, unpriced_calls: int) -> None:
        """Add to the running cost totals in SQL (exact integer units), and to a loaded row.

        A total never passes MAX_SPENT_UNITS (it would leave the 64-bit column: SQLite would turn it into
        a float, PostgreSQL fail): the call that would is refused with ``invalid_argument``, and the
        guard is written so that no intermediate value overflows either."""
        result = await self.session.execute(
            _ADD_SPEND,
            {"project": project_id, "units": units, "ceiling": MAX_SPENT_UNITS - units, "unpriced": unpriced_calls},
        )
        row = result.first()
        if row is None and await self.session.scalar(select(Project.id).where(Project.id == project_id)):
            raise InvalidArgument(
                f"this cost would bring the project's total past {units_to_money(MAX_SPENT_UNITS)} USD, the most "
                "one project can hold; nothing was written",
                hint="Check the cost figures (cost_usd is in USD, not cents or micro-dollars)",
            )
        if row is not None:
            self._sync(project_id, spent_usd=units_to_money(row[0]), unpriced_calls=int(row[1]))
