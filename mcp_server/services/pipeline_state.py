"""A project's pipeline as loaded for one call, and the atomic state changes applied to it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.types import utcnow
from mcp_server.errors import Conflict, NotFound, NotReady
from mcp_server.models import Project
from mcp_server.repositories import ExecutionRepository, ProjectRepository, StateRepository
from mcp_server.repositories.checks import CheckRepository, CheckRow
from mcp_server.repositories.processes import Node
from mcp_server.repositories.states import StateChange, StateRow
from mcp_server.schemas.pipeline import InvalidatedOut
from mcp_server.services import catalogue as catalogues
from mcp_server.services import rules
from mcp_server.services.catalogue import Catalogue
from mcp_server.services.projects import project_not_found
from mcp_server.services.rules import State
from mcp_server.services.validation import json_hash

# What start_execution and get_process_state hand over of the dependencies' outputs, in all.
INPUTS_LIMIT = 64 * 1024


@dataclass
class ProjectPipeline:
    """A project, its pipeline's catalogue and its state rows: every row, or (``scope``) those of the steps
    one write reads (see ``Catalogue.around``); a step of the scope without a row is empty."""

    project: Project
    catalogue: Catalogue
    rows: dict[str, StateRow] = field(default_factory=dict)
    scope: set[str] | None = None
    prices_token: str | None = None  # read with the project, for the cost this call may log
    shared_budget: bool = False  # read with the project: its pipeline has a budget all its projects share
    checks: dict[uuid.UUID, dict[str, CheckRow]] = field(default_factory=dict)  # read_checks: by execution

    @property
    def project_id(self) -> uuid.UUID:
        return self.project.id

    @property
    def definitions(self) -> dict[str, Node]:
        return self.catalogue.nodes

    @property
    def graph(self) -> dict[str, list[str]]:
        return self.catalogue.graph

    @property
    def order(self) -> list[str]:
        """Process ids in the order to run them: topological, ties by order_index then id."""
        return self.catalogue.order

    @property
    def position(self) -> dict[str, int]:
        return self.catalogue.position

    def state(self, process_id: str) -> State:
        row = self.rows.get(process_id)
        return State.EMPTY if row is None else State(row.state)

    def version(self, process_id: str) -> int:
        row = self.rows.get(process_id)
        return 0 if row is None else row.version

    def states(self) -> dict[str, State]:
        """Each step's state: every step of the pipeline, or of the scope."""
        return {pid: self.state(pid) for pid in (self.definitions if self.scope is None else self.scope)}

    def definition(self, process_id: str) -> Node:
        definition = self.definitions.get(process_id)
        if definition is None:
            raise NotFound(
                f"process {process_id!r} is not defined in pipeline {self.project.pipeline_id!r}",
                hint=f"list_processes(pipeline_id={self.project.pipeline_id!r}) shows the project's pipeline",
            )
        return definition

    def check_version(self, process_id: str, expected_version: int | None) -> None:
        current = self.version(process_id)
        if expected_version is not None and expected_version != current:
            raise Conflict(
                f"process {process_id!r} is at version {current}, not {expected_version}",
                hint=f"Re-read it (get_process_state) and retry with expected_version={current}",
                details={"process_id": process_id, "current_version": current, "state": self.state(process_id)},
            )

    def verdicts(self) -> dict[str, rules.Verdict]:
        """Each loaded completed step that requires checks with the ones its current execution has not
        passed (read_checks read them; a step whose checks were not read is judged by none)."""
        found: dict[str, rules.Verdict] = {}
        for pid, row in self.rows.items():
            node = self.definitions.get(pid)
            if node is None or not node.required_checks or row.state != State.COMPLETED.value:
                continue
            if row.current_execution_id not in self.checks:
                continue
            results = {
                name: rules.CheckResult(check.passed, check_summary(check.details))
                for name, check in self.checks[row.current_execution_id].items()
            }
            if held := rules.verdict(node.required_checks, results):
                found[pid] = held
        return found

    def check_ready(self, process_id: str, *, force: bool) -> None:
        """Refused (not_ready) while a dependency is not completed or is held by its checks (read_checks
        first), unless ``force``."""
        blocking = rules.blockers(self.graph, self.states(), process_id)
        checks = rules.check_blockers(self.graph, self.verdicts(), process_id)
        if (blocking or checks) and not force:
            listed = ", ".join([*(f"{dep} ({state.value})" for dep, state in blocking.items()), *checks])
            raise NotReady(
                f"process {process_id!r} is blocked by {listed}",
                hint="Complete those first (get_pipeline_status lists what can run; record_check records a "
                "check), or pass force=true",
                details={
                    "blocked_by": [{"process_id": d, "state": s.value} for d, s in blocking.items()],
                    **({"checks": checks} if checks else {}),
                },
            )


SUMMARY_CHARS = 120  # of a failed check's details, where a blocked step names it


