"""Process definitions, pipeline by pipeline: define (create or replace), apply a whole pipeline, list in
topological order, delete; a definition that changes what a step computes makes its results stale."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.enums import DEFAULT_PIPELINE
from mcp_server.errors import Conflict, InvalidArgument, NotFound
from mcp_server.models import ProcessDefinition
from mcp_server.repositories import (
    DefinitionChange,
    PipelineBudgetRepository,
    ProcessDefinitionRepository,
    RevisionRepository,
    revisions,
)
from mcp_server.schemas.pipeline import (
    MAX_LISTED,
    ApplyReply,
    DefineProcessReply,
    DeletedProcess,
    PipelineBudgetIn,
    PipelineList,
    PipelineOut,
    ProcessDefinitionOut,
    ProcessList,
    ProcessSpec,
)
from mcp_server.services import costs, dag, periods, pipeline_state, rules
from mcp_server.services.validation import check_schema


class _Ordered(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def order_index(self) -> int: ...
    @property
    def depends_on(self) -> list[str]: ...


T = TypeVar("T", bound=_Ordered)


def ordered(definitions: list[T]) -> list[T]:
    """Definitions (or nodes) in topological order, ties by order_index then id."""
    by_id = {d.id: d for d in definitions}
    graph = {d.id: list(d.depends_on) for d in definitions}
    order = dag.topological_order(graph, {d.id: d.order_index for d in definitions})
    return [by_id[pid] for pid in order]


# Process ids an error message names at most (a reply stays small whatever the catalogue or the call).
MAX_NAMED = 20


def _named(ids: list[str]) -> str:
    """``ids`` as a list, the first ``MAX_NAMED`` of them, saying how many more there are."""
    more = len(ids) - MAX_NAMED
    return f"{ids[:MAX_NAMED]}" + (f" and {more} more" if more > 0 else "")


def _listed(names: list[str]) -> str:
    more = len(names) - MAX_NAMED
    return ", ".join(names[:MAX_NAMED]) + (f" and {more} more" if more > 0 else "")


def _path(cycle: list[str]) -> str:
    """A cycle as ``a -> b -> a``, its middle left out past ``MAX_NAMED`` steps."""
    if len(cycle) <= MAX_NAMED:
        return " -> ".join(cycle)
    half = MAX_NAMED // 2
    return f"{' -> '.join(cycle[:half])} -> … ({len(cycle) - 2 * half} more) -> {' -> '.join(cycle[-half:])}"


# What a process computes: a change to any of these makes its results (and everything downstream) stale.
COMPUTING = ("depends_on", "input_schema", "output_schema")


@dataclass
class _Plan:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    recomputing: list[str] = field(default_factory=list)  # changed in what they compute
    removed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # removals a real apply refuses (they have executions)
    unchanged: int = 0
    fields: dict[str, list[str]] = field(default_factory=dict)  # process id -> the fields a replacement changes
    stale_states: int = 0
    stale_projects: int = 0
    stale_steps: dict[str, None] = field(default_factory=dict)  # which steps go stale somewhere, in order
    stale_by_project: dict[str, list[str]] = field(default_factory=dict)  # the first MAX_LISTED projects


def _fields(spec: ProcessSpec) -> DefinitionChange:
    return {
        "name": spec.name,
        "depends_on": list(dict.fromkeys(spec.depends_on)),
        "order_index": spec.order_index,
        "description": spec.description,
        "input_schema": spec.input_schema,
        "output_schema": spec.output_schema,
        "max_attempts": spec.max_attempts,
        "retry_backoff_seconds": spec.retry_backoff_seconds,
        "timeout_seconds": spec.timeout_seconds,
        "reuse": spec.reuse,
        "reuse_ttl_seconds": spec.reuse_ttl_seconds,
        "required_checks": list(dict.fromkeys(spec.required_checks)) or None,
    }


def _merged(
    process_id: str, existing: ProcessDefinition | None, changes: dict[str, Any], clear: list[str]
) -> ProcessSpec:
    both = sorted(set(changes) & set(clear))
    if both:
        raise InvalidArgument(f"{both} given and cleared at once", hint="Give a field or clear it, not both")
    if existing is None:
        if "name" not in changes:
            raise InvalidArgument(f"process {process_id!r} is new: give it a name", hint="Pass name")
        return ProcessSpec(process_id=process_id, **changes)
    defaults = ProcessSpec(process_id=process_id, name=existing.name)
    kept = {name: getattr(existing, name) for name in _fields(defaults)}
    kept["required_checks"] = kept["required_checks"] or []  # stored None when there are none
    kept |= {name: getattr(defaults, name) for name in clear}
    return ProcessSpec.model_validate({"process_id": process_id, **kept, **changes})


def _check_specs(specs: list[ProcessSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.process_id in seen:
            raise InvalidArgument(f"process {spec.process_id!r} is given twice", hint="Give each process once")
        seen.add(spec.process_id)
        for name, schema in (("input_schema", spec.input_schema), ("output_schema", spec.output_schema)):
            if schema is not None:
                check_schema(schema, field=name if len(specs) == 1 else f"{spec.process_id}.{name}")
        if spec.process_id in spec.depends_on:
            pid = spec.process_id
            raise InvalidArgument(f"process {pid!r} cannot depend on itself: {pid} -> {pid}")


async def _check_pipeline_exists(repo: ProcessDefinitionRepository, pipeline_id: str) -> None:
    if pipeline_id != DEFAULT_PIPELINE and not await repo.exists(pipeline_id):
        raise NotFound(
            f"pipeline {pipeline_id!r} does not exist",
            hint=f"Known pipelines: {_listed(sorted({DEFAULT_PIPELINE, *await repo.pipelines()}))}; "
            "define a process in a new pipeline to create it",
        )


async def _apply(
    session: AsyncSession,
    pipeline_id: str,
    specs: list[ProcessSpec],
    *,
    complete: bool,
    dry_run: bool,
    actor: str | None,
) -> tuple[_Plan, dict[str, ProcessDefinition]]:
    """Bring the pipeline's catalogue to ``specs`` (with ``complete``, deleting the processes they leave
    out) in this transaction: checked as a whole first (schemas, dependencies in the same pipeline, a DAG,
    no removal of what has executions or dependents), then written, then every project state the changed
    definitions make stale goes stale with its cascade. With ``dry_run`` only the plan is computed."""
    _check_specs(specs)
    repo = ProcessDefinitionRepository(session)
    await repo.lock_catalogue(pipeline_id)
    existing = {node.id: node for node in await repo.list_nodes(pipeline_id)}  # the DAG only: no schemas decoded
    wanted = {spec.process_id: spec for spec in specs}
    plan = _Plan(removed=sorted(set(existing) - set(wanted)) if complete else [])
    graph = {pid: list(node.depends_on) for pid, node in existing.items() if pid not in plan.removed}
    graph.update({pid: _fields(spec)["depends_on"] for pid, spec in wanted.items()})
    _check_graph(pipeline_id, graph, plan.removed)
    if plan.removed:
        await _check_removals(repo, pipeline_id, graph, plan, dry_run=dry_run)
    current = await _plan_changes(repo, pipeline_id, wanted, set(existing), plan)
    written = {} if dry_run else await _write(session, repo, pipeline_id, wanted, current, plan, actor=actor)
    if plan.recomputing:
        await _mark_stale(session, repo, pipeline_id, graph, plan, dry_run=dry_run)
    return plan, written


def _check_graph(pipeline_id: str, graph: dict[str, list[str]], removed: list[str]) -> None:
    """Every dependency in the new catalogue's graph is one of its processes (a removed one is left to
    _check_removals, which refuses it), and the graph is a DAG."""
    unknown = sorted({dep for deps in graph.values() for dep in deps if dep not in graph} - set(removed))
    if unknown:
        raise InvalidArgument(
            f"unknown dependencies {_named(unknown)} in pipeline {pipeline_id!r}",
            hint="Dependencies name processes of the same pipeline: define those first (or fix the ids); "
            "list_processes shows the catalogue",
        )
    cycle = dag.find_cycle(graph)
    if cycle is not None:
        raise InvalidArgument(f"depends_on would create a cycle: {_path(cycle)}", hint="A pipeline must be a DAG")


async def _check_removals(
    repo: ProcessDefinitionRepository, pipeline_id: str, graph: dict[str, list[str]], plan: _Plan, *, dry_run: bool
) -> None:
    """The processes ``plan`` removes are no one's dependencies and have no executions; a dry run notes
    those with executions in ``plan.blocked`` instead of refusing."""
    needed = sorted({pid for pid in plan.removed for deps in graph.values() if pid in deps})
    if needed:
        raise Conflict(
            f"processes {_named(needed)} are still dependencies of others", hint="Remove their dependents too"
        )
    used = await repo.with_executions(pipeline_id, plan.removed)
    if used and dry_run:
        plan.blocked = used  # a dry run says what applying would refuse, and plans the rest
    elif used:
        raise Conflict(
            f"processes {_named(used)} have executions; their history cannot be deleted",
            hint="Keep them in the pipeline (a definition can be replaced, not its history)",
        )


async def _plan_changes(
    repo: ProcessDefinitionRepository,
    pipeline_id: str,
    wanted: dict[str, ProcessSpec],
    existing: set[str],
    plan: _Plan,
) -> dict[str, ProcessDefinition | None]:
    """Each wanted process against its current definition, into ``plan`` (added, or changed in which
    fields, recomputing, or unchanged); returns the current rows, read one by one in ``wanted``'s order."""
    current = {pid: await repo.get(pipeline_id, pid) for pid in wanted if pid in existing}
    for pid, spec in wanted.items():
        row = current.get(pid)
        if row is None:
            plan.added.append(pid)
            continue
        differ = [name for name, value in _fields(spec).items() if getattr(row, name) != value]
        if differ:
            plan.changed.append(pid)
            plan.fields[pid] = differ
            if any(name in COMPUTING for name in differ):
                plan.recomputing.append(pid)
        else:
            plan.unchanged += 1
    return current


