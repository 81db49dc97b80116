"""The cost ledger: log one call's usage (priced), budgets, idempotent reports and summaries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.engine import database_key
from mcp_server.db.types import money_to_units, units_to_money, utcnow
from mcp_server.enums import BudgetPolicy
from mcp_server.errors import InvalidArgument, NotFound
from mcp_server.models import CostSource, ExecutionStatus, LLMMetrics, PipelineBudget, ProcessExecution, Project
from mcp_server.repositories import (
    BudgetAlertRepository,
    ExecutionRepository,
    MetricsRepository,
    PipelineBudgetRepository,
    PriceRepository,
    ProcessDefinitionRepository,
    ProjectRepository,
    StateRepository,
)
from mcp_server.repositories.metrics import CostAggregate
from mcp_server.schemas.cost import (
    BudgetStatus,
    CapStatus,
    CostFilters,
    CostGroup,
    CostRecord,
    CostReply,
    CostSummary,
    GroupKey,
    PipelineBudgetStatus,
    UsageIn,
)
from mcp_server.services import caps, periods, pricing
from mcp_server.services.idempotency import check_replay, request_hash
from mcp_server.services.kept import Kept
from mcp_server.services.projects import load_project

MAX_GROUPS = 1000


async def _resolve_links(
    session: AsyncSession, *, project_id: uuid.UUID | None, process_id: str | None, execution_id: uuid.UUID | None
) -> tuple[uuid.UUID | None, str | None, uuid.UUID | None]:
    """Check that every id exists; a cost linked to an execution takes its project and process."""
    if execution_id is not None:
        execution = await ExecutionRepository(session).get(execution_id)
        if execution is None:
            raise NotFound(
                f"execution {execution_id} does not exist", hint="Call list_executions to find valid execution ids"
            )
        for name, given, actual in (
            ("project_id", project_id, execution.project_id),
            ("process_id", process_id, execution.process_id),
        ):
            if given is not None and given != actual:
                raise InvalidArgument(
                    f"{name} {given} does not match execution {execution_id}, which belongs to {actual}",
                    hint=f"Omit {name}: it is taken from the execution",
                )
        project_id, process_id = execution.project_id, execution.process_id
    pipeline_id = None if project_id is None else (await load_project(session, project_id)).pipeline_id
    if process_id is not None and not await ProcessDefinitionRepository(session).defined(process_id, pipeline_id):
        where = "any pipeline" if pipeline_id is None else f"the project's pipeline {pipeline_id!r}"
        raise NotFound(f"process {process_id!r} is not defined in {where}", hint="list_processes shows the ids")
    return project_id, process_id, execution_id


@dataclass(frozen=True)
class Quote:
    """A usage's time and its genai-prices cost, worked out before the write transaction begins (the team's
    own price, read inside it, still comes first)."""

    created_at: datetime
    computed: pricing.Price | None  # None when the caller gave cost_usd


def quote(usage: UsageIn) -> Quote:
    created_at = utcnow()
    if usage.cost_usd is not None:
        return Quote(created_at, None)
    counts = _counts(usage)
    return Quote(created_at, pricing.price(usage.provider, usage.model, **counts, at=created_at))


def _counts(usage: UsageIn) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cache_write_1h_tokens": usage.cache_write_1h_tokens,
    }


def _row_fields(
    usage: UsageIn,
    *,
    created_at: datetime,
    custom: pricing.CustomPrice | None = None,
    computed: pricing.Price | None = None,
) -> dict[str, Any]:
    """The priced row: a given cost is `reported`; otherwise the team's own price (`custom`) or
    genai-prices computes it (`computed`, passed in when already worked out), or it is `unpriced`."""
    cost: Decimal | None
    rule: str | None = None
    counts = _counts(usage)
    if usage.cost_usd is not None:
        cost, source = usage.cost_usd, CostSource.REPORTED.value
    elif custom is not None:
        cost, source, rule = pricing.custom_price(custom, **counts)
    elif computed is not None:
        cost, source, rule = computed
    else:
        cost, source, rule = pricing.price(usage.provider, usage.model, **counts, at=created_at)
    return {
        "provider": usage.provider,
        "model": usage.model,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cache_write_1h_tokens": usage.cache_write_1h_tokens,
        "price_rule": rule,
        # Rounded here to what the database keeps, so that the reply shows the stored value.
        "cost_usd": None if cost is None else units_to_money(money_to_units(cost)),
        "cost_source": source,
        "inference_time_ms": usage.inference_time_ms,
        "created_at": created_at,
    }


# The team's own prices this server has looked up: (database, provider, model) -> (prices token, price).
_custom_prices: Kept[tuple[str, str, str], pricing.CustomPrice | None] = Kept(256)


async def _custom_price(
    session: AsyncSession, provider: str, model: str, token: str | None
) -> pricing.CustomPrice | None:
    """The team's own price of the model, if any: looked up once per change of the prices (``token``, read
    in this transaction), or every time without one."""
    key = (database_key(session), provider, model)
    if (kept := _custom_prices.get(key, token)) is not None:
        return kept[0]
    found = await PriceRepository(session).get(provider, model)
    price = (
        None
        if found is None
        else pricing.CustomPrice(
            found.input_per_mtok, found.output_per_mtok, found.cache_read_per_mtok, found.cache_write_per_mtok
        )
    )
    _custom_prices.put(key, token, price)
    return price


async def _priced(
    session: AsyncSession, usage: UsageIn, *, prices_token: str | None, quoted: Quote | None = None
) -> dict[str, Any]:
    """The row's fields, priced with the team's own price for the model when there is one."""
    quoted = quoted or Quote(utcnow(), None)
    custom = None
    if usage.cost_usd is None:
        custom = await _custom_price(session, usage.provider, usage.model, prices_token)
    return _row_fields(usage, created_at=quoted.created_at, custom=custom, computed=quoted.computed)


async def record_usage(
    session: AsyncSession,
    usage: UsageIn,
    *,
    project_id: uuid.UUID | None,
    process_id: str | None,
    execution_id: uuid.UUID | None,
    actor: str | None,
    agent: str | None = None,
    links_checked: bool = False,
    prices_token: str | None = None,
    quoted: Quote | None = None,
) -> CostRecord:
    """Validate the links, price the usage and store one LLMMetrics row (flushed, not committed).

    ``links_checked``: the caller has just verified the ids in this transaction (record_execution);
    ``prices_token``: the prices' change token, read in this transaction (lets a kept price be used);
    ``quoted``: the usage's time and genai-prices cost, worked out before the transaction."""
    if not links_checked:
        project_id, process_id, execution_id = await _resolve_links(
            session, project_id=project_id, process_id=process_id, execution_id=execution_id
        )
    row = await MetricsRepository(session).create(
        **await _priced(session, usage, prices_token=prices_token, quoted=quoted),
        project_id=project_id,
        process_id=process_id,
        execution_id=execution_id,
        agent=agent or actor,
        created_by=actor,
        updated_by=actor,
    )
    return CostRecord.from_row(row)


