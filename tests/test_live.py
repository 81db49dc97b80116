"""Live state over MCP: titles, completions, list changes and resource updates, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import PromptsListChanged, ResourcesListChanged, ResourceUpdated
from mcp_types import Completion, PromptReference, ResourceTemplateReference, ServerNotification

from mcp_server import live
from mcp_server.db.changes import PostgresChanges, SqliteChanges
from mcp_server.db.engine import Database
from mcp_server.live import LiveHub
from mcp_server.models import Project
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import call_ok

log = logging.getLogger(__name__)
pytestmark = pytest.mark.anyio
# resources/subscribe is the 2025-11-25 path, which the SDK's client marks deprecated.
LEGACY_SUBSCRIBE = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


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


async def test_list_changed_reaches_the_client_after_save_prompt_version_and_a_new_pipeline(settings: Settings) -> None:
    heard: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ServerNotification):
            heard.append(message.method)

    async with Client(build_server(settings), message_handler=on_message, mode="legacy") as client:
        caps = client.server_capabilities
        assert caps is not None and caps.prompts is not None and caps.resources is not None
        assert caps.prompts.list_changed and caps.resources.list_changed and caps.resources.subscribe
        await call_ok(client, "save_prompt_version", prompt_id="brief", user_template="v1")
        await call_ok(client, "save_prompt_version", prompt_id="brief", user_template="v1")  # nothing new
        await _until(lambda: "notifications/prompts/list_changed" in heard)
        assert heard.count("notifications/prompts/list_changed") == 1
        await call_ok(client, "define_process", process_id="a", name="A", pipeline_id="nightly")
        await call_ok(client, "define_process", process_id="b", name="B", pipeline_id="nightly")  # same pipelines
        await _until(lambda: "notifications/resources/list_changed" in heard)
        assert heard.count("notifications/resources/list_changed") == 1
        listed = {resource.uri for resource in (await client.list_resources()).resources}
        assert "pipeline://pipelines/nightly" in listed
        await call_ok(client, "delete_process", process_id="a", pipeline_id="nightly")
        await call_ok(client, "delete_process", process_id="b", pipeline_id="nightly")
        await _until(lambda: heard.count("notifications/resources/list_changed") == 2)


async def _until(condition: Callable[[], bool], within: float = 15.0) -> None:
    """Wait for what the client heard (generously: CI runs this beside other tests on two cores)."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - the condition is the client's list of what it heard
            await anyio.sleep(0.02)


@asynccontextmanager
async def _watching_a_project(settings: Settings, updated: list[str]) -> AsyncIterator[tuple[Client, str, str]]:
    """A 2025-11-25 client of a server on this database, subscribed to a new project of a one-step pipeline:
    the client, the project's id and its URI; every resources/updated it hears is appended to ``updated``."""

    async def on_message(message: Any) -> None:
        if isinstance(message, ServerNotification) and message.method == "notifications/resources/updated":
            updated.append(str(message.params.uri))

    async with Client(build_server(settings), message_handler=on_message, mode="legacy") as client:
        await call_ok(client, "define_process", process_id="draft", name="Draft")
        project = (await call_ok(client, "create_project", name="watched"))["id"]
        uri = f"pipeline://projects/{project}"
        await client.subscribe_resource(uri)
        yield client, project, uri


@LEGACY_SUBSCRIBE
async def test_a_subscriber_hears_a_write_made_through_its_own_server(settings: Settings) -> None:
    updated: list[str] = []
    async with _watching_a_project(settings, updated) as (client, project, uri):
        await client.subscribe_resource(uri + "/graph")
        await call_ok(client, "record_execution", project_id=project, process_id="draft", output_data={"n": 1})
        await _until(lambda: {uri, uri + "/graph"} <= set(updated))
        await client.unsubscribe_resource(uri)
        await client.unsubscribe_resource(uri + "/graph")
        count = len(updated)
        await call_ok(client, "record_execution", project_id=project, process_id="draft", output_data={"n": 2})
        await anyio.sleep(1.2)
        assert len(updated) == count


