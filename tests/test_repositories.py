"""Repositories on both databases: CRUD, pagination, filters, soft delete, version checks."""

import uuid

import anyio
import pytest

from mcp_server.db.engine import Database
from mcp_server.db.types import utcnow
from mcp_server.errors import Conflict
from mcp_server.models import ProjectStatus, StateName
from mcp_server.repositories import (
    ExecutionRepository,
    ProcessDefinitionRepository,
    ProjectRepository,
    PromptRepository,
    StateRepository,
)
from mcp_server.repositories.states import StateChange
from tests.helpers import table_counts

pytestmark = pytest.mark.anyio


async def test_project_create_get_update(db: Database) -> None:
    async with db.unit_of_work() as session:
        project = await ProjectRepository(session).create(name="alpha", description="first", created_by="t/1")
        project_id = project.id
    async with db.unit_of_work() as session:
        repo = ProjectRepository(session)
        loaded = await repo.get(project_id)
        assert loaded is not None and loaded.name == "alpha" and loaded.status == ProjectStatus.DRAFT
        await repo.update(loaded, status=ProjectStatus.IN_PROGRESS, updated_by="t/2")
    async with db.unit_of_work(write=False) as session:
        again = await ProjectRepository(session).get(project_id)
        assert again is not None and again.status == ProjectStatus.IN_PROGRESS and again.updated_by == "t/2"
        assert await ProjectRepository(session).get(uuid.uuid4()) is None


async def test_project_list_paginates_and_filters(db: Database) -> None:
    async with db.unit_of_work() as session:
        repo = ProjectRepository(session)
        for i in range(7):
            status = ProjectStatus.COMPLETED if i % 3 == 0 else ProjectStatus.DRAFT
            await repo.create(name=f"p{i}", status=status)
    async with db.unit_of_work(write=False) as session:
        repo = ProjectRepository(session)
        first = await repo.list(page=1, page_size=3)
        last = await repo.list(page=3, page_size=3)
        assert first.total == 7 and len(first.items) == 3 and first.has_more
        assert len(last.items) == 1 and not last.has_more
        seen = {p.name for p in first.items} | {p.name for p in (await repo.list(page=2, page_size=3)).items}
        assert len(seen | {p.name for p in last.items}) == 7
        completed = await repo.list(status=ProjectStatus.COMPLETED)
        assert sorted(p.name for p in completed.items) == ["p0", "p3", "p6"]


async def test_soft_deleted_projects_are_invisible_unless_asked_for(db: Database) -> None:
    async with db.unit_of_work() as session:
        repo = ProjectRepository(session)
        keep = await repo.create(name="keep")
        gone = await repo.create(name="gone")
        await repo.soft_delete(gone, by="tester")
        gone_id, keep_id = gone.id, keep.id
    async with db.unit_of_work() as session:
        repo = ProjectRepository(session)
        assert await repo.get(gone_id) is None
        assert [p.id for p in (await repo.list()).items] == [keep_id]
        deleted = await repo.get(gone_id, include_deleted=True)
        assert deleted is not None and deleted.is_deleted and deleted.deleted_at is not None
        assert (await repo.list(include_deleted=True)).total == 2
        await repo.restore(deleted)
    async with db.unit_of_work(write=False) as session:
        restored = await ProjectRepository(session).get(gone_id)
        assert restored is not None and not restored.is_deleted and restored.deleted_at is None


async def test_failed_unit_of_work_writes_nothing(db: Database) -> None:
    class Boom(Exception):
        pass

    try:
        async with db.unit_of_work() as session:
            await ProjectRepository(session).create(name="never")
            raise Boom
    except Boom:
        pass
    async with db.unit_of_work(write=False) as session:
        assert (await ProjectRepository(session).list(include_deleted=True)).total == 0