@dataclass(frozen=True)
class Judged:
    """What a project's budget judges now: the span (its period) and the spend in it (all of it without a
    period: the running total, no query)."""

    window: periods.Window
    spent: Decimal


async def judge(session: AsyncSession, project: Project, now: datetime | None = None) -> Judged:
    window = periods.window(project.budget_period, now or utcnow())
    if not window.bounded or project.budget_usd is None:
        return Judged(window, project.spent_usd)
    return Judged(window, await MetricsRepository(session).spent_since(project.id, window.start))


@dataclass(frozen=True)
class Shared:
    """A pipeline's budget, shared by all its projects, as judged now."""

    budget: PipelineBudget
    window: periods.Window
    spent: Decimal  # by all its projects, in the period
    held: Decimal  # by their running executions

    @property
    def left(self) -> Decimal:
        return self.budget.budget_usd - self.spent - self.held

    @property
    def blocks(self) -> bool:
        return self.budget.budget_policy == BudgetPolicy.BLOCK


async def shared_budget(session: AsyncSession, pipeline_id: str, *, lock: bool = False) -> Shared | None:
    """The pipeline's budget with its spend and holds (None without one); ``lock`` first serialises every
    start of the pipeline's projects, so admission against it is exact."""
    repo = PipelineBudgetRepository(session)
    budget = await repo.get(pipeline_id)
    if budget is None:
        return None
    if lock:
        await repo.lock(pipeline_id)
        await session.refresh(budget)
    window = periods.window(budget.budget_period, utcnow())
    return Shared(budget, window, await repo.spent_since(pipeline_id, window.start), await repo.held(pipeline_id))


