"""Project bundles: ``export`` and ``import`` across databases.

A bundle is JSON Lines: a header (format, schema revision, counts), then one record per row, tables in
dependency order: process definitions (of the exported projects' pipelines), projects, the prompt
versions their executions used, executions, their checks, states, cost rows. Values are written in a form
both engines read back exactly: ids and times as strings, money as decimal strings. Format version 2 added
the checks (``check`` records); a version 1 bundle, which has none, is still read.

``import`` trusts nothing in a bundle. The header must be one this server can read (format and its
version, a known schema revision) and its counts must match the records that follow (a bundle cut short
is refused). Every record is checked by the rules the tools apply (``bundle_rows``); the figures a
project derives from its rows (spent, unpriced calls, reserved) are recomputed from them; the pipelines
stay DAGs once merged with the definitions already here; every reference (a step of the project's
pipeline, a prompt version, an execution of the same project and step; for a check, a finished one)
must hold. Ids are kept; a row already present with the same content is skipped (importing twice
changes nothing); a row present with other content is a clash, and so is any new row for a project that
already exists here: an import adds projects, it never changes one. Everything is checked before the
first write, in one transaction: a refused import writes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.migrate import SCHEMA_HEAD
from mcp_server.db.types import MONEY_SCALE
from mcp_server.enums import ExecutionStatus
from mcp_server.errors import Conflict, InvalidArgument
from mcp_server.models import (
    ExecutionCheck,
    LLMMetrics,
    ProcessDefinition,
    ProcessExecution,
    ProcessState,
    Project,
    PromptVersion,
)
from mcp_server.repositories import ProcessDefinitionRepository
from mcp_server.repositories.projects import MAX_SPENT_UNITS
from mcp_server.repositories.rows import RowRepository
from mcp_server.services import dag
from mcp_server.services.bundle_rows import NOTHING_WRITTEN, checked

FORMAT = "pipeline-state-bundle"
# 2: ``check`` records (execution checks). The schema revision cannot say whether a bundle may carry them
# (revision 0010 added the table before bundles carried it), so the format version does.
FORMAT_VERSION = 2
# Table name -> the kind a record of it carries, in the order rows must be inserted (foreign keys).
KINDS: dict[str, Table] = {
    "definition": ProcessDefinition.__table__,  # type: ignore[dict-item]
    "project": Project.__table__,  # type: ignore[dict-item]
    "prompt_version": PromptVersion.__table__,  # type: ignore[dict-item]
    "execution": ProcessExecution.__table__,  # type: ignore[dict-item]
    "check": ExecutionCheck.__table__,  # type: ignore[dict-item]
    "state": ProcessState.__table__,  # type: ignore[dict-item]
    "cost": LLMMetrics.__table__,  # type: ignore[dict-item]
}
# The kinds each readable format version carries: a version 1 bundle (no checks) is still read.
KINDS_OF_VERSION: dict[int, tuple[str, ...]] = {
    1: tuple(kind for kind in KINDS if kind != "check"),
    FORMAT_VERSION: tuple(KINDS),
}
MAX_CLASHES_NAMED = 20
FIRST_REVISION = "0001"


def _dump(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def _record(kind: str, row: Any) -> dict[str, Any]:
    return {"kind": kind, **{name: _dump(value) for name, value in row._mapping.items()}}


def _key(table: Table, values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(values[column.name] for column in table.primary_key.columns)


def _named(table: Table, values: dict[str, Any]) -> str:
    return "/".join(str(part) for part in _key(table, values))


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
    checks = await repo.where_in(KINDS["check"], "project_id", found)
    states = await repo.where_in(KINDS["state"], "project_id", found)
    costs = await repo.where_in(KINDS["cost"], "project_id", found)
    prompt_ids = {row.prompt_version_id for row in [*executions, *costs] if row.prompt_version_id is not None}
    prompts = await repo.where_in(KINDS["prompt_version"], "id", prompt_ids)
    chosen = {
        "definition": definitions,
        "project": projects,
        "prompt_version": prompts,
        "execution": executions,
        "check": checks,
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


@dataclass
class Row:
    """One checked record: its kind, the line it came from, and the row to store (column -> value)."""

    kind: str
    line: int
    values: dict[str, Any]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse(line: str, number: int) -> dict[str, Any]:
    try:
        record = json.loads(line, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidArgument(f"line {number} is nested too deeply to read", hint=NOTHING_WRITTEN) from None
    except ValueError as exc:  # not JSON, NaN/Infinity, an integer of thousands of digits
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)[:200]
        raise InvalidArgument(f"line {number} is not JSON: {reason}", hint=NOTHING_WRITTEN) from None
    if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
        raise InvalidArgument(f"line {number} is not a bundle record (no kind)", hint=NOTHING_WRITTEN)
    return record


def _revision_known(revision: Any) -> bool:
    return (
        isinstance(revision, str)
        and len(revision) == len(SCHEMA_HEAD)
        and revision.isdigit()
        and FIRST_REVISION <= revision <= SCHEMA_HEAD
    )


def _check_header(record: dict[str, Any]) -> dict[str, Any]:
    if record["kind"] != "header" or record.get("format") != FORMAT:
        raise InvalidArgument("the first line is not a pipeline-state bundle header", hint=NOTHING_WRITTEN)
    version = record.get("format_version")
    if type(version) is not int or version not in KINDS_OF_VERSION:
        raise InvalidArgument(
            f"bundle format version {str(version)[:20]} is not one this server reads "
            f"({', '.join(map(str, KINDS_OF_VERSION))})",
            hint="Nothing was written. Import it with the pipeline-state-mcp version that exported it, or a newer one",
        )
    kinds = KINDS_OF_VERSION[version]
    revision = record.get("schema_revision")
    if not _revision_known(revision):
        raise InvalidArgument(
            f"the bundle was written at schema revision {str(revision)[:20]!r}, which this server does not know "
            f"(it reads {FIRST_REVISION} to {SCHEMA_HEAD})",
            hint="Nothing was written. Import it with the pipeline-state-mcp version that exported it, or a newer one",
        )
    counts = record.get("counts")
    if (
        not isinstance(counts, dict)
        or not set(counts) <= set(kinds)
        or not all(type(count) is int and count >= 0 for count in counts.values())
    ):
        raise InvalidArgument(
            f"the bundle header's counts are not a count of rows per kind ({', '.join(kinds)}, in format "
            f"version {version})",
            hint=NOTHING_WRITTEN,
        )
    return record


def _check_counts(header: dict[str, Any], rows: Sequence[Row]) -> None:
    found = Counter(row.kind for row in rows)
    wrong = [kind for kind in KINDS if header["counts"].get(kind, 0) != found[kind]]
    if wrong:
        said = ", ".join(f"{header['counts'].get(kind, 0)} {kind}" for kind in wrong)
        there = ", ".join(f"{found[kind]} {kind}" for kind in wrong)
        raise InvalidArgument(
            f"the bundle is incomplete or altered: its header counts {said} row(s), but {there} follow",
            hint="Nothing was written. Export it again (a copy cut short is refused whole)",
        )


def read(lines: Iterable[str]) -> tuple[dict[str, Any], list[Row]]:
    """The header and the checked rows of a bundle (InvalidArgument naming the line)."""
    header: dict[str, Any] | None = None
    rows: list[Row] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _parse(line, number)
        if header is None:
            header = _check_header(record)
            continue
        kind = record["kind"]
        if kind not in KINDS_OF_VERSION[header["format_version"]]:
            raise InvalidArgument(
                f"line {number}: unknown kind {kind[:50]!r} (in format version {header['format_version']})",
                hint=NOTHING_WRITTEN,
            )
        rows.append(Row(kind, number, checked(kind, record, number)))
    if header is None:
        raise InvalidArgument("the bundle is empty", hint="Nothing was written")
    _check_counts(header, rows)
    return header, rows


def _refused(row: Row, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"line {row.line}: {row.kind} {_named(KINDS[row.kind], row.values)} {problem}", hint=NOTHING_WRITTEN
    )


def _by_kind(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """The rows grouped by kind; the same row twice in one bundle is refused."""
    grouped: dict[str, list[Row]] = {kind: [] for kind in KINDS}
    seen: set[tuple[Any, ...]] = set()
    for row in rows:
        key = (row.kind, *_key(KINDS[row.kind], row.values))
        if key in seen:
            raise _refused(row, "is in the bundle twice")
        seen.add(key)
        grouped[row.kind].append(row)
    return grouped


def _figures(grouped: dict[str, list[Row]]) -> dict[Any, dict[str, Any]]:
    """What each project's spent, unpriced calls and reserve are, recomputed from its rows in the bundle;
    a figure the bundle leaves out (an older revision) is filled in."""
    spent: dict[Any, Decimal] = defaultdict(Decimal)
    unpriced: Counter[Any] = Counter()
    reserved: dict[Any, Decimal] = defaultdict(Decimal)
    for row in grouped["cost"]:
        cost, project = row.values["cost_usd"], row.values["project_id"]
        if cost is None:
            unpriced[project] += 1
        else:
            spent[project] += cost
    for row in grouped["execution"]:
        reserved[row.values["project_id"]] += row.values["reserved_usd"] or 0
    figures: dict[Any, dict[str, Any]] = {}
    for row in grouped["project"]:
        pid = row.values["id"]
        figures[pid] = {"spent_usd": spent[pid], "unpriced_calls": unpriced[pid], "reserved_usd": reserved[pid]}
        for name, value in figures[pid].items():
            if row.values[name] is None:
                row.values[name] = value
    return figures


def _check_figures(projects: list[Row], figures: dict[Any, dict[str, Any]]) -> None:
    """A project the bundle adds says what its rows make, never a figure of its own."""
    for row in projects:
        for name, value in figures[row.values["id"]].items():
            if row.values[name] != value:
                raise _refused(
                    row, f"says {name} {_dump(row.values[name])}, but its rows in the bundle make {_dump(value)}"
                )
        if row.values["spent_usd"] * MONEY_SCALE > MAX_SPENT_UNITS:
            raise _refused(row, "costs more than one project can hold")


def _differ(present: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The columns where the stored row and the bundle's differ (as both engines give values back)."""
    return sorted(name for name, value in values.items() if present.get(name) != value)


