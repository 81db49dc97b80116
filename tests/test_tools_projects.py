"""The projects toolset through the SDK's in-memory client, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any
from unittest.mock import ANY

import pytest
from mcp import Client
from mcp_types import Implementation

from mcp_server.db.engine import Database
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import CONTRACT_TOOLSETS, call_error, call_ok, table_counts

pytestmark = pytest.mark.anyio

PROJECT_TOOLS = set(CONTRACT_TOOLSETS["projects"])


async def _create(client: Client, name: str = "alpha", **fields: Any) -> dict[str, Any]:
    return await call_ok(client, "create_project", name=name, **fields)


async def _assert_unchanged(client: Client, db: Database, project: dict[str, Any], counts: dict[str, int]) -> None:
    """A failed call wrote nothing: same row counts, and the project reads back as before."""
    assert await table_counts(db) == counts
    assert await call_ok(client, "get_project", project_id=project["id"]) == project


async def test_create_project_returns_a_draft_with_its_fields(client: Client) -> None:
    project = await _create(
        client, name="  Report  ", description="quarterly", metadata={"team": ["a", "b"]}, budget_usd="2.50"
    )
    uuid.UUID(project["id"])
    assert project["name"] == "Report"
    assert project["description"] == "quarterly"
    assert project["status"] == "draft"
    assert project["metadata"] == {"team": ["a", "b"]}
    assert project["is_deleted"] is False
    assert "deleted_at" not in project  # replies leave null fields out


async def test_budget_reads_back_exactly_as_it_was_written(client: Client) -> None:
    created = await _create(client, budget_usd="12.50")
    assert created["budget_usd"] == "12.5"
    assert (await call_ok(client, "get_project", project_id=created["id"]))["budget_usd"] == "12.5"
    updated = await call_ok(client, "update_project", project_id=created["id"], budget_usd="0.0000001")
    assert updated["budget_usd"] == "0.0000001"
    assert (await call_ok(client, "get_project", project_id=created["id"]))["budget_usd"] == "0.0000001"
    assert (await _create(client, budget_usd=100))["budget_usd"] == "100"
    assert "budget_usd" not in await _create(client)


async def test_created_by_and_updated_by_record_the_clients_name_and_version(settings: Settings) -> None:
    async with Client(build_server(settings), client_info=Implementation(name="agent-x", version="1.2")) as client:
        project = await _create(client)
        assert project["created_by"] == project["updated_by"] == "agent-x/1.2"
    async with Client(build_server(settings), client_info=Implementation(name="agent-y", version="3")) as client:
        updated = await call_ok(client, "update_project", project_id=project["id"], status="in_progress")
        assert (updated["created_by"], updated["updated_by"]) == ("agent-x/1.2", "agent-y/3")
        deleted = await call_ok(client, "delete_project", project_id=project["id"])
        assert deleted["updated_by"] == "agent-y/3"


async def test_the_default_in_memory_client_is_recorded_as_mcp(client: Client) -> None:
    # The SDK's ClientSession identifies itself as name "mcp", version "0.1.0" unless told otherwise.
    project = await _create(client)
    assert project["created_by"] == "mcp/0.1.0"


async def test_get_project_returns_what_create_returned(client: Client) -> None:
    project = await _create(client)
    assert await call_ok(client, "get_project", project_id=project["id"]) == project


async def test_get_unknown_project_is_not_found(client: Client, db: Database) -> None:
    counts = await table_counts(db)
    text = await call_error(client, "get_project", "not_found", project_id=str(uuid.uuid4()))
    assert "list_projects" in text
    assert await table_counts(db) == counts


async def test_a_malformed_project_id_is_invalid_argument(client: Client, db: Database) -> None:
    counts = await table_counts(db)
    for bad_id in ("not-a-uuid", "1234", "", "00000000-0000-0000-0000-00000000000g", 42):
        for tool in ("get_project", "update_project", "delete_project", "restore_project"):
            text = await call_error(client, tool, "invalid_argument", project_id=bad_id)
            assert "project_id" in text
    assert await table_counts(db) == counts


async def test_create_project_with_an_empty_name_is_invalid_argument_and_writes_nothing(
    client: Client, db: Database
) -> None:
    counts = await table_counts(db)
    for name in ("", "   "):
        text = await call_error(client, "create_project", "invalid_argument", name=name)
        assert "name" in text
    await call_error(client, "create_project", "invalid_argument")
    await call_error(client, "create_project", "invalid_argument", name="x" * 201)
    await call_error(client, "create_project", "invalid_argument", name="ok", budget_usd=-1)
    await call_error(client, "create_project", "invalid_argument", name="ok", budget_usd="0.12345678901")
    await call_error(client, "create_project", "invalid_argument", name="ok", metadata=["not", "an", "object"])
    assert await table_counts(db) == counts


async def test_list_projects_pages_newest_first(client: Client) -> None:
    created = [(await _create(client, name=f"p{i}"))["id"] for i in range(5)]
    pages = [await call_ok(client, "list_projects", page=page, page_size=2) for page in (1, 2, 3)]
    assert [page["total"] for page in pages] == [5, 5, 5]
    assert [page["has_more"] for page in pages] == [True, True, False]
    assert [len(page["items"]) for page in pages] == [2, 2, 1]
    listed = [item["id"] for page in pages for item in page["items"]]
    assert listed == list(reversed(created))
    beyond = await call_ok(client, "list_projects", page=4, page_size=2)
    assert (beyond["items"], beyond["total"], beyond["has_more"]) == ([], 5, False)
    default = await call_ok(client, "list_projects")
    assert (default["page"], len(default["items"]), default["has_more"]) == (1, 5, False)


async def test_list_projects_filters_by_status(client: Client) -> None:
    draft = await _create(client, name="draft")
    running = await _create(client, name="running")
    await call_ok(client, "update_project", project_id=running["id"], status="in_progress")
    in_progress = await call_ok(client, "list_projects", status="in_progress")
    assert [item["id"] for item in in_progress["items"]] == [running["id"]]
    drafts = await call_ok(client, "list_projects", status="draft")
    assert [item["id"] for item in drafts["items"]] == [draft["id"]]
    assert (await call_ok(client, "list_projects", status="archived"))["total"] == 0


async def test_list_projects_refuses_bad_paging_and_status(client: Client) -> None:
    for field, value in (("page_size", 101), ("page_size", 0), ("page", 0), ("status", "done")):
        text = await call_error(client, "list_projects", "invalid_argument", **{field: value})
        assert f"invalid_argument: {field}:" in text


async def test_update_project_changes_only_the_given_fields(client: Client) -> None:
    project = await _create(client, description="keep me", metadata={"a": 1}, budget_usd="5")
    updated = await call_ok(client, "update_project", project_id=project["id"], name="renamed", status="completed")
    assert updated["name"] == "renamed"
    assert updated["status"] == "completed"
    assert (updated["description"], updated["metadata"], updated["budget_usd"]) == ("keep me", {"a": 1}, "5")
    assert updated["updated_at"] >= project["updated_at"]
    replaced = await call_ok(client, "update_project", project_id=project["id"], metadata={"b": 2})
    assert replaced["metadata"] == {"b": 2}
    assert await call_ok(client, "get_project", project_id=project["id"]) == replaced


async def test_update_project_with_a_bad_argument_is_invalid_argument_and_changes_nothing(
    client: Client, db: Database
) -> None:
    project = await _create(client)
    counts = await table_counts(db)
    bad = [("status", "finished"), ("name", ""), ("name", "   "), ("budget_usd", "-0.01"), ("metadata", "text")]
    for field, value in bad:
        arguments = {"project_id": project["id"], field: value}
        text = await call_error(client, "update_project", "invalid_argument", **arguments)
        assert f"invalid_argument: {field}:" in text
        await _assert_unchanged(client, db, project, counts)


async def test_update_unknown_project_is_not_found(client: Client, db: Database) -> None:
    counts = await table_counts(db)
    await call_error(client, "update_project", "not_found", project_id=str(uuid.uuid4()), name="x")
    assert await table_counts(db) == counts


async def test_delete_is_soft_and_restore_brings_the_project_back(client: Client, db: Database) -> None:
    project = await _create(client)
    counts = await table_counts(db)
    deleted = await call_ok(client, "delete_project", project_id=project["id"])
    assert deleted["is_deleted"] is True
    assert deleted["deleted_at"] is not None
    assert await table_counts(db) == counts  # soft: the row stays

    await call_error(client, "get_project", "not_found", project_id=project["id"])
    assert (await call_ok(client, "list_projects"))["total"] == 0
    with_deleted = await call_ok(client, "list_projects", include_deleted=True)
    assert [item["id"] for item in with_deleted["items"]] == [project["id"]]

    restored = await call_ok(client, "restore_project", project_id=project["id"])
    assert restored["is_deleted"] is False
    assert "deleted_at" not in restored
    assert (restored["name"], restored["status"]) == (project["name"], project["status"])
    assert await call_ok(client, "get_project", project_id=project["id"]) == restored
    assert (await call_ok(client, "list_projects"))["total"] == 1


async def test_a_deleted_project_is_not_found_for_get_update_and_delete(client: Client, db: Database) -> None:
    project = await _create(client)
    await call_ok(client, "delete_project", project_id=project["id"])
    counts = await table_counts(db)
    await call_error(client, "get_project", "not_found", project_id=project["id"])
    await call_error(client, "update_project", "not_found", project_id=project["id"], name="zombie")
    await call_error(client, "delete_project", "not_found", project_id=project["id"])
    assert await table_counts(db) == counts
    listed = await call_ok(client, "list_projects", include_deleted=True)
    assert listed["items"][0]["name"] == project["name"]


async def test_restore_of_a_live_project_returns_it_unchanged(client: Client) -> None:
    project = await _create(client)
    assert await call_ok(client, "restore_project", project_id=project["id"]) == project


async def test_restore_unknown_project_is_not_found(client: Client, db: Database) -> None:
    counts = await table_counts(db)
    await call_error(client, "restore_project", "not_found", project_id=str(uuid.uuid4()))
    assert await table_counts(db) == counts


async def test_tools_list_shows_schemas_and_accurate_annotations(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) >= PROJECT_TOOLS
    expected = {  # read_only, destructive, idempotent
        "create_project": (False, False, False),
        "get_project": (True, False, True),
        "list_projects": (True, False, True),
        "update_project": (False, True, True),
        "delete_project": (False, True, True),
        "restore_project": (False, False, True),
    }
    for name, (read_only, destructive, idempotent) in expected.items():
        tool = tools[name]
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None and "id" in str(tool.output_schema)
        assert tool.annotations is not None
        hints = (tool.annotations.read_only_hint, tool.annotations.destructive_hint, tool.annotations.idempotent_hint)
        assert hints == (read_only, destructive, idempotent), name
        assert tool.annotations.open_world_hint is False
        assert tool.description and not tool.description.startswith(" ")
        assert "\n    " not in tool.description, f"{name}: docstring indentation leaked into the description"
    assert tools["create_project"].input_schema["required"] == ["name"]
    page_size = tools["list_projects"].input_schema["properties"]["page_size"]
    assert page_size == {
        "anyOf": [{"maximum": 100, "minimum": 1, "type": "integer", "description": ANY}, {"type": "null"}]
    }


async def test_update_project_clears_fields_only_when_asked(client: Client) -> None:
    project = await call_ok(client, "create_project", name="c", description="d", budget_usd="5", metadata={"k": 1})
    kept = await call_ok(client, "update_project", project_id=project["id"], description=None, budget_usd=None)
    assert kept["description"] == "d" and kept["budget_usd"] == "5"  # null: unchanged
    cleared = await call_ok(
        client, "update_project", project_id=project["id"], clear=["description", "budget_usd", "metadata"]
    )
    assert "description" not in cleared and "budget_usd" not in cleared and cleared["metadata"] == {}
    text = await call_error(
        client, "update_project", "invalid_argument", project_id=project["id"], budget_usd="2", clear=["budget_usd"]
    )
    assert "both given and cleared" in text
    await call_error(client, "update_project", "invalid_argument", project_id=project["id"], clear=["name"])