async def _write(
    session: AsyncSession,
    repo: ProcessDefinitionRepository,
    pipeline_id: str,
    wanted: dict[str, ProcessSpec],
    current: dict[str, ProcessDefinition | None],
    plan: _Plan,
    *,
    actor: str | None,
) -> dict[str, ProcessDefinition]:
    """Carry out ``plan``: delete the removed processes, create the added, update the changed, and bump
    the catalogue's revision if anything changed; returns every wanted process's definition."""
    written: dict[str, ProcessDefinition] = {}
    if plan.removed:
        await repo.delete(pipeline_id, plan.removed)
    for pid, spec in wanted.items():
        row = current.get(pid)
        if row is None:
            written[pid] = await repo.create(
                pipeline_id=pipeline_id, id=pid, created_by=actor, updated_by=actor, **_fields(spec)
            )
        elif pid in plan.changed:
            written[pid] = await repo.update(row, updated_by=actor, **_fields(spec))
        else:
            written[pid] = row
    if plan.added or plan.changed or plan.removed:
        await RevisionRepository(session).bump([revisions.catalogue(pipeline_id)])
    return written


async def _mark_stale(
    session: AsyncSession,
    repo: ProcessDefinitionRepository,
    pipeline_id: str,
    graph: dict[str, list[str]],
    plan: _Plan,
    *,
    dry_run: bool,
) -> None:
    """Every state of a recomputing process that is completed, failed or running goes stale (cause: the
    process itself), and the usual cascade runs downstream, project by project."""
    reach = sorted(set(plan.recomputing) | set(dag.descendants(graph, plan.recomputing)))
    cascade_from = [state.value for state in rules.CASCADE_FROM]
    # The new catalogue's graph (a dry run has not written it), each project's states read under its lock.
    order = dag.topological_order(graph, {})
    for project_id in await repo.projects_with_states(pipeline_id, reach, cascade_from):
        pipeline = await pipeline_state.load(session, project_id, lock=True, include_deleted=True)
        states = {pid: pipeline.state(pid) for pid in graph}
        hits = rules.stale_after_redefinition(graph, states, order, plan.recomputing)
        if not hits:
            continue
        plan.stale_states += len(hits)
        plan.stale_projects += 1
        plan.stale_steps.update(dict.fromkeys(hit.process_id for hit in hits))
        if len(plan.stale_by_project) < MAX_LISTED:
            plan.stale_by_project[str(project_id)] = [hit.process_id for hit in hits][:MAX_LISTED]
        if not dry_run:
            computing = {pid: [name for name in fields if name in COMPUTING] for pid, fields in plan.fields.items()}
            await pipeline_state.mark_stale(session, pipeline, hits, computing)