def shared_status(shared: Shared, crossed: list[int] | None = None) -> PipelineBudgetStatus:
    bounded = shared.window.bounded
    return PipelineBudgetStatus(
        pipeline_id=shared.budget.pipeline_id,
        budget_usd=shared.budget.budget_usd,
        policy=shared.budget.budget_policy,
        period=shared.window.period if bounded else None,
        period_start=shared.window.start if bounded else None,
        resets_at=shared.window.resets_at,
        spent_usd=shared.spent,
        reserved_usd=shared.held,
        remaining_usd=shared.left,
        exceeded=shared.spent > shared.budget.budget_usd,
        crossed=crossed or None,
    )


@dataclass(frozen=True)
class Alerts:
    """What a logged cost first reached in this period: percents of the budget, the caps it judged and
    the pipeline's shared budget."""

    crossed: list[int]
    caps: list[CapStatus]
    pipeline: PipelineBudgetStatus | None = None


def thresholds_of(project: Project) -> tuple[int, ...]:
    return tuple(project.alert_thresholds or caps.DEFAULT_THRESHOLDS)


async def alert(
    session: AsyncSession,
    project: Project,
    judged: Judged,
    *,
    agent: str | None = None,
    model: str | None = None,
    shared: bool = True,
) -> Alerts:
    """After a cost was logged: the thresholds (percent of the budget, and of each cap of the cost's agent
    and ``provider/model``) the period's spend has reached that no call reported yet in this period, kept
    in ``budget_alerts`` so each is reported once. Spend only: money held by running executions is not
    spent and may come back, so it never fires an alert (block admission counts it)."""
    thresholds = thresholds_of(project)
    keep = _FirstCrossings(BudgetAlertRepository(session), project.id, utcnow())
    window = judged.window
    crossed: list[int] = []
    if project.budget_usd is not None:
        crossed = await keep(window, f"project:{project.id}", "budget", project.budget_usd, judged.spent, thresholds)
    statuses = []
    judging = caps.applicable(project.caps, agent=agent, model=model)
    for found in await caps.figures(session, project.id, judging, judged.window.start):
        first = await keep(
            window, f"project:{project.id}", found.cap.key[:120], found.cap.limit, found.spent, thresholds
        )
        statuses.append(cap_status(found, first))
    together = await shared_budget(session, project.pipeline_id) if shared else None
    pipeline = None
    if together is not None:
        owner, limit = f"pipeline:{together.budget.pipeline_id}", together.budget.budget_usd
        shared_thresholds = tuple(together.budget.alert_thresholds or thresholds)
        first = await keep(together.window, owner, "budget", limit, together.spent, shared_thresholds)
        pipeline = shared_status(together, first)
    return Alerts(crossed, statuses, pipeline)


@dataclass
class _FirstCrossings:
    """Keeps the thresholds a spend reached, once per period of ``window``: returns those reported first
    (the budget, each cap and the pipeline's shared budget alike)."""

    repo: BudgetAlertRepository
    project_id: uuid.UUID
    now: datetime

    async def __call__(
        self,
        window: periods.Window,
        owner: str,
        scope: str,
        limit: Decimal,
        spent: Decimal,
        thresholds: tuple[int, ...],
    ) -> list[int]:
        reached = [t for t in thresholds if limit > 0 and spent * 100 >= limit * t]
        return await self.repo.record_once(
            self.project_id,
            owner=owner,
            scope=scope,
            thresholds=reached,
            period_start=window.alert_start,
            spent_usd=spent,
            budget_usd=limit,
            now=self.now,
        )


