"""Live state over MCP: titles, completions, list changes and resource updates, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from mcp import Client
from mcp_types import Completion, PromptReference, ResourceTemplateReference

from mcp_server.db.engine import Database
from mcp_server.models import Project
from tests.helpers import call_ok

pytestmark = pytest.mark.anyio


async def test_every_tool_resource_and_template_has_a_title(client: Client) -> None:
    tools = (await client.list_tools()).tools
    resources = (await client.list_resources()).resources
    templates = (await client.list_resource_templates()).resource_templates
    assert tools and resources and templates
    for item in [*tools, *resources, *templates]:
        assert item.title and item.title.strip() and len(item.title) <= 40, item.name
    assert {tool.title for tool in tools} >= {"Record execution", "Get pipeline status"}
    assert all(tool.annotations and tool.annotations.title == tool.title for tool in tools)


async def _complete(client: Client, uri: str, name: str, value: str, **given: str) -> Completion:
    ref = ResourceTemplateReference(uri=uri)
    return (await client.complete(ref, {"name": name, "value": value}, given or None)).completion


async def test_completion_answers_project_ids_by_prefix_and_by_name_newest_first(client: Client) -> None:
    made = [await call_ok(client, "create_project", name=f"Report {n}") for n in range(3)]
    other = await call_ok(client, "create_project", name="Inventory")
    ids = [project["id"] for project in made]
    by_name = await _complete(client, "pipeline://projects/{project_id}", "project_id", "rep")
    assert by_name.values == ids[::-1] and by_name.total == 3 and by_name.has_more is False
    prefix = other["id"][:6]
    by_id = await _complete(client, "pipeline://projects/{project_id}/graph", "project_id", prefix)
    assert other["id"] in by_id.values
    assert all(value.startswith(prefix) for value in by_id.values)
    dashed = await _complete(client, "pipeline://projects/{project_id}", "project_id", other["id"][:13])
    assert dashed.values == [other["id"]]
    everything = await _complete(client, "pipeline://projects/{project_id}", "project_id", "")
    assert everything.values[0] == other["id"] and len(everything.values) == 4
    none = await _complete(client, "pipeline://projects/{project_id}", "project_id", "zz-no-such")
    assert none.values == [] and none.total == 0 and none.has_more is False


async def test_completion_is_bounded_at_100_values_with_has_more(client: Client, db: Database) -> None:
    async with db.unit_of_work() as session:
        session.add_all(Project(name=f"bulk {n:03}") for n in range(150))
    found = await _complete(client, "pipeline://projects/{project_id}", "project_id", "bulk")
    assert len(found.values) == 100 and found.has_more is True and found.total == 150


async def test_completion_answers_execution_ids_of_the_given_project_and_pipeline_ids(client: Client) -> None:
    project = (await call_ok(client, "create_project", name="p"))["id"]
    other = (await call_ok(client, "create_project", name="q"))["id"]
    await call_ok(client, "define_process", process_id="draft", name="Draft")
    runs = [
        (await call_ok(client, "record_execution", project_id=pid, process_id="draft", output_data={"n": 1}))[
            "execution"
        ]
        for pid in (project, other)
    ]
    uri = "pipeline://executions/{execution_id}"
    mine = await _complete(client, uri, "execution_id", "", project_id=project)
    assert mine.values == [runs[0]["id"]]
    typed = runs[1]["id"][:8]
    assert runs[1]["id"] in (await _complete(client, uri, "execution_id", typed)).values
    await call_ok(client, "define_process", process_id="a", name="A", pipeline_id="etl-nightly")
    await call_ok(client, "define_process", process_id="a", name="A", pipeline_id="etl-hourly")
    pipelines = await _complete(client, "pipeline://pipelines/{pipeline_id}", "pipeline_id", "etl-")
    assert pipelines.values == ["etl-hourly", "etl-nightly"] and pipelines.total == 2
    wild = await _complete(client, "pipeline://pipelines/{pipeline_id}", "pipeline_id", "etl%")
    assert wild.values == []


async def test_completion_of_prompt_arguments_and_of_unknown_arguments(client: Client) -> None:
    project = (await call_ok(client, "create_project", name="Prompted"))["id"]
    await call_ok(client, "save_prompt_version", prompt_id="review", user_template="Review {{project_id}} {{tone}}")
    ref = PromptReference(name="review")
    found = (await client.complete(ref, {"name": "project_id", "value": "Promp"})).completion
    assert found.values == [project]
    assert (await client.complete(ref, {"name": "tone", "value": "f"})).completion.values == []
    caps = client.server_capabilities
    assert caps is not None and caps.completions is not None