async def define(
    session: AsyncSession,
    *,
    pipeline_id: str,
    process_id: str,
    changes: dict[str, Any],
    clear: list[str],
    actor: str | None,
) -> DefineProcessReply:
    """Create a step, or change the fields given of an existing one: fields left out keep their value,
    those in ``clear`` go back to their defaults. Read and written under the catalogue's lock, so two
    agents changing different fields of one step at once both land."""
    repo = ProcessDefinitionRepository(session)
    await repo.lock_catalogue(pipeline_id)
    existing = await repo.get(pipeline_id, process_id)
    spec = _merged(process_id, existing, changes, clear)
    plan, _ = await _apply(session, pipeline_id, [spec], complete=False, dry_run=False, actor=actor)
    recomputed = bool(plan.recomputing)
    return DefineProcessReply(
        pipeline_id=pipeline_id,
        process_id=spec.process_id,
        created=bool(plan.added),
        changed=plan.fields.get(spec.process_id),
        stale_states=plan.stale_states if recomputed else None,
        stale_projects=plan.stale_projects if recomputed else None,
        stale_by_project=plan.stale_by_project or None,
    )


async def apply(
    session: AsyncSession,
    *,
    pipeline_id: str,
    specs: list[ProcessSpec],
    dry_run: bool,
    actor: str | None,
    budget: PipelineBudgetIn | None = None,
) -> ApplyReply:
    """The whole pipeline at once: add, replace, and delete what ``specs`` leave out
    (docs/design.md, "MCP surface"); with ``budget``, the budget all its projects share
    (docs/design.md, "Costs and budgets")."""
    plan, _ = await _apply(session, pipeline_id, specs, complete=True, dry_run=dry_run, actor=actor)
    shared = None
    if budget is not None:
        period = periods.check(budget.period)
        repo = PipelineBudgetRepository(session)
        if dry_run:
            pass  # checked above; a dry run writes nothing
        elif budget.budget_usd is None:
            await repo.remove(pipeline_id)
        else:
            fields = {"budget_usd": budget.budget_usd, "budget_policy": str(budget.policy), "budget_period": period}
            await repo.put(pipeline_id, actor=actor, **fields)
        found = await costs.shared_budget(session, pipeline_id)
        shared = None if found is None else costs.shared_status(found)
    return ApplyReply(
        pipeline_id=pipeline_id,
        dry_run=dry_run,
        added=plan.added,
        changed=plan.changed,
        removed=plan.removed,
        blocked=plan.blocked or None,
        unchanged=plan.unchanged,
        stale_states=plan.stale_states,
        stale_projects=plan.stale_projects,
        stale_steps=list(plan.stale_steps)[:MAX_LISTED] or None,
        stale_by_project=plan.stale_by_project or None,
        budget=shared,
    )


