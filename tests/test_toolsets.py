"""PIPELINE_STATE_TOOLSETS and PIPELINE_STATE_READ_ONLY decide which tools exist."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_server.db.engine import Database
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import CONTRACT_TOOLSETS, call_error, call_ok, table_counts

pytestmark = pytest.mark.anyio

TOOLSETS = {name: set(tools) for name, tools in CONTRACT_TOOLSETS.items()}
ALL_TOOLS = set().union(*TOOLSETS.values())
READERS = {
    "get_project",
    "list_projects",
    "list_processes",
    "list_pipelines",
    "get_execution",
    "list_executions",
    "get_process_state",
    "get_pipeline_status",
    "get_prompt_version",
    "list_prompt_versions",
    "get_cost_summary",
}
# One valid call per writer of the projects and prompts toolsets (ids filled in by the test).
WRITER_CALLS: dict[str, dict[str, Any]] = {
    "create_project": {"name": "new"},
    "update_project": {"name": "renamed"},
    "delete_project": {},
    "restore_project": {},
    "save_prompt_version": {"prompt_id": "p", "user_template": "changed"},
}


def _settings(db_url: str, **options: Any) -> Settings:
    return Settings(database_url=db_url, auto_migrate=False, **options)


async def _tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


async def test_by_default_every_tool_of_the_spec_is_listed(client: Client) -> None:
    assert await _tool_names(client) == ALL_TOOLS


@pytest.mark.parametrize("toolset", sorted(TOOLSETS))
async def test_one_toolset_lists_only_its_tools_and_hides_the_rest(db_url: str, db: Database, toolset: str) -> None:
    async with Client(build_server(_settings(db_url, toolsets=toolset))) as client:
        assert await _tool_names(client) == TOOLSETS[toolset]
        counts = await table_counts(db)
        hidden = "save_prompt_version" if toolset != "prompts" else "create_project"
        arguments = WRITER_CALLS[hidden]
        text = await call_error(client, hidden, "not_found", **arguments)
        assert "tools/list" in text
        assert await table_counts(db) == counts


async def test_prompts_toolset_alone_still_works(db_url: str) -> None:
    async with Client(build_server(_settings(db_url, toolsets="prompts"))) as client:
        saved = await call_ok(client, "save_prompt_version", prompt_id="p", user_template="{{x}}")
        assert saved["version"] == 1
        await call_error(client, "list_projects", "not_found")


async def test_toolsets_combine(db_url: str) -> None:
    async with Client(build_server(_settings(db_url, toolsets="projects, prompts"))) as client:
        assert await _tool_names(client) == TOOLSETS["projects"] | TOOLSETS["prompts"]


async def test_toolsets_and_read_only_come_from_the_environment(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_STATE_TOOLSETS", "prompts")
    monkeypatch.setenv("PIPELINE_STATE_READ_ONLY", "true")
    async with Client(build_server(Settings(database_url=db_url, auto_migrate=False))) as client:
        assert await _tool_names(client) == {"get_prompt_version", "list_prompt_versions"}


async def test_read_only_lists_only_tools_that_do_not_write(db_url: str) -> None:
    async with Client(build_server(_settings(db_url, read_only=True))) as client:
        tools = (await client.list_tools()).tools
    assert {tool.name for tool in tools} == READERS
    for tool in tools:
        assert tool.annotations is not None and tool.annotations.read_only_hint is True, tool.name
        assert tool.annotations.destructive_hint is False, tool.name


async def test_read_only_refuses_every_writer_and_writes_nothing(db_url: str, db: Database) -> None:
    async with Client(build_server(_settings(db_url))) as writer:
        project = await call_ok(writer, "create_project", name="kept")
        prompt = await call_ok(writer, "save_prompt_version", prompt_id="p", user_template="{{x}}")
    counts = await table_counts(db)
    async with Client(build_server(_settings(db_url, read_only=True))) as client:
        for tool, arguments in WRITER_CALLS.items():
            if tool in ("update_project", "delete_project", "restore_project"):
                arguments = {"project_id": project["id"], **arguments}
            text = await call_error(client, tool, "read_only", **arguments)
            assert tool in text
        # Refused before argument validation: a read-only server never runs a writer at all.
        await call_error(client, "create_project", "read_only")
        await call_error(client, "record_execution", "read_only", project_id=str(uuid.uuid4()))
        await call_error(client, "report_cost", "read_only")
        assert await table_counts(db) == counts
        assert await call_ok(client, "get_project", project_id=project["id"]) == project
        latest = await call_ok(client, "get_prompt_version", prompt_id="p")
        assert (latest["version"], latest["user_template"]) == (1, prompt["user_template"])
        # MCP prompts only read, so a read-only server still serves them.
        assert [p.name for p in (await client.list_prompts()).prompts] == ["p"]


async def test_read_only_with_one_toolset_hides_the_other_toolsets_as_unknown(db_url: str) -> None:
    async with Client(build_server(_settings(db_url, toolsets="prompts", read_only=True))) as client:
        assert await _tool_names(client) == {"get_prompt_version", "list_prompt_versions"}
        await call_error(client, "save_prompt_version", "read_only", prompt_id="p", user_template="x")
        await call_error(client, "create_project", "not_found", name="x")


async def test_mcp_prompts_follow_the_prompts_toolset(db_url: str) -> None:
    async with Client(build_server(_settings(db_url))) as client:
        await call_ok(client, "save_prompt_version", prompt_id="greet", user_template="Hi {{name}}")
        assert [p.name for p in (await client.list_prompts()).prompts] == ["greet"]
    async with Client(build_server(_settings(db_url, toolsets="projects,pipeline"))) as client:
        assert (await client.list_prompts()).prompts == []
        with pytest.raises(MCPError, match="not_found"):
            await client.get_prompt("greet", {"name": "x"})