async def _classify(session: AsyncSession, grouped: dict[str, list[Row]], report: ImportReport) -> dict[str, list[Row]]:
    """The rows not yet here; rows here and identical are counted unchanged; rows here and different are
    refused together, each named (Conflict)."""
    repo = RowRepository(session)
    new: dict[str, list[Row]] = {kind: [] for kind in KINDS}
    clashes: list[str] = []
    for kind, table in KINDS.items():
        if not grouped[kind]:
            continue
        keys = [column.name for column in table.primary_key.columns]
        wanted = [{key: row.values[key] for key in keys} for row in grouped[kind]]
        stored = {
            _key(table, dict(found._mapping)): dict(found._mapping) for found in await repo.by_keys(table, wanted)
        }
        for row in grouped[kind]:
            present = stored.get(_key(table, row.values))
            if present is None:
                new[kind].append(row)
            elif differ := _differ(present, row.values):
                clashes.append(f"{kind} {_named(table, row.values)} differs in {', '.join(differ)}")
            else:
                report.unchanged[kind] = report.unchanged.get(kind, 0) + 1
    if clashes:
        named = "; ".join(clashes[:MAX_CLASHES_NAMED]) + (
            f"; and {len(clashes) - MAX_CLASHES_NAMED} more" if len(clashes) > MAX_CLASHES_NAMED else ""
        )
        raise Conflict(
            f"{len(clashes)} row(s) of the bundle clash with this database: {named}",
            hint="Nothing was written. A row with the same id must have the same content (and a pipeline step "
            "the same definition); import into another database, or export again from the source",
        )
    return new


