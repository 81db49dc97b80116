"""``db copy --to URL``: the whole database onto an empty one (SQLite → PostgreSQL is the usual move),
in batches, then verified: rows per table, cost totals and every project's state versions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Table

from mcp_server.db.engine import Database
from mcp_server.db.migrate import upgrade_to_head
from mcp_server.errors import Conflict
from mcp_server.models import (
    LLMMetrics,
    LLMPrice,
    ProcessDefinition,
    ProcessExecution,
    ProcessState,
    Project,
    PromptVersion,
)
from mcp_server.repositories.rows import RowRepository

BATCH = 1_000
# Foreign keys first: definitions and projects, prompts, executions, the states that point at them, costs.
TABLES: list[Table] = [
    model.__table__  # type: ignore[misc]
    for model in (ProcessDefinition, Project, PromptVersion, ProcessExecution, ProcessState, LLMMetrics, LLMPrice)
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


async def copy_database(source: Database, target_url: str, *, progress: Progress | None = None) -> CopyReport:
    """Copy every row of ``source`` onto the database at ``target_url`` (migrated to head first; it must
    be empty), then verify. Raises Conflict if the target holds rows."""
    await upgrade_to_head(target_url)
    target = Database.connect(target_url)
    try:
        present = {name: count for name, count in (await _counts(target)).items() if count}
        if present:
            raise Conflict(
                f"the target database is not empty ({', '.join(f'{n}: {c}' for n, c in present.items())})",
                hint="Copy onto a new, empty database (db copy never overwrites)",
            )
        totals = await _counts(source)
        report = CopyReport()
        for table in TABLES:
            copied = 0
            async with source.unit_of_work(write=False) as reading:
                async for rows in RowRepository(reading).stream(table, batch=BATCH):
                    async with target.unit_of_work() as writing:
                        await RowRepository(writing).insert(table, rows)
                    copied += len(rows)
                    if progress is not None:
                        progress(table.name, copied, totals[table.name])
            report.rows[table.name] = copied
            if progress is not None and not copied:
                progress(table.name, 0, 0)
        after = await _counts(target)
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
