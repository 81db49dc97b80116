"""The DB-agnostic types round-trip on both databases."""

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from mcp_server.db.engine import Database
from mcp_server.db.types import money_to_units, units_to_money
from mcp_server.models import LLMMetrics, ProcessDefinition, Project

pytestmark = pytest.mark.anyio

NESTED = {"名前": "テスト", "list": [1, 2.5, None, {"deep": ["ü", "🚀"]}], "flag": True, "none": None}


async def test_guid_json_and_metadata_round_trip(db: Database) -> None:
    project_id = uuid.uuid4()
    async with db.unit_of_work() as session:
        session.add(Project(id=project_id, name="rt", metadata_=NESTED))
    async with db.unit_of_work(write=False) as session:
        project = await session.get(Project, project_id)
        assert project is not None
        assert project.id == project_id
        assert isinstance(project.id, uuid.UUID)
        assert project.metadata_ == NESTED
        assert project.description is None
        assert project.budget_usd is None


async def test_arrays_and_null_json_round_trip(db: Database) -> None:
    async with db.unit_of_work() as session:
        session.add(ProcessDefinition(id="a", name="A", depends_on=[], input_schema=None))
        session.add(ProcessDefinition(id="b", name="B", depends_on=["a", "ä-ß"], output_schema={"type": "object"}))
    async with db.unit_of_work(write=False) as session:
        a = await session.get(ProcessDefinition, ("default", "a"))
        b = await session.get(ProcessDefinition, ("default", "b"))
        assert a is not None and b is not None
        assert a.depends_on == [] and a.input_schema is None
        assert b.depends_on == ["a", "ä-ß"] and b.output_schema == {"type": "object"}


async def test_timestamps_are_timezone_aware_utc(db: Database) -> None:
    moment = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    async with db.unit_of_work() as session:
        project = Project(name="tz")
        session.add(project)
        await session.flush()
        project.deleted_at = moment
        project_id = project.id
    async with db.unit_of_work(write=False) as session:
        loaded = await session.get(Project, project_id)
        assert loaded is not None
        assert loaded.created_at.tzinfo is not None
        assert loaded.deleted_at == moment
        assert loaded.deleted_at is not None and loaded.deleted_at.utcoffset() == timedelta(0)
        assert abs(loaded.created_at - datetime.now(UTC)) < timedelta(minutes=5)


def test_money_units_are_exact() -> None:
    assert money_to_units(Decimal("0.1")) + money_to_units(Decimal("0.2")) == money_to_units(Decimal("0.3"))
    assert units_to_money(money_to_units("0.0000001")) == Decimal("0.0000001")
    assert money_to_units("0.00000000005") == 0  # half-even below the 1e-10 quantum
    assert money_to_units("0.00000000015") == 2


async def test_money_sums_exactly_in_sql(db: Database) -> None:
    async with db.unit_of_work() as session:
        for _ in range(1000):
            session.add(LLMMetrics(provider="p", model="m", cost_usd=Decimal("0.001"), cost_source="reported"))
        session.add(LLMMetrics(provider="p", model="m", cost_usd=Decimal("0.1"), cost_source="reported"))
        session.add(LLMMetrics(provider="p", model="m", cost_usd=0.2, cost_source="reported"))
    async with db.unit_of_work(write=False) as session:
        total = await session.scalar(select(func.sum(LLMMetrics.cost_usd)))
        assert total == Decimal("1.3")
        assert str(total.normalize()) == "1.3"