async def _catalogues(session: AsyncSession, new: list[Row], pipelines: set[str]) -> dict[str, set[str]]:
    """The steps of each pipeline once the new definitions join those here (a DAG, dependencies known)."""
    repo = ProcessDefinitionRepository(session)
    added: dict[str, list[Row]] = defaultdict(list)
    for row in new:
        added[row.values["pipeline_id"]].append(row)
    steps: dict[str, set[str]] = {}
    for pipeline in sorted(pipelines | set(added)):
        if added[pipeline]:
            await repo.lock_catalogue(pipeline)
        graph = {node.id: list(node.depends_on) for node in await repo.list_nodes(pipeline)}
        graph.update({row.values["id"]: row.values["depends_on"] for row in added[pipeline]})
        for row in added[pipeline]:
            unknown = sorted(set(row.values["depends_on"]) - set(graph))
            if unknown:
                raise _refused(row, f"depends on {unknown}, which pipeline {pipeline!r} does not define")
        cycle = dag.find_cycle(graph)
        if cycle is not None:
            raise InvalidArgument(
                f"the bundle's definitions would make a cycle in pipeline {pipeline!r}: {' -> '.join(cycle)}",
                hint="Nothing was written. A pipeline must be a DAG, with the definitions already here too",
            )
        steps[pipeline] = set(graph)
    return steps