def check_summary(details: Any) -> str | None:
    """What a failed check said, short: its details' `summary` (or `message`, or `reason`) when a string,
    else the details as compact JSON, clipped."""
    if details is None:
        return None
    said = [
        details[k]
        for k in ("summary", "message", "reason")
        if isinstance(details, dict) and isinstance(details.get(k), str)
    ]
    text = said[0] if said else json.dumps(details, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


async def read_checks(
    session: AsyncSession, pipeline: ProjectPipeline, steps: Iterable[str] | None = None, *, every: bool = False
) -> None:
    """The check results of the current executions of the loaded steps (of ``steps``, when given) that
    require checks, or (``every``) of all of them (docs/design.md, "Checks"): one query, and none in a
    pipeline without required checks or when no such step has a current execution."""
    if not pipeline.catalogue.checked:
        return
    wanted = {
        row.current_execution_id
        for pid in (pipeline.rows if steps is None else steps)
        if (row := pipeline.rows.get(pid)) is not None
        and row.current_execution_id is not None
        and row.current_execution_id not in pipeline.checks
        and (node := pipeline.definitions.get(pid)) is not None
        and (every or node.required_checks)
    }
    if not wanted:
        return
    for execution_id in wanted:
        pipeline.checks[execution_id] = {}
    for check in await CheckRepository(session).of_executions(wanted):
        pipeline.checks[check.execution_id][check.name] = check


async def runnable_dependants(session: AsyncSession, pipeline: ProjectPipeline, process_id: str) -> list[str]:
    """The dependants of a step that can run now (their dependencies completed and passed their checks;
    themselves neither completed nor running), in run order: their other dependencies' rows and checks
    read in one query each, only when needed."""
    below = pipeline.catalogue.dependents.get(process_id, [])
    above = {dep for pid in below for dep in pipeline.definitions[pid].depends_on}
    needed = above - set(pipeline.rows)
    if needed:
        extra = await StateRepository(session).rows(pipeline.project_id, needed)
        pipeline.rows.update({row.process_id: row for row in extra})
    await read_checks(session, pipeline, above)
    states = {pid: pipeline.state(pid) for pid in {*below, *needed, *pipeline.rows}}
    holds = pipeline.verdicts()
    ready = [pid for pid in below if rules.can_run_next(pipeline.graph, states, pid, holds)]
    return sorted(ready, key=pipeline.position.__getitem__)


async def load(
    session: AsyncSession,
    project_id: uuid.UUID,
    *,
    lock: bool,
    around: str | None = None,
    include_deleted: bool = False,
) -> ProjectPipeline:
    """The project (not deleted, unless asked), its pipeline's catalogue and its state rows: all of them,
    or with ``around`` those a write to that step reads (itself, its dependencies, its dependents).

    With ``lock`` the project's pipeline writers are serialised first (and its catalogue held), so what
    is read here cannot change before this transaction commits (version and cascade are applied
    atomically). Two or three statements; the catalogue is read only when it changed (services.catalogue).
    """
    locked_pipeline = await StateRepository(session).lock_project_and_catalogue(project_id) if lock else None
    found = await ProjectRepository(session).get_with_tokens(project_id, include_deleted=include_deleted)
    if found is None:
        raise project_not_found(project_id, include_deleted=include_deleted)
    project, token, prices_token, shared = found
    if locked_pipeline is not None and locked_pipeline != project.pipeline_id:
        raise Conflict(f"project {project_id} moved to another pipeline while this call ran", hint="Retry the call")
    catalogue = await catalogues.load(session, project.pipeline_id, token)
    scope = None if around is None or around not in catalogue.nodes else catalogue.around(around)
    pipeline = ProjectPipeline(
        project=project, catalogue=catalogue, scope=scope, prices_token=prices_token, shared_budget=shared
    )
    pipeline.rows = {row.process_id: row for row in await StateRepository(session).rows(project_id, scope)}
    return pipeline


async def apply(session: AsyncSession, pipeline: ProjectPipeline, process_id: str, change: StateChange) -> StateRow:
    """One state change (version + 1), checked against the version read."""
    repo = StateRepository(session)
    row = pipeline.rows.get(process_id)
    if row is None:
        row = pipeline.rows[process_id] = await repo.create(pipeline.project_id, process_id, change)
        return row
    if not await repo.compare_and_set(row, change):
        raise Conflict(f"process {process_id!r} changed while this call ran", hint="Retry the call")
    return row


async def cascade(session: AsyncSession, pipeline: ProjectPipeline, root: str, reason: str) -> list[InvalidatedOut]:
    """Every completed, failed or running transitive dependent of ``root`` goes stale, root cause kept;
    listed in the order to redo them.

    One UPDATE for all of them: the project's writers are serialised, so the rows read at the start of
    this call are the rows updated, and each version still rises by exactly one."""
    hits = sorted(
        rules.cascade(pipeline.graph, pipeline.states(), root, reverse=pipeline.catalogue.dependents),
        key=lambda h: pipeline.position[h.process_id],
    )
    if not hits:
        return []
    rows = [pipeline.rows[hit.process_id] for hit in hits]
    change = StateChange(State.STALE, utcnow(), invalidated_by=root, reason=reason)
    await StateRepository(session).bump_all(rows, change)
    return [
        InvalidatedOut(process_id=hit.process_id, previous_state=hit.previous.value, version=row.version)
        for hit, row in zip(hits, rows, strict=True)
    ]


def stale_downstream(pipeline: ProjectPipeline, root: str) -> list[str]:
    """The transitive dependents of ``root`` that are stale already (from an earlier change), in the order
    to redo them: a call that leaves them stale says so."""
    below = pipeline.catalogue.descendants(root)
    return sorted((pid for pid in below if pipeline.state(pid) == State.STALE), key=pipeline.position.__getitem__)


async def mark_stale(
    session: AsyncSession,
    pipeline: ProjectPipeline,
    hits: list[rules.Invalidation],
    changed: dict[str, list[str]] | None = None,
) -> None:
    """Apply what ``rules.stale_after_redefinition`` decided: one UPDATE per cause (and per reason). The
    reason names what changed in the cause's definition (``changed``: its fields, by process id) and what
    to re-run, so an agent can act on it."""
    now = utcnow()
    groups: dict[tuple[str, bool], list[StateRow]] = {}
    for hit in hits:
        groups.setdefault((hit.cause, hit.process_id == hit.cause), []).append(pipeline.rows[hit.process_id])
    for (cause, itself), rows in groups.items():
        what = ", ".join((changed or {}).get(cause, ())) or "what it computes"
        reason = (
            f"the definition of {cause!r} changed ({what}): its output was made under the old one; re-run it"
            if itself
            else f"upstream {cause!r} definition changed ({what}): re-run from {cause!r}"
        )
        await StateRepository(session).bump_all(
            rows, StateChange(State.STALE, now, invalidated_by=cause, reason=reason)
        )


@dataclass
class Inputs:
    """The dependencies' current outputs by process id, and those too large to hand over (their executions)."""

    outputs: dict[str, Any] = field(default_factory=dict)
    omitted: dict[str, uuid.UUID] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """As HandedInputs' fields: absent rather than empty."""
        return {"inputs": self.outputs or None, "inputs_omitted": self.omitted or None}


def input_key(
    pipeline: ProjectPipeline,
    process_id: str,
    input_hash: str,
    prompt_version_id: uuid.UUID | None,
    schemas: tuple[Any, Any],
) -> str:
    """What an execution of the step computes from, hashed (docs/design.md, "Data model"): its input
    (``input_hash``, worked out before the lock), the content of each dependency's current output (its
    hash), the step's definition as far as it decides what is computed (dependencies, input and output
    schemas) and the prompt version. Two executions with the same key did the same work."""
    node = pipeline.definition(process_id)
    handed = {
        dep: (row.current_hash if (row := pipeline.rows.get(dep)) is not None else None) for dep in node.depends_on
    }
    definition = {"depends_on": sorted(node.depends_on), "input_schema": schemas[0], "output_schema": schemas[1]}
    prompt = None if prompt_version_id is None else str(prompt_version_id)
    return json_hash({"input": input_hash, "handed": handed, "definition": definition, "prompt": prompt})


def lineage(pipeline: ProjectPipeline, process_id: str) -> dict[str, str] | None:
    """Which execution's output each dependency hands the step now (docs/design.md, "Data model"): stored
    with the execution as ``inputs_from``; None for a step without dependencies that ran."""
    handed = {
        dep: str(row.current_execution_id)
        for dep in pipeline.definition(process_id).depends_on
        if (row := pipeline.rows.get(dep)) is not None and row.current_execution_id is not None
    }
    return handed or None


async def inputs_of(session: AsyncSession, pipeline: ProjectPipeline, process_id: str) -> Inputs:
    """Each dependency's current output_data (docs/design.md, "MCP surface"), in dependency order while
    they fit in INPUTS_LIMIT together; the rest are named with their execution ids, to fetch with get_execution."""
    current = {
        dep: row.current_execution_id
        for dep in sorted(pipeline.definition(process_id).depends_on, key=lambda d: pipeline.position.get(d, 0))
        if (row := pipeline.rows.get(dep)) is not None and row.current_execution_id is not None
    }
    outputs = await ExecutionRepository(session).outputs(current.values())
    handed = Inputs()
    room = INPUTS_LIMIT
    for dep, execution_id in current.items():
        output = outputs.get(execution_id)
        size = len(json.dumps(output, separators=(",", ":"), ensure_ascii=False).encode())
        if size <= room:
            handed.outputs[dep] = output
            room -= size
        else:
            handed.omitted[dep] = execution_id
    return handed
