"""``db copy --to URL``: the whole database onto an empty one (SQLite → PostgreSQL is the usual move),
in batches, then verified: rows per table, cost totals and every project's state versions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import String, Table
from sqlalchemy.exc import DBAPIError

from mcp_server.db.engine import Database
from mcp_server.db.migrate import upgrade_to_head
from mcp_server.errors import Conflict, InvalidArgument, Unavailable
from mcp_server.models import (
    BudgetAlert,
    ExecutionCheck,
    LLMMetrics,
    LLMPrice,
    PipelineBudget,
    ProcessDefinition,
    ProcessExecution,
    ProcessState,
    Project,
    PromptVersion,
)
from mcp_server.repositories.rows import RowRepository
from mcp_server.settings import mask_url

BATCH = 1_000
# Foreign keys first: definitions and projects, prompts, executions and their checks, the states that point at
# them, costs, pipeline budgets and the budget alerts kept once per period (so a copy does not report them again).
TABLES: list[Table] = [
    model.__table__  # type: ignore[misc]
    for model in (
        ProcessDefinition,
        Project,
        PromptVersion,
        ProcessExecution,
        ExecutionCheck,
        ProcessState,
        LLMMetrics,
        LLMPrice,
        PipelineBudget,
        BudgetAlert,
    )
]

Progress = Callable[[str, int, int], None]  # table, rows copied so far, rows in all


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)


async def _counts(db: Database) -> dict[str, int]:
    async with db.unit_of_work(write=False) as session:
        repo = RowRepository(session)
        return {table.name: await repo.count(table) for table in TABLES}


async def _fingerprint(db: Database) -> dict[str, Any]:
    """What must be equal after the copy: cost totals and every state's version."""
    async with db.unit_of_work(write=False) as session:
        repo = RowRepository(session)
        costs = [row[0] for row in await repo.values(LLMMetrics.cost_usd)]
        spent = await repo.values(Project.id, Project.spent_usd, Project.reserved_usd)
        states = await repo.values(
            ProcessState.project_id, ProcessState.process_id, ProcessState.state, ProcessState.version
        )
    return {
        "cost_usd": sum((c for c in costs if c is not None), Decimal(0)),
        "unpriced": sum(1 for c in costs if c is None),
        "projects": sorted(tuple(str(value) for value in row) for row in spent),
        "states": sorted(tuple(str(value) for value in row) for row in states),
    }


def _too_long(table: Table, rows: list[dict[str, Any]]) -> str | None:
    """The first value in ``rows`` longer than its column allows (a SQLite file holds it; PostgreSQL
    refuses it), named by table, column and the row's key; None when every value fits."""
    limits = {c.name: c.type.length for c in table.columns if isinstance(c.type, String) and c.type.length}
    for row in rows:
        for name, length in limits.items():
            value = row.get(name)
            if isinstance(value, str) and len(value) > length:
                key = ", ".join(f"{c.name}={row.get(c.name)!s:.60}" for c in table.primary_key.columns)
                return f"{table.name}.{name} of the row {key} is {len(value)} characters (at most {length})"
    return None


async def _prepare_target(target_url: str) -> Database:
    """The target, migrated to head and checked empty; every failure names the target."""
    shown = mask_url(target_url)
    try:
        await upgrade_to_head(target_url)
        target = Database.connect(target_url)
    except (DBAPIError, OSError) as exc:
        raise Unavailable(f"cannot use the target database {shown}: {_reason(exc)}") from None
    try:
        present = {name: count for name, count in (await _counts(target)).items() if count}
    except (DBAPIError, OSError) as exc:
        await target.dispose()
        raise Unavailable(f"cannot use the target database {shown}: {_reason(exc)}") from None
    if present:
        await target.dispose()
        raise Conflict(
            f"the target database {shown} is not empty ({', '.join(f'{n}: {c}' for n, c in present.items())})",
            hint="Copy onto a new, empty database (db copy never overwrites)",
        )
    return target


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]


async def _copy_table(
    source: Database, writing: Any, table: Table, target_url: str, *, enforced: bool
) -> AsyncIterator[int]:
    """Yield the running count of rows of ``table`` copied onto the target session ``writing``."""
    copied = 0
    try:
        async with source.unit_of_work(write=False) as reading:
            async for rows in RowRepository(reading).stream(table, batch=BATCH):
                problem = _too_long(table, rows) if enforced else None
                if problem:
                    raise InvalidArgument(
                        f"the source database holds a value the target {mask_url(target_url)} cannot: "
                        f"{problem}; nothing was copied",
                        hint="Shorten it in the source, then run db copy again",
                    )
                try:
                    await RowRepository(writing).insert(table, rows)
                except DBAPIError as exc:
                    raise _refused(target_url, exc, f" a row of {table.name}") from None
                copied += len(rows)
                yield copied
    except DBAPIError as exc:  # only the source's reads are left to fail here
        shown = source.engine.url.render_as_string(hide_password=True)
        raise Unavailable(f"cannot read {table.name} from the source database {shown}: {_reason(exc)}") from None


def _refused(target_url: str, exc: BaseException, what: str = "") -> Conflict:
    return Conflict(
        f"the target database {mask_url(target_url)} refused{what}: {_reason(exc)}; nothing was copied (rolled back)"
    )


async def _copy_rows(source: Database, target: Database, target_url: str, report: CopyReport, progress: Any) -> None:
    """Every table in one transaction on the target: a row it refuses rolls everything back, so a failed
    copy leaves the target as empty as it was and a retry can start again."""
    enforced = target.engine.dialect.name != "sqlite"  # SQLite keeps any length; PostgreSQL refuses
    totals = await _counts(source)
    try:
        async with target.unit_of_work() as writing:
            for table in TABLES:
                report.rows[table.name] = 0
                async for copied in _copy_table(source, writing, table, target_url, enforced=enforced):
                    report.rows[table.name] = copied
                    if progress is not None:
                        progress(table.name, copied, totals[table.name])
                if progress is not None and not report.rows[table.name]:
                    progress(table.name, 0, 0)
    except DBAPIError as exc:  # the commit: every other failure already names its database
        raise _refused(target_url, exc) from None


async def copy_database(source: Database, target_url: str, *, progress: Progress | None = None) -> CopyReport:
    """Copy every row of ``source`` onto the database at ``target_url`` (migrated to head first; it must
    be empty), all or nothing, then verify. Raises Conflict if the target holds rows or refuses one."""
    target = await _prepare_target(target_url)
    try:
        report = CopyReport()
        await _copy_rows(source, target, target_url, report, progress)
        totals, after = await _counts(source), await _counts(target)
        report.differences += [
            f"{name}: {totals[name]} rows in the source, {after[name]} in the target"
            for name in totals
            if totals[name] != after[name]
        ]
        expected, got = await _fingerprint(source), await _fingerprint(target)
        report.differences += [f"{key} differ" for key in expected if expected[key] != got[key]]
        return report
    finally:
        await target.dispose()