async def _check_owners(session: AsyncSession, new: dict[str, list[Row]]) -> dict[Any, str]:
    """Every new execution, check, state and cost row belongs to a project the bundle adds: rows are never added
    to a project already here (they would change its history, budget and holds). Returns the new
    projects' pipelines."""
    adding = {row.values["id"]: row.values["pipeline_id"] for row in new["project"]}
    strays = [
        row
        for kind in ("execution", "check", "state", "cost")
        for row in new[kind]
        if row.values["project_id"] is not None and row.values["project_id"] not in adding
    ]
    if strays:
        wanted = [{"id": pid} for pid in {row.values["project_id"] for row in strays}]
        here = {found.id for found in await RowRepository(session).by_keys(KINDS["project"], wanted)}
        row = strays[0]
        pid = row.values["project_id"]
        if pid in here:
            raise Conflict(
                f"line {row.line}: {row.kind} {_named(KINDS[row.kind], row.values)} would be added to project {pid}, "
                f"which is already here ({len(strays)} such row(s))",
                hint="Nothing was written. An import adds whole projects and never changes one that exists: the "
                "rows of a project already here must be identical to the stored ones",
            )
        raise _refused(row, f"belongs to project {pid}, which is neither in the bundle nor here")
    return adding


async def _known_prompts(session: AsyncSession, grouped: dict[str, list[Row]], new: dict[str, list[Row]]) -> set[Any]:
    """The prompt versions the new rows refer to that exist (in the bundle or here)."""
    known = {row.values["id"] for row in grouped["prompt_version"]}
    asked = {row.values["prompt_version_id"] for kind in ("execution", "cost") for row in new[kind]} - known - {None}
    if asked:
        found = await RowRepository(session).by_keys(KINDS["prompt_version"], [{"id": pid} for pid in asked])
        known |= {row.id for row in found}
    return known


def _check_executions(new: dict[str, list[Row]], steps: dict[Any, set[str]], prompts: set[Any]) -> dict[Any, Row]:
    """Each new execution runs a step of its project's pipeline, with a prompt version that exists."""
    executions: dict[Any, Row] = {}
    for row in new["execution"]:
        if row.values["process_id"] not in steps[row.values["project_id"]]:
            raise _refused(row, f"runs step {row.values['process_id']!r}, which its project's pipeline does not define")
        if row.values["prompt_version_id"] not in prompts | {None}:
            raise _refused(row, f"uses prompt version {row.values['prompt_version_id']}, which does not exist")
        executions[row.values["id"]] = row
    for row in new["cost"]:
        execution = executions.get(row.values["execution_id"])
        if row.values["execution_id"] is not None and (
            execution is None or execution.values["project_id"] != row.values["project_id"]
        ):
            raise _refused(row, f"is the cost of execution {row.values['execution_id']}, not one of its project's")
        if row.values["prompt_version_id"] not in prompts | {None}:
            raise _refused(row, f"names prompt version {row.values['prompt_version_id']}, which does not exist")
    return executions