def cap_status(found: caps.CapFigures, crossed: list[int] | None = None) -> CapStatus:
    return CapStatus(
        cap=found.cap.key,
        cap_usd=found.cap.limit,
        spent_usd=found.spent,
        reserved_usd=found.held,
        remaining_usd=found.left,
        crossed=crossed or None,
    )


async def budget_status(
    session: AsyncSession,
    project_id: uuid.UUID | None,
    *,
    added: Decimal | None = None,
    agent: str | None = None,
    model: str | None = None,
) -> BudgetStatus | None:
    """Budget, policy, spend, reserved, remaining and exceeded for a project (None without a project or
    for an unknown one); with ``added`` (the cost this call just logged), the thresholds it first crossed."""
    if project_id is None:
        return None
    project = await ProjectRepository(session).get(project_id, include_deleted=True)
    if project is None:
        return None
    judged = await judge(session, project)
    if not added:
        return status_of(project, judged)
    alerts = await alert(session, project, judged, agent=agent, model=model)
    return status_of(project, judged, crossed=alerts.crossed, caps=alerts.caps, pipeline=alerts.pipeline)


def status_of(
    project: Project,
    judged: Judged,
    *,
    crossed: list[int] | None = None,
    hold: str | None = None,
    caps: list[CapStatus] | None = None,
    pipeline: PipelineBudgetStatus | None = None,
) -> BudgetStatus:
    """The budget reply; ``crossed``: thresholds this call reported first; ``hold``: what a start held, in words."""
    spent, unpriced, reserved = project.spent_usd, project.unpriced_calls, project.reserved_usd  # running totals
    budget = project.budget_usd
    remaining = None if budget is None else budget - judged.spent - reserved
    exceeded = budget is not None and judged.spent > budget
    window = judged.window
    notes = [hold] if hold else []
    if budget is None:
        notes.append("no budget set (update_project budget_usd sets one)")
    elif exceeded:
        span = "" if not window.bounded else " this period"
        notes.append(f"over budget{span} by {judged.spent - budget} USD")
        if project.budget_policy == BudgetPolicy.BLOCK:
            notes.append(
                "the cost is logged; further starts are refused until the budget is raised"
                + ("" if window.resets_at is None else f" or the period resets at {window.resets_at.isoformat()}")
            )
    if crossed:
        notes.append("this call crossed " + ", ".join(f"{t}%" for t in crossed) + " of the budget")
    if pipeline is not None and pipeline.crossed:
        percents = ", ".join(f"{t}%" for t in pipeline.crossed)
        notes.append(f"this call crossed {percents} of pipeline {pipeline.pipeline_id}'s budget")
    if pipeline is not None and pipeline.exceeded and pipeline.policy == BudgetPolicy.BLOCK:
        notes.append(f"pipeline {pipeline.pipeline_id}'s shared budget is passed: starts in its projects are refused")
    for cap in caps or []:
        if cap.crossed:
            notes.append(f"this call crossed {', '.join(f'{t}%' for t in cap.crossed)} of cap {cap.cap}")
    if unpriced:
        notes.append(f"{unpriced} unpriced call(s) are not included in spent_usd")
    bounded = window.bounded and budget is not None
    return BudgetStatus(
        budget_usd=budget,
        policy=project.budget_policy,
        spent_usd=spent,
        reserved_usd=reserved,
        remaining_usd=remaining,
        exceeded=exceeded,
        period=window.period if bounded else None,
        period_start=window.start if bounded else None,
        period_spent_usd=judged.spent if bounded else None,
        period_remaining_usd=remaining if bounded else None,
        resets_at=window.resets_at if bounded else None,
        crossed=crossed or None,
        caps=caps or None,
        pipeline=pipeline,
        unpriced_calls=unpriced,
        note="; ".join(notes) or None,
    )


