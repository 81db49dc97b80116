"""Project bundles: ``export`` and ``import`` across databases (SPEC §7).

A bundle is JSON Lines: a header (format, schema revision, counts), then one record per row, tables in
dependency order: process definitions (of the exported projects' pipelines), projects, the prompt
versions their executions used, executions, states, cost rows. Values are written in a form both
engines read back exactly: ids and times as strings, money as decimal strings.

``import`` loads a bundle in one transaction. Ids are kept; a row already present with the same content
is skipped (importing twice changes nothing); a row present with other content is a clash: every clash
is named and nothing is written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.migrate import SCHEMA_HEAD
from mcp_server.db.types import GUID, Money, UTCDateTime
from mcp_server.errors import Conflict, InvalidArgument
from mcp_server.models import LLMMetrics, ProcessDefinition, ProcessExecution, ProcessState, Project, PromptVersion
from mcp_server.repositories.rows import RowRepository

FORMAT = "pipeline-state-bundle"
FORMAT_VERSION = 1
# Table name -> the kind a record of it carries, in the order rows must be inserted (foreign keys).
KINDS: dict[str, Table] = {
    "definition": ProcessDefinition.__table__,  # type: ignore[dict-item]
    "project": Project.__table__,  # type: ignore[dict-item]
    "prompt_version": PromptVersion.__table__,  # type: ignore[dict-item]
    "execution": ProcessExecution.__table__,  # type: ignore[dict-item]
    "state": ProcessState.__table__,  # type: ignore[dict-item]
    "cost": LLMMetrics.__table__,  # type: ignore[dict-item]
}
MAX_CLASHES_NAMED = 20


def _dump(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def _load(table: Table, name: str, value: Any) -> Any:
    if value is None:
        return None
    column_type = table.c[name].type
    if isinstance(column_type, GUID):
        return uuid.UUID(str(value))
    if isinstance(column_type, UTCDateTime):
        return datetime.fromisoformat(str(value))
    if isinstance(column_type, Money):
        return Decimal(str(value))
    return value


def _record(kind: str, row: Any) -> dict[str, Any]:
    return {"kind": kind, **{name: _dump(value) for name, value in row._mapping.items()}}


def _key(table: Table, values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(str(values[column.name]) for column in table.primary_key.columns)


async def export(
    session: AsyncSession, *, project_ids: Sequence[uuid.UUID] = (), pipeline_id: str | None = None
) -> Iterator[dict[str, Any]]:
    """The bundle's records (header first) for these projects (every project when none is named; with
    ``pipeline_id``, that pipeline's projects and its definitions)."""
    repo = RowRepository(session)
    projects = await repo.projects(project_ids, pipeline_id)
    found = {row.id for row in projects}
    missing = [str(pid) for pid in project_ids if pid not in found]
    if missing:
        raise InvalidArgument(f"no such project(s): {', '.join(missing)}")
    pipelines = sorted({row.pipeline_id for row in projects} | ({pipeline_id} if pipeline_id else set()))
    definitions = await repo.where_in(KINDS["definition"], "pipeline_id", pipelines)
    executions = await repo.where_in(KINDS["execution"], "project_id", found)
    states = await repo.where_in(KINDS["state"], "project_id", found)
    costs = await repo.where_in(KINDS["cost"], "project_id", found)
    prompt_ids = {row.prompt_version_id for row in [*executions, *costs] if row.prompt_version_id is not None}
    prompts = await repo.where_in(KINDS["prompt_version"], "id", prompt_ids)
    chosen = {
        "definition": definitions,
        "project": projects,
        "prompt_version": prompts,
        "execution": executions,
        "state": states,
        "cost": costs,
    }
    header = {
        "kind": "header",
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "schema_revision": SCHEMA_HEAD,
        "pipelines": pipelines,
        "counts": {kind: len(rows) for kind, rows in chosen.items()},
    }

    def records() -> Iterator[dict[str, Any]]:
        yield header
        for kind, rows in chosen.items():
            for row in rows:
                yield _record(kind, row)

    return records()


def write(records: Iterable[dict[str, Any]], out: IO[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n")
        if record["kind"] != "header":
            counts[record["kind"]] = counts.get(record["kind"], 0) + 1
    return counts


@dataclass
class ImportReport:
    inserted: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)


def read(lines: Iterable[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the records of a bundle, checked for shape (InvalidArgument naming the line)."""
    header: dict[str, Any] | None = None
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"line {number} is not JSON: {exc.msg}") from None
        if not isinstance(record, dict) or "kind" not in record:
            raise InvalidArgument(f"line {number} is not a bundle record (no kind)")
        if header is None:
            if record["kind"] != "header" or record.get("format") != FORMAT:
                raise InvalidArgument("the first line is not a pipeline-state bundle header")
            if record.get("format_version") != FORMAT_VERSION:
                raise InvalidArgument(f"bundle format version {record.get('format_version')} is not {FORMAT_VERSION}")
            header = record
            continue
        table = KINDS.get(record["kind"])
        if table is None:
            raise InvalidArgument(f"line {number}: unknown kind {record['kind']!r}")
        unknown = set(record) - {"kind"} - set(table.c.keys())
        if unknown:
            raise InvalidArgument(f"line {number}: {record['kind']} has no field(s) {sorted(unknown)}")
        records.append(record)
    if header is None:
        raise InvalidArgument("the bundle is empty")
    return header, records


async def load(session: AsyncSession, records: Sequence[dict[str, Any]]) -> ImportReport:
    """Insert what is new, skip what is identical, refuse (naming the rows, writing nothing) what clashes."""
    repo = RowRepository(session)
    report = ImportReport()
    clashes: list[str] = []
    new: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for kind, table in KINDS.items():
        mine = [record for record in records if record["kind"] == kind]
        if not mine:
            continue
        keys = [column.name for column in table.primary_key.columns]
        wanted = [{key: _load(table, key, record[key]) for key in keys} for record in mine]
        existing: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in await repo.by_keys(table, wanted):
            dumped = {name: _dump(value) for name, value in row._mapping.items()}
            existing[_key(table, dumped)] = dumped
        for record in mine:
            values = {name: value for name, value in record.items() if name != "kind"}
            present = existing.get(_key(table, values))
            if present is None:
                new[kind].append({name: _load(table, name, value) for name, value in values.items()})
            elif _same(table, present, values):
                report.unchanged[kind] = report.unchanged.get(kind, 0) + 1
            else:
                differ = sorted(n for n in values if _load(table, n, present.get(n)) != _load(table, n, values[n]))
                clashes.append(f"{kind} {'/'.join(_key(table, values))} differs in {', '.join(differ)}")
    if clashes:
        named = "; ".join(clashes[:MAX_CLASHES_NAMED]) + (
            f"; and {len(clashes) - MAX_CLASHES_NAMED} more" if len(clashes) > MAX_CLASHES_NAMED else ""
        )
        raise Conflict(
            f"{len(clashes)} row(s) of the bundle clash with this database: {named}",
            hint="Nothing was written. A row with the same id must have the same content (and a pipeline step "
            "the same definition); import into another database, or export again from the source",
        )
    for kind, rows in new.items():
        if rows:
            await repo.insert(KINDS[kind], rows)
            report.inserted[kind] = len(rows)
    return report


def _same(table: Table, present: dict[str, Any], values: dict[str, Any]) -> bool:
    """Equal as both engines give values back (times as UTC instants, money exact)."""
    return all(_load(table, name, present.get(name)) == _load(table, name, value) for name, value in values.items())
