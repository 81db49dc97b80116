"""The prompts toolset and the MCP prompts built from it, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import Implementation, TextContent
from sqlalchemy import select

from mcp_server.db.engine import Database
from mcp_server.models import PromptVersion
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import call_error, call_ok, table_counts

pytestmark = pytest.mark.anyio


async def _save(client: Client, prompt_id: str = "summarise", **content: Any) -> dict[str, Any]:
    return await call_ok(client, "save_prompt_version", prompt_id=prompt_id, **content)


async def _stored_versions(db: Database, prompt_id: str) -> list[int]:
    async with db.unit_of_work(write=False) as session:
        query = select(PromptVersion.version).where(PromptVersion.prompt_id == prompt_id)
        return sorted(await session.scalars(query))


async def test_versions_count_1_2_3_per_prompt_id(client: Client) -> None:
    first = await _save(client, user_template="v1")
    second = await _save(client, user_template="v2")
    other = await _save(client, "classify", user_template="v1")
    third = await _save(client, user_template="v3", system_prompt="be brief", temperature=0.2)
    assert [first["version"], second["version"], third["version"]] == [1, 2, 3]
    assert other["version"] == 1
    assert all(saved["created"] for saved in (first, second, third, other))
    assert (third["system_prompt"], third["user_template"], third["temperature"]) == ("be brief", "v3", 0.2)
    assert len({first["id"], second["id"], third["id"], other["id"]}) == 4


async def test_identical_content_returns_the_latest_version_and_writes_nothing(client: Client, db: Database) -> None:
    await _save(client, user_template="Hello {{name}}", system_prompt="sys", temperature=0.5)
    latest = await _save(client, user_template="Hello {{name}}!", system_prompt="sys", temperature=0.5)
    counts = await table_counts(db)
    again = await _save(client, user_template="Hello {{name}}!", system_prompt="sys", temperature=0.5)
    assert again["created"] is False
    assert {**again, "created": True} == latest
    assert await table_counts(db) == counts


async def test_content_that_differs_from_the_latest_makes_a_new_version(client: Client) -> None:
    await _save(client, user_template="a")
    await _save(client, user_template="b")
    back_to_a = await _save(client, user_template="a")  # equal to v1, not to the latest
    assert (back_to_a["version"], back_to_a["created"]) == (3, True)
    warmer = await _save(client, user_template="a", temperature=0.9)  # temperature is part of the content
    assert (warmer["version"], warmer["created"]) == (4, True)


async def test_save_records_the_client_or_the_given_author(settings: Settings) -> None:
    async with Client(build_server(settings), client_info=Implementation(name="writer", version="2.0")) as client:
        assert (await _save(client, user_template="x"))["created_by"] == "writer/2.0"
        assert (await _save(client, user_template="y", created_by="alice"))["created_by"] == "alice"


async def test_save_refuses_bad_arguments_and_writes_nothing(client: Client, db: Database) -> None:
    counts = await table_counts(db)
    text = await call_error(client, "save_prompt_version", "invalid_argument", prompt_id="empty")
    assert "system_prompt" in text and "user_template" in text
    for bad_id in ("Has Spaces", "1starts-with-digit", "", "x" * 101):
        text = await call_error(client, "save_prompt_version", "invalid_argument", prompt_id=bad_id, user_template="t")
        assert "prompt_id" in text
    text = await call_error(
        client, "save_prompt_version", "invalid_argument", prompt_id="p", user_template="t", temperature=2.5
    )
    assert "temperature" in text
    # created_by is stored in a VARCHAR(100): longer must be refused up front, not fail in PostgreSQL.
    text = await call_error(
        client, "save_prompt_version", "invalid_argument", prompt_id="p", user_template="t", created_by="z" * 101
    )
    assert "created_by" in text
    assert await table_counts(db) == counts


async def test_get_prompt_version_returns_the_latest_or_the_one_asked_for(client: Client) -> None:
    first = await _save(client, user_template="Hi {{who}}")
    second = await _save(client, user_template="Hello {{who}} from {{where}}")
    latest = await call_ok(client, "get_prompt_version", prompt_id="summarise")
    assert latest == {key: value for key, value in second.items() if key != "created"}
    assert latest["placeholders"] == ["who", "where"]
    one = await call_ok(client, "get_prompt_version", prompt_id="summarise", version=1)
    assert one == {key: value for key, value in first.items() if key != "created"}
    assert one["placeholders"] == ["who"]


async def test_get_unknown_prompt_or_version_is_not_found(client: Client, db: Database) -> None:
    await _save(client, user_template="x")
    counts = await table_counts(db)
    text = await call_error(client, "get_prompt_version", "not_found", prompt_id="nothing")
    assert "'nothing' does not exist" in text
    text = await call_error(client, "get_prompt_version", "not_found", prompt_id="summarise", version=7)
    assert "version 7" in text
    await call_error(client, "get_prompt_version", "invalid_argument", prompt_id="summarise", version=0)
    assert await table_counts(db) == counts


async def test_list_prompt_versions_pages_newest_first(client: Client) -> None:
    for n in range(5):
        await _save(client, user_template=f"v{n + 1}")
    await _save(client, "other", user_template="unrelated")
    pages = [
        await call_ok(client, "list_prompt_versions", prompt_id="summarise", page=page, page_size=2)
        for page in (1, 2, 3)
    ]
    assert [[item["version"] for item in page["items"]] for page in pages] == [[5, 4], [3, 2], [1]]
    assert [page["has_more"] for page in pages] == [True, True, False]
    assert {page["total"] for page in pages} == {5}
    assert (await call_ok(client, "list_prompt_versions", prompt_id="unknown"))["total"] == 0
    await call_error(client, "list_prompt_versions", "invalid_argument", prompt_id="summarise", page_size=101)


async def test_concurrent_saves_from_two_clients_get_distinct_consecutive_versions(
    settings: Settings, db: Database
) -> None:
    results: list[dict[str, Any]] = []
    async with Client(build_server(settings)) as one, Client(build_server(settings)) as two:

        async def save(client: Client, n: int) -> None:
            results.append(await _save(client, "raced", user_template=f"content {n}"))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for n in range(10):
                    group.start_soon(save, one if n % 2 else two, n)
    assert sorted(result["version"] for result in results) == list(range(1, 11))
    assert all(result["created"] for result in results)
    assert await _stored_versions(db, "raced") == list(range(1, 11))


async def test_concurrent_identical_saves_create_one_version(settings: Settings, db: Database) -> None:
    results: list[dict[str, Any]] = []
    async with Client(build_server(settings)) as one, Client(build_server(settings)) as two:

        async def save(client: Client) -> None:
            results.append(await _save(client, "same", user_template="identical"))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for n in range(8):
                    group.start_soon(save, one if n % 2 else two)
    assert [result["version"] for result in results] == [1] * 8
    assert sorted(result["created"] for result in results) == [False] * 7 + [True]
    assert await _stored_versions(db, "same") == [1]


async def test_prompts_list_shows_each_prompt_with_the_placeholders_of_its_latest_version(client: Client) -> None:
    assert (await client.list_prompts()).prompts == []
    await _save(client, "greet", user_template="Hi {{name}}")
    await _save(client, "greet", system_prompt="You are kind.", user_template="Hi {{ name }}, about {{topic}} {{name}}")
    await _save(client, "rules", system_prompt="Only a system prompt.")
    prompts = {prompt.name: prompt for prompt in (await client.list_prompts()).prompts}
    assert set(prompts) == {"greet", "rules"}
    greet = prompts["greet"]
    assert [(arg.name, arg.required) for arg in greet.arguments or []] == [("name", True), ("topic", True)]
    versions = {name: await call_ok(client, "get_prompt_version", prompt_id=name) for name in ("greet", "rules")}
    # The description names the version id an execution records: no extra call to learn it.
    assert greet.description == f"You are kind.\n\n[version 2; prompt_version_id {versions['greet']['id']}]"
    assert prompts["rules"].description == (
        f"Only a system prompt.\n\n[version 1; prompt_version_id {versions['rules']['id']}]"
    )
    assert prompts["rules"].arguments == []


async def test_prompts_get_renders_the_latest_version(client: Client) -> None:
    await _save(client, "greet", system_prompt="You are kind.", user_template="Hi {{name}}, about {{ topic }}.")
    result = await client.get_prompt("greet", {"name": "Ada", "topic": "{{name}} \\1 engines"})
    assert result.description is not None and result.description.startswith("You are kind.\n\n[version 1; ")
    texts = [(message.role, message.content) for message in result.messages]
    assert all(isinstance(content, TextContent) for _, content in texts)
    rendered = [(role, content.text) for role, content in texts if isinstance(content, TextContent)]
    # The values go in literally: no second substitution, no regex escapes.
    assert rendered == [("user", "[system]\nYou are kind."), ("user", "Hi Ada, about {{name}} \\1 engines.")]


async def test_prompts_get_with_a_missing_argument_is_an_error_naming_it(client: Client) -> None:
    await _save(client, "greet", user_template="Hi {{name}}, about {{topic}}.")
    with pytest.raises(MCPError) as caught:
        await client.get_prompt("greet", {"name": "Ada"})
    assert caught.value.error.message == "invalid_argument: missing prompt argument(s): topic"


async def test_prompts_get_of_an_unknown_prompt_is_an_error(client: Client) -> None:
    with pytest.raises(MCPError) as caught:
        await client.get_prompt("missing", {})
    assert "not_found" in caught.value.error.message
    assert "missing" in caught.value.error.message
