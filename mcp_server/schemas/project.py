"""Project inputs and outputs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema, field_serializer, model_validator

from mcp_server.enums import BudgetPolicy, ProjectStatus
from mcp_server.schemas.common import Out, PageInfo, UsdOut


class ProjectRow(Out):
    # A listed project: what picks it out and what it has spent (get_project has the rest).
    id: uuid.UUID
    name: str
    description: str | None
    status: ProjectStatus
    pipeline_id: str
    metadata: dict[str, Any]
    budget_usd: UsdOut | None
    spent_usd: UsdOut
    exceeded: bool = False
    updated_at: datetime | None
    deleted_at: datetime | None

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, data: Any) -> Any:
        # The ORM attribute is `metadata_` (`metadata` is SQLAlchemy's own); the API says `metadata`.
        if hasattr(data, "metadata_") and hasattr(data, "__table__"):  # a Project row
            computed = {"metadata", "remaining_usd", "exceeded", "period_start", "period_spent_usd", "resets_at"}
            computed |= {"budget_alerts", "saved_usd"}
            fields = {name: getattr(data, name) for name in cls.model_fields if name not in computed}
            budget = data.budget_usd
            return fields | {
                "metadata": data.metadata_,
                # The same figures as every budget reply (costs.status_of): remaining after what is held.
                "remaining_usd": None if budget is None else budget - data.spent_usd - data.reserved_usd,
                "exceeded": budget is not None and data.spent_usd > budget,
            }
        return data


class BudgetAlertOut(Out):
    scope: str = Field(description="budget, a cap, or the pipeline's budget.")
    threshold: int = Field(description="Percent.")
    spent_usd: UsdOut
    budget_usd: UsdOut
    period_start: datetime | None
    crossed_at: datetime


class ProjectOut(ProjectRow):
    budget_policy: BudgetPolicy
    budget_period: str
    caps: dict[str, str] | None = None
    alert_thresholds: list[int] | None = None
    reserved_usd: UsdOut
    remaining_usd: UsdOut | None = None
    period_start: datetime | None = None
    period_spent_usd: UsdOut | None = None
    resets_at: datetime | None = None
    saved_usd: UsdOut | None = None  # what reusing finished work saved (get_cost_summary has it too)
    budget_alerts: Annotated[
        list[BudgetAlertOut],
        WithJsonSchema(
            {
                "type": "array",
                "items": {"type": "object"},
                "description": "Newest 20 (scope, threshold %, spent_usd, budget_usd, crossed_at).",
            }
        ),
    ] = Field(default_factory=list)

    unpriced_calls: int
    is_deleted: bool
    created_at: datetime
    created_by: str | None
    updated_by: str | None

    @field_serializer("budget_alerts")
    def _plain(self, alerts: list[BudgetAlertOut]) -> list[dict[str, Any]]:
        # Written as plain objects in the schema: null fields are left out here, as the tools leave them out.
        return [alert.model_dump(mode="json", exclude_none=True) for alert in alerts]


class DeletedProject(Out):
    # What delete_project says: the project is hidden now (restore_project returns it whole).
    id: uuid.UUID
    name: str
    is_deleted: bool
    deleted_at: datetime
    updated_by: str | None


class ProjectPage(PageInfo):
    items: list[ProjectRow]