def _report_hash(
    usage: UsageIn,
    project_id: uuid.UUID | None,
    process_id: str | None,
    execution_id: uuid.UUID | None,
    agent: str | None = None,
) -> str:
    arguments = (
        usage.model_dump(mode="json")
        | {
            # 0.1 and 0.10 are the same cost: compare the stored units, not the spelling.
            "cost_usd": None if usage.cost_usd is None else money_to_units(usage.cost_usd),
            "project_id": project_id,
            "process_id": process_id,
            "execution_id": execution_id,
        }
        | ({"agent": agent} if agent is not None else {})
    )  # keys stored before agents existed still compare
    return request_hash("report_cost", arguments)


def _replay(row: LLMMetrics, key: str, digest: str) -> CostReply:
    check_replay(key, row.request_hash, digest)
    if row.reply is None:  # not written by report_cost; rebuild what it would have said
        return CostReply(cost=CostRecord.from_row(row), budget=None, replayed=True)
    return CostReply.model_validate(row.reply).model_copy(update={"replayed": True})


async def report_cost(
    session: AsyncSession,
    usage: UsageIn,
    *,
    project_id: uuid.UUID | None,
    process_id: str | None,
    execution_id: uuid.UUID | None,
    idempotency_key: str | None,
    actor: str | None,
    agent: str | None = None,
) -> CostReply:
    """Log one call's cost and return it with the project's budget status
    (docs/design.md, "Costs and budgets"). A cost of a running execution consumes what that execution
    holds first: the same money is never counted as both spent and reserved."""
    metrics = MetricsRepository(session)
    digest = _report_hash(usage, project_id, process_id, execution_id, agent) if idempotency_key else ""
    if idempotency_key is not None and (existing := await metrics.by_idempotency_key(idempotency_key)) is not None:
        return _replay(existing, idempotency_key, digest)
    project_id, process_id, execution_id = await _resolve_links(
        session, project_id=project_id, process_id=process_id, execution_id=execution_id
    )
    execution = None
    if execution_id is not None:
        # Serialised with the execution's start, finish and failure, which release its hold.
        await StateRepository(session).lock_project(project_id)  # type: ignore[arg-type]
        execution = await ExecutionRepository(session).get(execution_id)
        if execution is not None:
            await session.refresh(execution)
    fields = await _priced(session, usage, prices_token=None) | {
        "project_id": project_id,
        "process_id": process_id,
        "execution_id": execution_id,
        "agent": agent or (execution.agent if execution is not None else None) or actor,
        "created_by": actor,
        "updated_by": actor,
    }
    if idempotency_key is None:
        row = await metrics.create(**fields)
    else:
        row, created = await metrics.create_keyed(**fields, idempotency_key=idempotency_key, request_hash=digest)
        if not created:  # a concurrent call with the same key committed first
            return _replay(row, idempotency_key, digest)
    if execution is not None and row.cost_usd:
        await _consume_hold(session, execution, row.cost_usd)
    budget = await budget_status(
        session, project_id, added=row.cost_usd, agent=row.agent, model=f"{row.provider}/{row.model}"
    )
    reply = CostReply(cost=CostRecord.from_row(row), budget=budget)
    if idempotency_key is not None:
        await metrics.keep_reply(row, reply.model_dump(mode="json"))
    return reply


async def _consume_hold(session: AsyncSession, execution: ProcessExecution, cost: Decimal) -> None:
    """A running execution's cost uses up its hold first (what is left stays held until it finishes)."""
    held = execution.reserved_usd
    if not held or execution.status != ExecutionStatus.RUNNING.value:
        return
    used = min(held, cost)
    await ProjectRepository(session).release(execution.project_id, units=money_to_units(used))
    await ExecutionRepository(session).update(execution, reserved_usd=(held - used) or None)


