"""The error model: tool errors with a stable code after the SDK's prefix, no internals."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from mcp import Client
from sqlalchemy.engine import make_url

from mcp_server.db.engine import Database
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.conftest import PG_ADMIN_URL, require_postgres
from tests.helpers import call_error, call_ok, table_counts

pytestmark = pytest.mark.anyio

# What must never reach a client: tracebacks, driver and ORM names, SQL, file paths of the code.
LEAKS = ("Traceback", 'File "', "sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "SELECT ", "INSERT ", ".py")

BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("get_project", {"project_id": "not-a-uuid"}, "invalid_argument"),
    ("get_project", {"project_id": str(uuid.uuid4())}, "not_found"),
    ("get_project", {}, "invalid_argument"),
    ("create_project", {"name": 42}, "invalid_argument"),
    ("create_project", {"name": "x" * 100_000}, "invalid_argument"),
    ("create_project", {"name": "ok", "budget_usd": "lots"}, "invalid_argument"),
    ("list_projects", {"page": "one"}, "invalid_argument"),
    ("list_projects", {"page_size": 10_000}, "invalid_argument"),
    ("update_project", {"project_id": str(uuid.uuid4()), "status": "nope"}, "invalid_argument"),
    ("update_project", {"project_id": str(uuid.uuid4())}, "not_found"),
    ("delete_project", {"project_id": str(uuid.uuid4())}, "not_found"),
    ("save_prompt_version", {"prompt_id": "p"}, "invalid_argument"),
    ("save_prompt_version", {"prompt_id": "p", "user_template": ["a"]}, "invalid_argument"),
    ("get_prompt_version", {"prompt_id": "p", "version": -1}, "invalid_argument"),
    ("get_prompt_version", {"prompt_id": "p"}, "not_found"),
]


def _assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} leaked into: {text}"


async def test_an_unknown_tool_is_a_tool_error(client: Client) -> None:
    result = await client.call_tool("no_such_tool", {"x": 1})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith("Error executing tool no_such_tool: not_found: ")
    assert "tools/list" in text


async def test_a_domain_error_carries_its_code_after_the_sdk_prefix_and_says_what_to_do(client: Client) -> None:
    missing = str(uuid.uuid4())
    text = await call_error(client, "get_project", "not_found", project_id=missing)
    assert text == (
        f"Error executing tool get_project: not_found: project {missing} does not exist or is deleted. "
        "Call list_projects to find valid ids (include_deleted=true shows deleted ones)"
    )


async def test_arguments_the_sdk_rejects_are_invalid_argument_naming_the_field(client: Client) -> None:
    rejected: list[tuple[str, dict[str, Any], str]] = [
        ("list_projects", {"page": "one"}, "page"),
        ("list_projects", {"page_size": 101}, "page_size"),
        ("get_project", {"project_id": "1234"}, "project_id"),
        ("get_project", {}, "project_id"),
        ("create_project", {"name": None}, "name"),
        ("save_prompt_version", {"prompt_id": "p", "user_template": "t", "temperature": "hot"}, "temperature"),
    ]
    for tool, arguments, field in rejected:
        text = await call_error(client, tool, "invalid_argument", **arguments)
        assert text.startswith(f"Error executing tool {tool}: invalid_argument: {field}: "), text
        assert text.endswith("Fix these arguments (see the input schema) and retry")
        assert "input_value" not in text and "https://errors.pydantic.dev" not in text


async def test_json_nested_too_deeply_is_invalid_argument_naming_the_field(client: Client, db: Database) -> None:
    deep: Any = 1
    for _ in range(70):
        deep = [deep]
    counts = await table_counts(db)
    text = await call_error(client, "create_project", "invalid_argument", name="ok", metadata={"deep": deep})
    assert "metadata" in text and "nested deeper than 64" in text
    assert await table_counts(db) == counts


async def test_no_error_message_carries_a_traceback_or_internals(client: Client, db: Database) -> None:
    counts = await table_counts(db)
    for tool, arguments, code in BAD_CALLS:
        _assert_no_leak(await call_error(client, tool, code, **arguments))
    assert await table_counts(db) == counts


async def test_a_crashing_tool_is_an_internal_error_without_details_and_is_logged(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    server = build_server(settings)

    def explode() -> str:
        """A tool that fails the way a bug would."""
        raise RuntimeError('secret detail File "/srv/app.py"')

    server.add_tool(explode)
    async with Client(server) as client:
        with caplog.at_level(logging.ERROR):
            text = await call_error(client, "explode", "internal")
        assert "secret detail" not in text
        _assert_no_leak(text)
        assert "nothing was written" in text
        # The server keeps serving after the crash.
        await call_ok(client, "list_projects")
    logged = [record for record in caplog.records if record.exc_info]
    assert logged, "the crash must be logged with its traceback (on stderr)"
    assert any("secret detail" in str(record.exc_info[1].__cause__) for record in logged if record.exc_info)


async def test_an_unreachable_database_is_unavailable_and_hides_the_url(request: pytest.FixtureRequest) -> None:
    require_postgres(request.getfixturevalue("pg_available"))
    missing = f"pst_missing_{uuid.uuid4().hex[:8]}"
    url = make_url(PG_ADMIN_URL).set(password="s3cret-pw", database=missing).render_as_string(hide_password=False)
    async with Client(build_server(Settings(database_url=url, auto_migrate=False))) as client:
        for tool, arguments in (("create_project", {"name": "x"}), ("list_projects", {})):
            text = await call_error(client, tool, "unavailable", **arguments)
            assert "Retry" in text
            for secret in ("s3cret-pw", missing, "127.0.0.1", "postgres"):
                assert secret not in text
            _assert_no_leak(text)