async def list_all(
    session: AsyncSession,
    pipeline_id: str = DEFAULT_PIPELINE,
    *,
    include_schemas: bool = True,
    page: int = 1,
    page_size: int | None = None,
) -> ProcessList:
    """The catalogue in topological order: one page of it, or all of it when ``page_size`` is None."""
    repo = ProcessDefinitionRepository(session)
    rows = ordered(await repo.list_all(pipeline_id))
    if not rows:
        await _check_pipeline_exists(repo, pipeline_id)
    first = (page - 1) * page_size if page_size else 0
    chosen = rows[first : first + page_size] if page_size else rows
    items = [ProcessDefinitionOut.model_validate(d) for d in chosen]
    if not include_schemas:
        items = [item.model_copy(update={"input_schema": None, "output_schema": None}) for item in items]
    return ProcessList(
        pipeline_id=pipeline_id,
        items=items,
        schemas_included=include_schemas,
        total=len(rows),
        page=page,
        has_more=bool(page_size) and first + len(chosen) < len(rows),
    )


async def pipelines(session: AsyncSession, *, page: int = 1, page_size: int = 100) -> PipelineList:
    """Every pipeline (``default`` always), by id, one page at a time."""
    counts = await ProcessDefinitionRepository(session).pipelines()
    counts.setdefault(DEFAULT_PIPELINE, (0, 0))
    first = (page - 1) * page_size
    chosen = sorted(counts.items())[first : first + page_size]
    budgets = await PipelineBudgetRepository(session).many([pid for pid, _ in chosen])
    shared = {pid: found for pid in budgets if (found := await costs.shared_budget(session, pid)) is not None}
    return PipelineList(
        items=[
            PipelineOut(
                pipeline_id=pid,
                processes=processes,
                projects=projects,
                budget=costs.shared_status(shared[pid]) if pid in shared else None,
            )
            for pid, (processes, projects) in chosen
        ],
        total=len(counts),
        page=page,
        has_more=first + len(chosen) < len(counts),
    )


async def check_pipeline(session: AsyncSession, pipeline_id: str) -> None:
    """``not_found`` naming the known pipelines, unless this one exists."""
    await _check_pipeline_exists(ProcessDefinitionRepository(session), pipeline_id)


async def delete(session: AsyncSession, process_id: str, pipeline_id: str = DEFAULT_PIPELINE) -> DeletedProcess:
    repo = ProcessDefinitionRepository(session)
    await repo.lock_catalogue(pipeline_id)
    definitions = await repo.list_nodes(pipeline_id)
    if not any(d.id == process_id for d in definitions):
        await _check_pipeline_exists(repo, pipeline_id)
        raise NotFound(
            f"process {process_id!r} is not defined in pipeline {pipeline_id!r}",
            hint="list_processes shows the catalogue",
        )
    dependents = sorted(d.id for d in definitions if process_id in d.depends_on)
    if dependents:
        raise Conflict(
            f"process {process_id!r} has dependents {_named(dependents)}",
            hint="Delete or redefine the dependents without it first",
        )
    if await repo.with_executions(pipeline_id, [process_id]):
        raise Conflict(
            f"process {process_id!r} has executions; its history cannot be deleted",
            hint="Keep it, or redefine it (define_process replaces name, schemas and dependencies)",
        )
    await repo.delete(pipeline_id, [process_id])
    await RevisionRepository(session).bump([revisions.catalogue(pipeline_id)])
    return DeletedProcess(pipeline_id=pipeline_id, process_id=process_id, deleted=True)