def _money(units: int, calls: int, unpriced: int) -> Decimal | None:
    """A sum of costs, or None when every call in it is unpriced: an unknown cost is never 0."""
    return None if calls and unpriced == calls else units_to_money(units)


def _figures(aggregate: CostAggregate) -> dict[str, Any]:
    count = aggregate.inference_ms_count
    return {
        "calls": aggregate.calls,
        **aggregate.tokens,
        "cost_usd": _money(aggregate.cost_units, aggregate.calls, aggregate.unpriced_calls),
        "unpriced_calls": aggregate.unpriced_calls,
        "mean_inference_time_ms": round(aggregate.inference_ms_sum / count, 3) if count else None,
        "superseded_cost_usd": _money(
            aggregate.superseded_units, aggregate.superseded_calls, aggregate.superseded_unpriced_calls
        ),
        "superseded_unpriced_calls": aggregate.superseded_unpriced_calls,
    }


def _group(aggregate: CostAggregate) -> CostGroup:
    keys = dict(aggregate.key)
    if keys.get("day") is not None:
        keys["day"] = date.fromisoformat(keys["day"])
    return CostGroup(**_figures(aggregate), **keys)


async def summary(session: AsyncSession, filters: CostFilters, group_by: list[GroupKey]) -> CostSummary:
    """Totals and per-group figures over the matching rows, aggregated in SQL."""
    if filters.since is not None and filters.until is not None and filters.since >= filters.until:
        raise InvalidArgument(
            f"since ({filters.since.isoformat()}) must be earlier than until ({filters.until.isoformat()})",
            hint="since is inclusive and until exclusive",
        )
    if filters.project_id is not None:
        await load_project(session, filters.project_id, include_deleted=True)
    group_by = list(dict.fromkeys(group_by))  # drop repeats, keep the order
    if filters.provider is not None:
        filters = filters.model_copy(update={"provider": filters.provider.strip().lower()})
    where = filters.model_dump()
    metrics = MetricsRepository(session)
    groups: list[CostAggregate] = []
    truncated = False
    if group_by:
        groups = await metrics.summarize(group_by=group_by, limit=MAX_GROUPS + 1, **where)
        truncated = len(groups) > MAX_GROUPS
        groups = groups[:MAX_GROUPS]
    # When every group is here, adding their exact sums saves a second scan of the rows.
    totals = _sum(groups) if groups and not truncated else (await metrics.summarize(**where))[0]
    return CostSummary(
        group_by=group_by,
        totals=CostGroup(**_figures(totals)),
        groups=[_group(g) for g in groups],
        groups_truncated=truncated,
        saved_usd=await _saved(session, filters),
    )


async def _saved(session: AsyncSession, filters: CostFilters) -> Decimal | None:
    """What reusing finished work saved under the filters (docs/design.md, "Reuse and stale causes"): a
    reuse names no provider or model, so a filter on those leaves it out (0: nothing was reused)."""
    if filters.provider is not None or filters.model is not None:
        return None
    saved = await ExecutionRepository(session).saved(
        project_id=filters.project_id, process_id=filters.process_id, since=filters.since, until=filters.until
    )
    return saved


def _sum(groups: list[CostAggregate]) -> CostAggregate:
    return CostAggregate(
        key={},
        calls=sum(g.calls for g in groups),
        tokens={name: sum(g.tokens[name] for g in groups) for name in groups[0].tokens},
        cost_units=sum(g.cost_units for g in groups),
        unpriced_calls=sum(g.unpriced_calls for g in groups),
        inference_ms_sum=sum(g.inference_ms_sum for g in groups),
        inference_ms_count=sum(g.inference_ms_count for g in groups),
        superseded_calls=sum(g.superseded_calls for g in groups),
        superseded_units=sum(g.superseded_units for g in groups),
        superseded_unpriced_calls=sum(g.superseded_unpriced_calls for g in groups),
    )