async def test_state_compare_and_set_refuses_a_stale_version(db: Database) -> None:
    async with db.unit_of_work() as session:
        project = await ProjectRepository(session).create(name="s")
        await ProcessDefinitionRepository(session).create(id="a", name="A", depends_on=[])
        created = await StateRepository(session).create(project.id, "a", StateChange(StateName.EMPTY, utcnow()))
        project_id = project.id
        assert created.version == 1
    async with db.unit_of_work() as session:
        states = StateRepository(session)
        state = await states.get(project_id, "a", for_update=True)
        assert state is not None
        assert await states.compare_and_set(state, StateChange(StateName.RUNNING, utcnow()), expected_version=1)
        assert not await states.compare_and_set(state, StateChange(StateName.FAILED, utcnow()), expected_version=1)
    async with db.unit_of_work(write=False) as session:
        final = await StateRepository(session).get(project_id, "a")
        assert final is not None and (final.version, final.state) == (2, "running")


async def test_executions_list_newest_first_with_filters(db: Database) -> None:
    async with db.unit_of_work() as session:
        project = await ProjectRepository(session).create(name="e")
        await ProcessDefinitionRepository(session).create(id="a", name="A", depends_on=[])
        await ProcessDefinitionRepository(session).create(id="b", name="B", depends_on=["a"])
        executions = ExecutionRepository(session)
        for i in range(3):
            await executions.create(project_id=project.id, process_id="a", input_data={"i": i}, status="completed")
        await executions.create(project_id=project.id, process_id="b", input_data={}, status="failed")
        project_id = project.id
    async with db.unit_of_work(write=False) as session:
        executions = ExecutionRepository(session)
        page = await executions.list(project_id=project_id, process_id="a")
        assert [e.input_data["i"] for e in page.items] == [2, 1, 0]
        failed = await executions.list(project_id=project_id, status="failed")
        assert [e.process_id for e in failed.items] == ["b"]


async def test_prompt_versions_latest_and_listing(db: Database) -> None:
    async with db.unit_of_work() as session:
        prompts = PromptRepository(session)
        for v in (1, 2, 3):
            await prompts.create(prompt_id="summarise", version=v, user_template=f"v{v}", content_hash=f"h{v}")
        await prompts.create(prompt_id="other", version=1, user_template="o", content_hash="o1")
    async with db.unit_of_work(write=False) as session:
        prompts = PromptRepository(session)
        latest = await prompts.latest("summarise")
        assert latest is not None and latest.version == 3
        page = await prompts.list_versions("summarise", page=1, page_size=2)
        assert [p.version for p in page.items] == [3, 2] and page.total == 3
        assert [(p.prompt_id, p.version) for p in await prompts.latest_of_each()] == [("other", 1), ("summarise", 3)]


async def test_a_write_beaten_by_a_concurrent_call_is_a_conflict_where_it_arises(db: Database) -> None:
    """Locks keep these races out of the tools; should one slip through, the repository that wrote says
    `conflict`, naming what, and the unit of work writes nothing. Two transactions run at once: the second
    takes the key the first holds, and fails once the first commits."""
    first_holds = anyio.Event()

    async def first() -> None:
        async with db.unit_of_work() as session:
            await PromptRepository(session).create(prompt_id="raced", version=1, user_template="a", content_hash="a")
            first_holds.set()
            await anyio.sleep(0.3)  # the second is waiting for this transaction meanwhile

    async def second() -> None:
        await first_holds.wait()
        with pytest.raises(Conflict, match="version 1 of prompt 'raced': a concurrent call took the same key first"):
            async with db.unit_of_work() as session:
                await PromptRepository(session).create(
                    prompt_id="raced", version=1, user_template="b", content_hash="b"
                )

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(first)
            group.start_soon(second)
    async with db.unit_of_work(write=False) as session:
        stored = await PromptRepository(session).list_versions("raced", page=1, page_size=10)
        assert [(p.version, p.user_template) for p in stored.items] == [(1, "a")]

    # A row that refers to a project no one committed (deleted meanwhile, say) is a conflict too.
    change = StateChange(StateName.RUNNING, utcnow())
    before = await table_counts(db)
    with pytest.raises(Conflict, match="the state of step 'x': a concurrent call changed what it refers to first"):
        async with db.unit_of_work() as session:
            await StateRepository(session).create(uuid.uuid4(), "x", change)
    assert await table_counts(db) == before
