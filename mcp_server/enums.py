"""The enumerations shared by models and tool schemas, free of SQLAlchemy (start-up imports stay light)."""

from __future__ import annotations

import enum

# The pipeline every database has: where projects and processes go when none is named.
DEFAULT_PIPELINE = "default"


class ProjectStatus(enum.StrEnum):
    DRAFT = "draft"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    ARCHIVED = "archived"


class ExecutionStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    # Finished after its process had gone stale: its input was already outdated (docs/design.md, "Pipeline semantics").
    STALE = "stale"
    # Finished after another execution had changed its process since it started: stored, not current.
    SUPERSEDED = "superseded"
    # Its lease passed before it finished (no renew_lease in time, or its timeout): the step could be
    # claimed again; its reservation was released.
    EXPIRED = "expired"


class StateName(enum.StrEnum):
    EMPTY = "empty"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STALE = "stale"


class CostSource(enum.StrEnum):
    REPORTED = "reported"
    COMPUTED = "computed"
    CUSTOM = "custom"  # priced from the team's own price (`prices set`)
    UNPRICED = "unpriced"


class BudgetPolicy(enum.StrEnum):
    WARN = "warn"  # report exceeded, refuse nothing
    BLOCK = "block"  # refuse a start that would pass the budget (costs already incurred are always stored)