@LEGACY_SUBSCRIBE
async def test_a_change_whose_signals_were_all_missed_is_told_by_the_safety_check(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every signal the watcher has is silenced: the server's own wake-up after a write and the change
    # source's answer (SQLite's data_version, PostgreSQL's notifications).
    monkeypatch.setattr(LiveHub, "poke", lambda _self: None)
    monkeypatch.setattr(SqliteChanges, "changed", _never_changed)
    monkeypatch.setattr(PostgresChanges, "changed", _never_changed)
    monkeypatch.setattr(live, "SAFETY_CHECK", 3600.0)
    checks: list[float] = []
    check = LiveHub.check

    async def counted(self: LiveHub, watched: Any) -> None:
        await check(self, watched)
        checks.append(time.monotonic())  # once the check has read and told what it found

    monkeypatch.setattr(LiveHub, "check", counted)
    updated: list[str] = []
    async with _watching_a_project(settings, updated) as (client, project, uri):
        await _until(lambda: len(checks) == 1)  # the watcher's first round: its check finds nothing new
        await call_ok(client, "record_execution", project_id=project, process_id="draft", output_data={"n": 1})
        await anyio.sleep(1.5)
        assert updated == [] and len(checks) == 1  # no signal reached the watcher: only the safety check can tell
        monkeypatch.setattr(live, "SAFETY_CHECK", 0.2)
        await _until(lambda: uri in updated)
        assert updated == [uri]  # told once, though checked every round since


async def _never_changed(_self: Any) -> bool:
    return False


async def test_a_listen_stream_hears_list_changes_and_resource_updates(client: Client) -> None:
    await call_ok(client, "define_process", process_id="draft", name="Draft")
    project = (await call_ok(client, "create_project", name="listened"))["id"]
    uri = f"pipeline://projects/{project}"
    events: list[Any] = []
    options = {"prompts_list_changed": True, "resources_list_changed": True, "resource_subscriptions": [uri]}
    async with client.listen(**options) as subscription:

        async def collect() -> None:
            async for event in subscription:
                events.append(event)

        async with anyio.create_task_group() as group:
            group.start_soon(collect)
            await call_ok(client, "save_prompt_version", prompt_id="brief", user_template="v1")
            await call_ok(client, "define_process", process_id="a", name="A", pipeline_id="other")
            await call_ok(client, "record_execution", project_id=project, process_id="draft", output_data={})
            kinds = {PromptsListChanged, ResourcesListChanged, ResourceUpdated}
            await _until(lambda: {type(event) for event in events} >= kinds)
            group.cancel_scope.cancel()
    assert [event.uri for event in events if isinstance(event, ResourceUpdated)] == [uri]


SCRIPT = Path(sys.executable).with_name("pipeline-state-mcp")


def _stdio(db_url: str, tmp_path: Path, logs: ExitStack, name: str) -> Any:
    env = {"PIPELINE_STATE_DATABASE_URL": db_url, "XDG_DATA_HOME": str(tmp_path / "data")}
    errlog = logs.enter_context((tmp_path / f"{name}.log").open("w"))
    return stdio_client(StdioServerParameters(command=str(SCRIPT), env=env, cwd=str(tmp_path)), errlog=errlog)


@pytest.mark.slow
@LEGACY_SUBSCRIBE
async def test_a_listener_on_server_a_hears_a_record_made_through_server_b(db_url: str, tmp_path: Path) -> None:
    """Three processes on one database: A (2025-11-25 resources/subscribe), A2 (2026-07-28 listen) and the
    writer B. Each record through B reaches both listeners within seconds; after unsubscribing, none does."""
    heard: list[tuple[float, str]] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ServerNotification) and message.method == "notifications/resources/updated":
            heard.append((time.monotonic(), str(message.params.uri)))

    logs = ExitStack()
    writer = Client(_stdio(db_url, tmp_path, logs, "b"))
    legacy = Client(_stdio(db_url, tmp_path, logs, "a"), message_handler=on_message, mode="legacy")
    modern = Client(_stdio(db_url, tmp_path, logs, "a2"))
    async with writer as b, legacy as a, modern as a2:
        await call_ok(b, "define_process", process_id="draft", name="Draft")
        project = (await call_ok(b, "create_project", name="shared"))["id"]
        uri = f"pipeline://projects/{project}"
        await a.subscribe_resource(uri)
        latencies: list[float] = []
        listened: list[float] = []
        async with a2.listen(resource_subscriptions=[uri]) as subscription:
            for n in range(5):
                await anyio.sleep(0.3)
                before = len(heard)
                await call_ok(b, "record_execution", project_id=project, process_id="draft", output_data={"n": n})
                committed = time.monotonic()
                with anyio.fail_after(5):
                    event = await subscription.__anext__()
                listened.append(time.monotonic() - committed)
                assert isinstance(event, ResourceUpdated) and event.uri == uri
                await _until(lambda before=before: len(heard) > before)  # type: ignore[misc]
                latencies.append(heard[-1][0] - committed)
        await a.unsubscribe_resource(uri)
        count = len(heard)
        await call_ok(b, "record_execution", project_id=project, process_id="draft", output_data={"n": "late"})
        await anyio.sleep(1.5)
        assert len(heard) == count
    logs.close()
    log.info("commit on B -> event on A (s): subscribe %s, listen %s", sorted(latencies), sorted(listened))
    assert sorted(latencies)[2] <= 1.0 and sorted(listened)[2] <= 1.0  # p50


@LEGACY_SUBSCRIBE
async def test_subscriptions_per_session_are_bounded(settings: Settings) -> None:
    async with Client(build_server(settings), mode="legacy") as client:
        refused = 0
        for n in range(10_000):
            try:
                await client.subscribe_resource(f"pipeline://pipelines/p{n}")
            except MCPError as exc:
                assert exc.error.message.startswith("limit: at most 100 resource subscriptions per session")
                refused += 1
        assert refused == 10_000 - 100
        await client.unsubscribe_resource("pipeline://pipelines/p0")
        await client.subscribe_resource("pipeline://pipelines/again")
        with pytest.raises(MCPError, match="not_found"):
            await client.subscribe_resource("https://example.com/x")


async def test_two_hundred_listeners_on_one_server_each_hear_one_write_once(client: Client) -> None:
    """200 listen streams on one server (the memory they hold is bench/'s live figure): one commit reaches
    each of them once; once they close, the watcher goes idle."""
    await call_ok(client, "define_process", process_id="draft", name="Draft")
    project = (await call_ok(client, "create_project", name="crowd"))["id"]
    uri = f"pipeline://projects/{project}"
    async with AsyncExitStack() as streams:
        listening = [await streams.enter_async_context(client.listen(resource_subscriptions=[uri])) for _ in range(200)]
        await call_ok(client, "record_execution", project_id=project, process_id="draft", output_data={})
        with anyio.fail_after(30):
            for stream in listening:
                event = await stream.__anext__()
                assert isinstance(event, ResourceUpdated) and event.uri == uri