def _check_checks(new: dict[str, list[Row]], executions: dict[Any, Row]) -> None:
    """Each new check is of a finished execution the bundle adds, of the same project and step (a check
    never reaches another project's execution: a forged one would release or hold that project's steps),
    and names a check once per execution."""
    named: set[tuple[Any, str]] = set()
    for row in new["check"]:
        execution = executions.get(row.values["execution_id"])
        if execution is None:
            raise _refused(row, f"is a check of execution {row.values['execution_id']}, which the bundle does not add")
        if execution.values["project_id"] != row.values["project_id"]:
            raise _refused(
                row,
                f"is a check of execution {row.values['execution_id']}, which is of project "
                f"{execution.values['project_id']}, not of the check's project {row.values['project_id']}",
            )
        if execution.values["process_id"] != row.values["process_id"]:
            raise _refused(
                row,
                f"names step {row.values['process_id']!r}, but its execution {row.values['execution_id']} ran "
                f"{execution.values['process_id']!r}",
            )
        if execution.values["status"] in (ExecutionStatus.RUNNING.value, ExecutionStatus.PENDING.value):
            raise _refused(
                row,
                f"is a check of execution {row.values['execution_id']}, which is still "
                f"{execution.values['status']} (only a finished execution is checked)",
            )
        key = (row.values["execution_id"], row.values["name"])
        if key in named:
            raise _refused(row, f"is a second check {row.values['name']!r} of execution {row.values['execution_id']}")
        named.add(key)


def _check_states(new: dict[str, list[Row]], steps: dict[Any, set[str]], executions: dict[Any, Row]) -> None:
    """One state per step of the project's pipeline, and one for every step that has run; its current
    execution is one of that step's; a running step has a running execution (to finish or fail); its
    version counts at least one write per execution (each start or one-call record raises it)."""
    runs: Counter[tuple[Any, str]] = Counter()
    running: set[tuple[Any, str]] = set()
    for execution in executions.values():
        step = (execution.values["project_id"], execution.values["process_id"])
        runs[step] += 1
        if execution.values["status"] == "running":
            running.add(step)
    seen: set[tuple[Any, str]] = set()
    for row in new["state"]:
        step = (row.values["project_id"], row.values["process_id"])
        if step[1] not in steps[step[0]]:
            raise _refused(row, f"is the state of step {step[1]!r}, which its project's pipeline does not define")
        if step in seen:
            raise _refused(row, f"is a second state of step {step[1]!r}")
        seen.add(step)
        current = executions.get(row.values["current_execution_id"])
        if row.values["current_execution_id"] is not None and (
            current is None or (current.values["project_id"], current.values["process_id"]) != step
        ):
            raise _refused(row, f"points at execution {row.values['current_execution_id']}, not one of this step's")
        if row.values["state"] == "running" and step not in running:
            raise _refused(row, "is running, but no execution of its step is")
        if row.values["version"] < runs[step]:
            raise _refused(row, f"has version {row.values['version']}, below the {runs[step]} execution(s) of its step")
    stateless = [row for row in new["execution"] if (row.values["project_id"], row.values["process_id"]) not in seen]
    if stateless:
        raise _refused(stateless[0], "ran a step that has no state in the bundle")


async def load(session: AsyncSession, rows: Sequence[Row]) -> ImportReport:
    """Insert what is new, skip what is identical; refuse (naming the rows, writing nothing) what clashes,
    breaks a rule the tools keep, or would change a project already here."""
    grouped = _by_kind(rows)
    figures = _figures(grouped)
    report = ImportReport()
    new = await _classify(session, grouped, report)
    adding = await _check_owners(session, new)
    _check_figures(new["project"], figures)
    catalogues = await _catalogues(session, new["definition"], set(adding.values()))
    steps = {pid: catalogues[pipeline] for pid, pipeline in adding.items()}
    executions = _check_executions(new, steps, await _known_prompts(session, grouped, new))
    _check_checks(new, executions)
    _check_states(new, steps, executions)
    repo = RowRepository(session)
    for kind, chosen in new.items():
        if chosen:
            await repo.insert(KINDS[kind], [row.values for row in chosen])
            report.inserted[kind] = len(chosen)
    return report
