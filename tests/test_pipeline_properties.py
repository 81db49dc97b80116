"""Property test: random DAGs and random start/record/fail/invalidate sequences through the real engine.

Invariants after every operation: a refused operation changes nothing; every version rises by exactly
one per state change; every stale state's invalidated_by_process_id is the process itself (manual) or an
ancestor; the status lists no blockers iff every dependency is completed, and can_run and plan agree
with the states; `empty` never becomes `stale`.
Runs on SQLite (one file; each example gets its own processes and project).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_server.db.engine import Database
from mcp_server.errors import DomainError
from mcp_server.repositories import StateRepository
from mcp_server.services import dag, definitions, executions, projects, status
from tests.conftest import fresh_sqlite_url

OPS = ("start", "record", "record_same", "finish", "fail", "invalidate")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[int, list[int]], list[tuple[str, int, bool]]]:
    size = draw(st.integers(2, 6))
    graph = {i: sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(size)}
    ops = draw(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, size - 1), st.booleans()), max_size=30))
    return graph, ops


Snapshot = dict[str, tuple[str, int, str | None]]


async def snapshot(db: Database, project_id: uuid.UUID) -> Snapshot:
    async with db.unit_of_work(write=False) as session:
        rows = await StateRepository(session).list_for_project(project_id)
        return {r.process_id: (r.state, r.version, r.invalidated_by_process_id) for r in rows}


async def run(db: Database, graph: dict[int, list[int]], ops: list[tuple[str, int, bool]]) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}_"
    name = {i: f"{prefix}{i}" for i in graph}
    deps = {name[i]: [name[d] for d in ds] for i, ds in graph.items()}
    async with db.unit_of_work() as session:
        for i in sorted(graph):
            changes = {"name": name[i], "depends_on": deps[name[i]]}
            await definitions.define(
                session, pipeline_id="default", process_id=name[i], changes=changes, clear=[], actor=None
            )
        project = await projects.create(
            session, name="prop", description=None, metadata=None, budget_usd=None, actor=None
        )
    running: dict[str, uuid.UUID] = {}
    counter = 0
    for op, index, force in ops:
        pid = name[index]
        before = await snapshot(db, project.id)
        counter += 1
        call: dict[str, Any] = {"project_id": project.id, "process_id": pid}
        try:
            async with db.unit_of_work() as session:
                if op == "start":
                    reply = await executions.start(
                        session, **call, input_data={}, prompt_version_id=None, expected_version=None,
                        idempotency_key=None, force=force, actor=None,
                    )  # fmt: skip
                    running[pid] = reply.execution.id
                elif op in ("record", "record_same", "finish"):
                    execution_id = running.get(pid) if op == "finish" else None
                    await executions.record(
                        session, **call, output_data={"v": 0 if op == "record_same" else counter},
                        input_data=None, execution_id=execution_id, reasoning=None, missing_info=None,
                        prompt_version_id=None, usage=None, expected_version=None, idempotency_key=None,
                        force=force, actor=None,
                    )  # fmt: skip
                elif op == "fail" and pid in running:
                    await executions.fail(session, execution_id=running[pid], error_message="boom", actor=None)
                elif op == "invalidate":
                    await executions.invalidate(session, **call, reason="prop", expected_version=None)
        except DomainError:
            assert await snapshot(db, project.id) == before, f"refused {op} on {pid} changed state"
            continue
        after = await snapshot(db, project.id)
        check_invariants(deps, before, after, target=pid)
        async with db.unit_of_work(write=False) as session:
            pipeline = await status.pipeline_status(session, project.id)
        states = {p.process_id: p.state for p in pipeline.processes}
        for p in pipeline.processes:
            if p.process_id not in deps:  # the catalogue is shared with earlier examples
                continue
            ready = all(states[d] == "completed" for d in deps[p.process_id])
            assert (not p.blocked_by) == ready
            assert p.can_run == (ready and p.state not in ("completed", "running"))
            assert (p.process_id in pipeline.plan) == (p.state != "completed")


def check_invariants(graph: dict[str, list[str]], before: Snapshot, after: Snapshot, *, target: str) -> None:
    for pid, (state, version, cause) in after.items():
        old_state, old_version, old_cause = before.get(pid, ("empty", 0, None))
        if state == "stale" and old_state != "stale":
            # Went stale in this operation: the root cause is the operated process, never an intermediate.
            assert cause == target, f"{pid}: stale because of {cause}, but {target} changed"
        if (state, cause) != (old_state, old_cause):
            assert version == old_version + 1, f"{pid}: {old_state}->{state} moved version {old_version}->{version}"
        else:
            assert version - old_version in (0, 1), f"{pid}: version jumped {old_version}->{version}"
        if old_state == "empty":
            assert state != "stale", f"{pid}: empty became stale"
        if state == "stale":
            assert cause == pid or cause in dag.ancestors(graph, pid), f"{pid}: stale because of {cause}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_random_sequences_keep_the_invariants(
    scenario: tuple[dict[int, list[int]], list[tuple[str, int, bool]]], sqlite_template: Path, tmp_path: Path
) -> None:
    url = fresh_sqlite_url(sqlite_template, tmp_path) if not (tmp_path / "state.db").exists() else None
    url = url or f"sqlite:///{tmp_path / 'state.db'}"

    async def main() -> None:
        db = Database.connect(url)
        try:
            await run(db, *scenario)
        finally:
            await db.dispose()

    asyncio.run(main())
