"""LLM usage rows and the cost summaries over them, all aggregated in SQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CompoundSelect,
    Select,
    String,
    and_,
    case,
    func,
    insert,
    or_,
    select,
    type_coerce,
    union,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from mcp_server.db.types import money_to_units, units_to_money
from mcp_server.models import (
    CostSource,
    ExecutionStatus,
    LLMMetrics,
    ProcessExecution,
    ProcessState,
    Project,
    PromptVersion,
    StateName,
)
from mcp_server.repositories.base import Repository, raced
from mcp_server.repositories.projects import ProjectRepository


class UtcDay(FunctionElement[str]):
    """The UTC calendar date of a timestamp column as ``YYYY-MM-DD`` text, on either database."""

    type = String()
    name = "utc_day"
    inherit_cache = True


@compiles(UtcDay, "sqlite")
def _utc_day_sqlite(element: UtcDay, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps UTCDateTime as naive UTC text, 'YYYY-MM-DD HH:MM:SS…': the date is its prefix.
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 10)"


@compiles(UtcDay, "postgresql")
def _utc_day_postgresql(element: UtcDay, compiler: SQLCompiler, **kw: Any) -> str:
    # timestamptz → UTC wall time, whatever the session's TimeZone; literals, not binds, so that
    # the same expression text appears in SELECT and GROUP BY.
    return f"to_char(({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


# Summing the raw integer (1e-10 USD units) is exact on both databases; units_to_money converts.
_UNITS = type_coerce(LLMMetrics.cost_usd, BigInteger())
_TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens")
# Each group_by name → the reply fields it fills and their columns; `prompt` is a pair, reached through
# the execution a row is linked to (outer joins: rows without one form the group with no prompt).
_GROUP_COLUMNS: dict[str, dict[str, ColumnElement[Any]]] = {
    "project": {"project_id": LLMMetrics.__table__.c.project_id},
    "process": {"process_id": LLMMetrics.__table__.c.process_id},
    "provider": {"provider": LLMMetrics.__table__.c.provider},
    "model": {"model": LLMMetrics.__table__.c.model},
    "day": {"day": UtcDay(LLMMetrics.created_at)},
    "prompt": {"prompt_id": PromptVersion.__table__.c.prompt_id, "prompt_version": PromptVersion.__table__.c.version},
    "source": {"cost_source": LLMMetrics.__table__.c.cost_source},
    "agent": {"agent": LLMMetrics.__table__.c.agent},
}


def _live_executions() -> CompoundSelect[Any]:
    """Ids of the executions whose cost is not rework: the current execution of every state that
    is not stale, and executions still pending or running (they may yet become current) in a
    process that is not stale. Every other execution was re-run, failed or went stale.

    Superseded cost is then linked cost minus live cost: both are cheap (the first is one more sum
    in the main pass, the second walks the few live executions through ix_llm_metrics_execution_id),
    where joining every metric row to its execution and state would cost a lookup per row.
    """
    current = select(ProcessState.current_execution_id).where(
        ProcessState.state != StateName.STALE.value, ProcessState.current_execution_id.is_not(None)
    )
    unfinished = (
        select(ProcessExecution.id)
        .outerjoin(
            ProcessState,
            and_(
                ProcessState.project_id == ProcessExecution.project_id,
                ProcessState.process_id == ProcessExecution.process_id,
            ),
        )
        .where(
            ProcessExecution.status.in_((ExecutionStatus.PENDING.value, ExecutionStatus.RUNNING.value)),
            or_(ProcessState.state.is_(None), ProcessState.state != StateName.STALE.value),
        )
    )
    return union(current, unfinished)


@dataclass(frozen=True)
class CostAggregate:
    """Sums for one group (``key`` maps each reply field of the group_by names to its value) or for
    everything. Money is in exact integer units (see db.types); a call is unpriced when its cost is null."""

    key: Mapping[str, Any]
    calls: int
    tokens: Mapping[str, int]
    cost_units: int
    unpriced_calls: int
    inference_ms_sum: int
    inference_ms_count: int
    superseded_calls: int
    superseded_units: int
    superseded_unpriced_calls: int


def _int(value: Any) -> int:
    # PostgreSQL's SUM(bigint) is numeric (a Decimal); SQLite's is an int; both exact.
    return 0 if value is None else int(value)


# Money sums are taken in two parts, whole dollars and the remaining 1e-10 units, so that no sum of
# legal rows can pass SQLite's 64-bit integers (a plain SUM would fail past ~922 million USD, and
# SQLite would then refuse the whole summary). Python joins the parts exactly.
_SCALE = 10**10


def _money_sum(expression: ColumnElement[Any], label: str) -> list[Any]:
    return [
        func.sum(expression // _SCALE).label(f"{label}_whole"),
        func.sum(expression % _SCALE).label(f"{label}_frac"),
    ]


def _money_units(row: Any, label: str) -> int:
    return _int(row[f"{label}_whole"]) * _SCALE + _int(row[f"{label}_frac"])


class MetricsRepository(Repository):
    async def get(self, metric_id: uuid.UUID) -> LLMMetrics | None:
        return await self.session.get(LLMMetrics, metric_id)

    async def by_idempotency_key(self, key: str) -> LLMMetrics | None:
        return (await self.session.scalars(select(LLMMetrics).where(LLMMetrics.idempotency_key == key))).first()

    async def create(self, **fields: Any) -> LLMMetrics:
        async with raced(
            "the cost row",
            hint="Retry the call; with the same idempotency_key the retry returns the first call's reply",
        ):
            metric = await self._insert(LLMMetrics, fields)
        await self._account([metric])
        return metric

    async def create_keyed(self, **fields: Any) -> tuple[LLMMetrics, bool]:
        """Insert a row with an idempotency_key: ``(row, True)``, or ``(the key's row, False)`` when
        another transaction took the key first. The insert runs in a savepoint, so losing that race
        leaves this transaction usable (PostgreSQL aborts a transaction on a failed statement)."""
        metric = LLMMetrics(**fields)
        try:
            async with self.session.begin_nested():
                self.session.add(metric)
        except IntegrityError:
            winner = await self.by_idempotency_key(fields["idempotency_key"])
            if winner is None:  # some other constraint failed
                raise
            return winner, False
        await self._account([metric])
        return metric, True

    async def keep_reply(self, metric: LLMMetrics, reply: dict[str, Any]) -> None:
        """Store the reply a keyed report gave, for its repeats to return."""
        metric.reply = reply
        await self.session.flush()

    async def insert_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Bulk insert of complete rows (one executemany), for imports and fixtures."""
        batch = [{"id": uuid.uuid4(), **row} for row in rows]
        if batch:
            await self.session.execute(insert(LLMMetrics), batch)
            await self._account([LLMMetrics(**row) for row in batch])

    async def _account(self, metrics: Sequence[LLMMetrics]) -> None:
        """Add the rows' cost to their projects' running totals (``projects.spent_usd``), exactly."""
        totals: dict[uuid.UUID, list[int]] = {}
        for metric in metrics:
            if metric.project_id is None:
                continue
            entry = totals.setdefault(metric.project_id, [0, 0])
            if metric.cost_usd is None:
                entry[1] += 1
            else:
                entry[0] += money_to_units(metric.cost_usd)
        for project_id, (units, unpriced) in totals.items():
            await ProjectRepository(self.session).add_spend(project_id, units=units, unpriced_calls=unpriced)

    async def last_logged(self, project_id: uuid.UUID) -> Any:
        """When the project's newest cost row was written (an index lookup: ix_metrics_project_created)."""
        return await self.session.scalar(
            select(func.max(LLMMetrics.created_at)).where(LLMMetrics.project_id == project_id)
        )

    async def recent_run_costs(self, pipeline_id: str, process_id: str, limit: int = 20) -> list[Decimal]:
        """The priced cost of each of the step's latest executions (by their newest cost row), across the
        projects of its pipeline: what a start without reserve_usd estimates from."""
        units = func.sum(_UNITS).label("units")
        newest = func.max(LLMMetrics.created_at).label("newest")
        query = (
            select(units, newest)
            .join(Project, Project.id == LLMMetrics.project_id)
            .where(
                LLMMetrics.process_id == process_id,
                Project.pipeline_id == pipeline_id,
                LLMMetrics.execution_id.is_not(None),
                LLMMetrics.cost_usd.is_not(None),
            )
            .group_by(LLMMetrics.execution_id)
            .order_by(newest.desc())
            .limit(limit)
        )
        return [units_to_money(int(row[0])) for row in (await self.session.execute(query)).all()]

    async def execution_cost(self, execution_id: uuid.UUID) -> Decimal | None:
        """Exact sum of one execution's priced costs (None when it logged none priced)."""
        query = select(func.count(), func.sum(_UNITS)).where(
            LLMMetrics.execution_id == execution_id, LLMMetrics.cost_usd.is_not(None)
        )
        count, units = (await self.session.execute(query)).one()
        return units_to_money(int(units)) if count else None

    async def spent_since(
        self,
        project_id: uuid.UUID,
        start: datetime,
        *,
        agent: str | None = None,
        provider: str | None = None,
        model: str | None = None,
    ) -> Decimal:
        """Exact sum of the project's priced costs logged at or after ``start`` (a range of
        ix_metrics_project_created), of one agent or model if given: what a budget or cap with a period
        judges."""
        query = select(*_money_sum(_UNITS, "cost")).where(
            LLMMetrics.project_id == project_id, LLMMetrics.created_at >= start
        )
        if agent is not None:
            query = query.where(LLMMetrics.agent == agent)
        if provider is not None:
            query = query.where(LLMMetrics.provider == provider, LLMMetrics.model == model)
        row = (await self.session.execute(query)).mappings().one()
        return units_to_money(_money_units(row, "cost"))

    async def project_spend(self, project_id: uuid.UUID) -> tuple[Decimal, int]:
        """Exact sum of the project's priced costs, and how many of its calls are unpriced."""
        row = (
            (
                await self.session.execute(
                    select(
                        *_money_sum(_UNITS, "cost"),
                        func.sum(case((LLMMetrics.cost_source == CostSource.UNPRICED.value, 1), else_=0)).label("u"),
                    ).where(LLMMetrics.project_id == project_id)
                )
            )
            .mappings()
            .one()
        )
        return units_to_money(_money_units(row, "cost")), _int(row["u"])

    async def summarize(
        self,
        *,
        group_by: Sequence[str] = (),
        project_id: uuid.UUID | None = None,
        process_id: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[CostAggregate]:
        """One aggregate per group (one in all without group_by), ordered by the group keys.

        ``since`` is inclusive and ``until`` exclusive. Two statements: the figures in one pass over
        the matching rows (joined to their execution and prompt version only to group by prompt),
        then the cost of the live executions (see _live_executions).
        """
        columns = {field: column for name in group_by for field, column in _GROUP_COLUMNS[name].items()}
        keys = [column.label(f"g_{field}") for field, column in columns.items()]
        conditions = _conditions(
            project_id=project_id, process_id=process_id, provider=provider, model=model, since=since, until=until
        )
        figures, live = _figures(keys), _live(keys)
        if "prompt" in group_by:
            figures, live = _with_prompt(figures), _with_prompt(live)
        figures = figures.where(*conditions)
        live = live.where(*conditions, LLMMetrics.execution_id.in_(_live_executions()))
        if keys:
            # NULLS LAST on both databases (SQLite would put them first): unassigned groups come last.
            figures = figures.group_by(*keys).order_by(*(key.asc().nulls_last() for key in keys))
            live = live.group_by(*keys)
            if limit is not None:
                figures = figures.limit(limit)
        rows = (await self.session.execute(figures)).mappings().all()
        if not rows:
            return []
        lives = {
            tuple(row[f"g_{field}"] for field in columns): row for row in (await self.session.execute(live)).mappings()
        }
        return [_aggregate(row, lives.get(tuple(row[f"g_{field}"] for field in columns)), columns) for row in rows]


def _conditions(
    *,
    project_id: uuid.UUID | None,
    process_id: str | None,
    provider: str | None,
    model: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[ColumnElement[bool]]:
    """The WHERE conditions of a summary's filters (``since`` inclusive, ``until`` exclusive)."""
    conditions: list[ColumnElement[bool]] = []
    if project_id is not None:
        conditions.append(LLMMetrics.project_id == project_id)
    if process_id is not None:
        conditions.append(LLMMetrics.process_id == process_id)
    if provider is not None:
        conditions.append(LLMMetrics.provider == provider)
    if model is not None:
        conditions.append(LLMMetrics.model == model)
    if since is not None:
        conditions.append(LLMMetrics.created_at >= since)
    if until is not None:
        conditions.append(LLMMetrics.created_at < until)
    return conditions


def _figures(keys: Sequence[ColumnElement[Any]]) -> Select[Any]:
    """The summary's figures per group: calls, tokens, cost, timing, and the share linked to executions."""
    # Linked to an execution, or to one `db prune` deleted (never live: it was superseded).
    linked = or_(LLMMetrics.execution_id.is_not(None), LLMMetrics.detached.is_(True))
    return select(
        *keys,
        func.count().label("calls"),
        *(func.sum(getattr(LLMMetrics, name)).label(name) for name in _TOKENS),
        *_money_sum(_UNITS, "cost"),
        func.count(LLMMetrics.cost_usd).label("priced"),
        func.sum(LLMMetrics.inference_time_ms).label("ms_sum"),
        func.count(LLMMetrics.inference_time_ms).label("ms_count"),
        func.count(case((linked, 1), else_=None)).label("linked_calls"),
        func.count(case((linked, LLMMetrics.cost_usd), else_=None)).label("linked_priced"),
        *_money_sum(case((linked, _UNITS), else_=None), "linked"),
    )


def _live(keys: Sequence[ColumnElement[Any]]) -> Select[Any]:
    """The live share of the figures per group: calls, priced calls and cost (summarize keeps only the rows
    of live executions, see _live_executions)."""
    return select(
        *keys,
        func.count().label("live_calls"),
        func.count(LLMMetrics.cost_usd).label("live_priced"),
        *_money_sum(_UNITS, "live"),
    )


def _with_prompt(statement: Select[Any]) -> Select[Any]:
    """The statement over metric rows outer-joined to their execution and its prompt version."""
    return statement.select_from(
        LLMMetrics.__table__.outerjoin(
            ProcessExecution.__table__, LLMMetrics.execution_id == ProcessExecution.id
        ).outerjoin(
            PromptVersion.__table__,
            # A pruned execution's prompt version is kept on the cost row.
            func.coalesce(ProcessExecution.prompt_version_id, LLMMetrics.prompt_version_id) == PromptVersion.id,
        )
    )


def _aggregate(row: Any, live: Any, columns: Mapping[str, Any]) -> CostAggregate:
    calls, priced = _int(row["calls"]), _int(row["priced"])
    # Superseded = linked minus live: the live rows are a subset of the linked ones.
    superseded_calls = _int(row["linked_calls"]) - (0 if live is None else _int(live["live_calls"]))
    superseded_priced = _int(row["linked_priced"]) - (0 if live is None else _int(live["live_priced"]))
    return CostAggregate(
        key={field: row[f"g_{field}"] for field in columns},
        calls=calls,
        tokens={name: _int(row[name]) for name in _TOKENS},
        cost_units=_money_units(row, "cost"),
        unpriced_calls=calls - priced,
        inference_ms_sum=_int(row["ms_sum"]),
        inference_ms_count=_int(row["ms_count"]),
        superseded_calls=superseded_calls,
        superseded_units=_money_units(row, "linked") - (0 if live is None else _money_units(live, "live")),
        superseded_unpriced_calls=superseded_calls - superseded_priced,
    )
