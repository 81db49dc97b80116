"""What the dashboard's read-only JSON API answers (mcp_server/ui/web.py), one model per view: the pages
(mcp_server/ui/static/app.js) read these fields. Money is a plain decimal string, times are ISO 8601 as
Python writes them, and a field without a value is null (the budget apart, which is as the tools send it).
Fields are declared in the order the documents list them."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, PlainSerializer, WithJsonSchema

from mcp_server.enums import ProjectStatus, StateName
from mcp_server.schemas.common import DecimalOut
from mcp_server.schemas.cost import BudgetStatus
from mcp_server.schemas.portable import reply_data

# A time as datetime.isoformat() writes it ("+00:00", not pydantic's "Z").
Stamp = Annotated[
    datetime, PlainSerializer(lambda value: value.isoformat(), return_type=str), WithJsonSchema({"type": "string"})
]


def _as_sent(budget: BudgetStatus) -> Any:
    return reply_data(budget)


# The project's budget as the tools send it: its null fields left out.
BudgetAsSent = Annotated[BudgetStatus, PlainSerializer(_as_sent), WithJsonSchema({"type": "object"})]


class ProjectSummary(BaseModel):
    """A row of the projects list: pipeline, steps by state, budget, last activity."""

    id: uuid.UUID
    name: str
    status: ProjectStatus
    pipeline_id: str
    steps: int
    counts: dict[str, int]
    budget_usd: DecimalOut | None
    spent_usd: DecimalOut
    reserved_usd: DecimalOut
    remaining_usd: DecimalOut | None
    exceeded: bool
    budget_period: str | None
    last_activity: Stamp | None


class ProjectList(BaseModel):
    items: list[ProjectSummary]
    total: int
    page: int
    has_more: bool


class StepView(BaseModel):
    """A step of the project view: its state, version, layer, dependencies (the first few; how many in
    all), stale cause, current execution with the start of its output, and unpassed required checks."""

    id: str
    name: str
    state: StateName
    version: int
    layer: int
    depends_on: list[str]
    depends_count: int
    can_run: bool
    stale_cause: str | None
    reason: str | None
    execution_id: uuid.UUID | None
    updated: Stamp | None
    output: str | None
    checks_failed: list[str] | None
    checks_missing: list[str] | None


class ProjectView(BaseModel):
    """One project: a page of its steps in run order, with how many were left out; counts; budget."""

    id: uuid.UUID
    name: str
    pipeline_id: str
    counts: dict[str, int]
    ready: list[str]
    plan_count: int
    complete: bool
    budget: BudgetAsSent
    steps: list[StepView]
    steps_total: int
    steps_page: int
    steps_first: int
    steps_omitted: int
    steps_per_page: int


class ExecutionSummary(BaseModel):
    """An execution in the project's timeline (no inputs or outputs)."""

    id: uuid.UUID
    process_id: str
    status: str
    started_at: Stamp | None
    completed_at: Stamp | None
    created_by: str | None


class Timeline(BaseModel):
    items: list[ExecutionSummary]
    total: int
    page: int
    has_more: bool


class CostTotals(BaseModel):
    calls: int
    cost_usd: DecimalOut | None
    superseded_cost_usd: DecimalOut | None
    unpriced_calls: int


class ModelCost(BaseModel):
    model: str | None
    calls: int
    cost_usd: DecimalOut | None
    superseded_cost_usd: DecimalOut | None


class AgentCost(BaseModel):
    agent: str
    calls: int
    cost_usd: DecimalOut | None
    superseded_cost_usd: DecimalOut | None


class DayCost(BaseModel):
    day: date | None
    calls: int
    cost_usd: DecimalOut | None
    superseded_cost_usd: DecimalOut | None


class AlertView(BaseModel):
    scope: str
    threshold: int
    spent_usd: DecimalOut
    limit_usd: DecimalOut
    crossed_at: Stamp


class CostView(BaseModel):
    """The project's cost by model, by agent and by day, with the cost of rework apart (superseded), and
    its budget alerts."""

    totals: CostTotals
    by_model: list[ModelCost]
    by_agent: list[AgentCost]
    by_day: list[DayCost]
    alerts: list[AlertView]
