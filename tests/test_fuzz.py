"""Hostile input: every tool fuzzed through the in-memory client with generated arguments
(docs/design.md, "MCP surface").

Each call must end in success or a tool error whose code is one of the stable codes (`internal` fails
the test); a failed call changes no table's row count; a read-only tool never does; the server answers
every call within a bound. Arguments mix plausible values (ids that exist, a typed pipeline, shared
idempotency keys) with hostile ones (wrong types, huge and NUL-bearing strings, deep JSON, malformed
and unknown ids, negative and huge numbers, cyclic dependencies, schema-violating data), and leave out
required fields or add unknown ones. Runs on SQLite with more examples and on PostgreSQL with fewer
(PIPELINE_STATE_TEST_FUZZ_SCALE multiplies both). MCP prompts and resources get hostile names too.
tests/test_reliability_input.py pins the limits and what this fuzzing found.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta, timezone
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent, Tool

from mcp_server.db.engine import Database
from mcp_server.errors import error_codes
from mcp_server.repositories import ProcessDefinitionRepository
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.helpers import CONTRACT_TOOLS, call_ok, table_counts

# Every code a client may see, but `internal` (a bug) and `unavailable` (the database went away).
STABLE_CODES = tuple(code for code in error_codes() if code not in ("internal", "unavailable"))
LEAKS = ("Traceback", 'File "', "sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "SELECT ", "INSERT ")
TOOLS = CONTRACT_TOOLS
TYPED_INPUT = {"type": "object", "required": ["q"], "properties": {"q": {"type": "string", "maxLength": 50}}}
TYPED_OUTPUT = {
    "type": "object",
    "required": ["answer", "score"],
    "properties": {"answer": {"type": "string"}, "score": {"type": "integer", "minimum": 0}},
    "additionalProperties": False,
}


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)
# Mostly ordinary text, sometimes with NUL characters (PostgreSQL cannot store U+0000).
texts = st.text(max_size=120) | st.text(alphabet="\x00a\u00e9\U0001f600", max_size=6)
slugs = st.from_regex(r"\A[a-z][a-z0-9_\-]{0,12}\Z")
malformed_ids = st.sampled_from(
    ["", "not-a-uuid", "1234", "00000000-0000-0000-0000-00000000000g", "{}", "' OR 1=1 --", "../../etc/passwd"]
)
hostile = st.one_of(
    json_values,
    st.integers(min_value=2**31, max_value=2**80),
    st.integers(max_value=-1),
    st.integers(min_value=-(2**80), max_value=-(2**63)),
    st.floats(),  # NaN and infinities included
    st.text(),  # any code point but surrogates, NUL included
    st.sampled_from(["\x00", "a\x00b", "x" * 200_000, "\U0001f600" * 1000, "%s%n", "Robert'); DROP TABLE projects;--"]),
    malformed_ids,
    st.uuids().map(str),  # ids that do not exist
    slugs,  # process and prompt ids that do not exist
    st.text(min_size=195, max_size=210),
    st.integers(min_value=60, max_value=150).map(_nested),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2024-02-30T00:00:00", "yesterday"]),
)
money = st.one_of(
    st.decimals(min_value=0, max_value=10, places=6).map(str),
    st.sampled_from(
        ["0.0001", "-1", "1e400", "NaN", "Infinity", "0.00000000001", "900000001", "899999999.9999999999", "1,5", ""]
    ),
    st.floats(min_value=-1, max_value=1e12),
)
counts = st.one_of(
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=-3, max_value=300),
    st.integers(min_value=2**31, max_value=2**70),
)
offsets = st.integers(-1439, 1439).map(lambda minutes: timezone(timedelta(minutes=minutes)))
datetimes = st.one_of(
    st.datetimes(timezones=st.none() | offsets).map(lambda value: value.isoformat()),
    st.sampled_from(["2020-01-01", "2020-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]),
)
valid_schemas = st.sampled_from(
    [
        TYPED_INPUT,
        TYPED_OUTPUT,
        {},
        {"type": "object", "properties": {"x": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"type": "integer"}}},
        {"$ref": "#/$defs/missing"},
        {"type": "object", "properties": {"x": {"$ref": "https://example.invalid/x.json"}}},
    ]
)
schemas = st.one_of(
    valid_schemas,
    valid_schemas,
    st.sampled_from(
        [
            {"type": "nonsense"},
            {"$ref": "urn:unknown:thing"},
            {"type": "object", "properties": {"x": {"$ref": "#"}}},
            {"type": "string", "format": "email"},
            {"type": "object", "required": "q"},
            {"pattern": "["},
            {"minimum": "zero"},
            # Hostile (the hostile-input issue): references out of the schema wherever they can hide,
            # backtracking patterns, self-reference.
            {"$dynamicRef": "file:///etc/passwd"},
            {"properties": {"enum": {"$ref": "http://127.0.0.1:9/x.json"}}},
            {"$defs": {"default": {"$ref": "file:///dev/zero"}}, "$ref": "#/$defs/default"},
            {"type": "string", "pattern": "^(a+)+$"},
            {"patternProperties": {"(x+x+)+y": {"type": "integer"}}},
            {"type": "string", "pattern": "(?=a)b"},
            {"$ref": "#"},
        ]
    ),
    st.dictionaries(
        st.sampled_from(["type", "required", "properties", "items", "enum", "$ref", "minimum"]), json_values
    ),
)


@dataclass
class World:
    """The ids and names that exist, so that generated calls reach past the not-found checks."""

    projects: list[str] = field(default_factory=list)
    executions: list[str] = field(default_factory=list)
    prompt_versions: list[str] = field(default_factory=list)
    processes: tuple[str, ...] = ("a", "b", "typed", "c", "dangling")
    prompts: tuple[str, ...] = ("greet", "plan")


def plausible(name: str, world: World) -> st.SearchStrategy[Any]:
    """Values of the right shape for an argument, often naming something that exists."""
    ids = {"project_id": world.projects, "execution_id": world.executions, "prompt_version_id": world.prompt_versions}
    if name in ids:
        return st.sampled_from(ids[name])
    if name == "process_id":
        return st.sampled_from(world.processes)
    if name == "prompt_id":
        return st.sampled_from(world.prompts) | slugs
    if name == "depends_on":
        return st.lists(st.sampled_from(world.processes), max_size=3)
    if name in ("input_schema", "output_schema"):
        return schemas
    if name in ("input_data", "output_data", "missing_info", "metadata"):
        typed = st.fixed_dictionaries({"answer": st.text(max_size=10), "score": st.integers(-2, 5)})
        return st.one_of(json_values, typed, st.fixed_dictionaries({"q": st.text(max_size=60)}))
    if name in ("budget_usd", "cost_usd"):
        return money
    if name in ("since", "until"):
        return datetimes
    if name == "usage":
        return usages(world)
    if name == "group_by":
        return st.lists(st.sampled_from(["project", "process", "provider", "model", "day", "week"]), max_size=6)
    if name == "status":
        return st.sampled_from(["draft", "in_progress", "completed", "archived", "running", "failed", "stale", "x"])
    if name in ("force", "include_deleted"):
        return st.booleans()
    if name == "temperature":
        return st.floats(min_value=-1, max_value=3)
    if name == "provider":
        return st.sampled_from(["openai", "anthropic", "nobody"]) | texts
    if name == "model":
        return st.sampled_from(["gpt-4o-mini", "claude-3-5-sonnet-20241022", "no-such-model"]) | texts
    if name == "idempotency_key":
        return st.sampled_from(["k1", "k2", "k3"]) | st.uuids().map(str) | texts
    if name.endswith("_tokens") or name in ("page", "page_size", "version", "expected_version", "order_index"):
        return counts
    if name == "inference_time_ms":
        return counts
    return texts  # names, descriptions, reasons, templates, messages, created_by


def usages(world: World) -> st.SearchStrategy[Any]:
    keys = ("provider", "model", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd")
    return st.fixed_dictionaries(
        {},
        optional={
            key: (plausible(key, world) | hostile) if key != "cost_usd" else money
            for key in (*keys, "cache_read_tokens", "inference_time_ms")
        },
    )


@st.composite
def arguments(draw: st.DrawFn, tool: Tool, world: World) -> dict[str, Any]:
    """Plausible arguments (to reach the rules behind the schema), the same with one field made hostile
    or left out, or every field at random; sometimes an unknown argument besides."""
    properties = sorted(tool.input_schema.get("properties", {}))
    required = set(tool.input_schema.get("required", []))
    mode = draw(st.sampled_from(["plausible", "plausible", "one_hostile", "chaos"]))
    generated: dict[str, Any] = {}
    for name in properties:
        if mode == "chaos":
            choice = draw(st.sampled_from(["omit", "plausible", "hostile"]))
        else:
            choice = "plausible" if name in required or draw(st.booleans()) else "omit"
        if choice == "plausible":
            generated[name] = draw(plausible(name, world))
        elif choice == "hostile":
            generated[name] = draw(hostile)
    if mode == "one_hostile" and properties:
        target = draw(st.sampled_from(properties))
        if draw(st.integers(0, 3)) == 0:
            generated.pop(target, None)
        else:
            generated[target] = draw(hostile)
    if draw(st.integers(0, 9)) == 0:
        generated[draw(st.text(min_size=1, max_size=12))] = draw(hostile)
    return generated


async def setup_world(client: Client, db: Database) -> World:
    world = World()
    await call_ok(client, "define_process", process_id="a", name="A")
    await call_ok(client, "define_process", process_id="b", name="B", depends_on=["a"])
    await call_ok(
        client,
        "define_process",
        process_id="typed",
        name="Typed",
        depends_on=["a"],
        input_schema=TYPED_INPUT,
        output_schema=TYPED_OUTPUT,
    )
    await call_ok(client, "define_process", process_id="c", name="C", depends_on=["b", "typed"])
    # Valid JSON Schemas whose references lead nowhere: define_process refuses them, so they are stored
    # directly, as a definition written before that check would be; they fail once data reaches them.
    async with db.unit_of_work() as session:
        await ProcessDefinitionRepository(session).create(
            id="dangling",
            name="Dangling",
            depends_on=[],
            input_schema={"$ref": "#/$defs/missing"},
            output_schema={"type": "object", "properties": {"x": {"$ref": "https://example.invalid/x.json"}}},
        )
    project = (await call_ok(client, "create_project", name="fuzzed", budget_usd="1"))["id"]
    world.projects = [project, (await call_ok(client, "create_project", name="other"))["id"]]
    done = await call_ok(client, "record_execution", project_id=project, process_id="a", output_data={"v": 1})
    running = await call_ok(client, "start_execution", project_id=project, process_id="b")
    world.executions = [done["execution"]["id"], running["execution"]["id"]]
    saved = await call_ok(client, "save_prompt_version", prompt_id="greet", user_template="Hi {{name}}")
    world.prompt_versions = [saved["id"]]
    return world


@dataclass
class Fuzzer:
    """The server under test, run in a portal's event loop so that each example is a plain call."""

    portal: BlockingPortal
    client: Client
    db: Database
    world: World
    tools: dict[str, Tool]

    def call(self, tool_name: str, args: dict[str, Any]) -> None:
        # event() must run in the test's thread: hypothesis keeps its context there.
        event(self.portal.call(check_call, self, tool_name, args))


@pytest.fixture
def fuzzer(db_url: str) -> Iterator[Fuzzer]:
    # A sync test driving a portal: a failing example must not tear down the event loop that the
    # server lives in, or hypothesis could not replay and shrink it.
    with start_blocking_portal() as portal:
        server = build_server(Settings(database_url=db_url, auto_migrate=False))
        with portal.wrap_async_context_manager(Client(server)) as client:
            db = Database.connect(db_url)
            try:
                world = portal.call(setup_world, client, db)
                tools = {tool.name: tool for tool in portal.call(client.list_tools).tools}
                assert set(tools) == set(TOOLS)  # every tool is fuzzed
                yield Fuzzer(portal=portal, client=client, db=db, world=world, tools=tools)
                # After every example, the server still serves.
                assert portal.call(call_ok, client, "list_processes")["items"]
            finally:
                portal.call(db.dispose)


async def check_call(fuzzer: Fuzzer, tool_name: str, args: dict[str, Any]) -> str:
    """One call: success, or a stable-coded tool error that wrote nothing; answered in bounded time."""
    tool = fuzzer.tools[tool_name]
    before = await table_counts(fuzzer.db)
    with anyio.fail_after(60):
        result = await fuzzer.client.call_tool(tool_name, args)
    after = await table_counts(fuzzer.db)
    if not result.is_error:
        assert result.structured_content is not None, f"{tool_name} succeeded without a result"
        if tool.annotations is not None and tool.annotations.read_only_hint:
            assert after == before, f"read-only {tool_name} changed row counts"
        return "success"
    assert result.content and isinstance(result.content[0], TextContent)
    text = result.content[0].text
    match = re.match(rf"Error executing tool {tool_name}: ([a-z_]+): ", text)
    assert match is not None and match[1] in STABLE_CODES, f"{tool_name}({_short(args)}) -> {text[:2000]}"
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} leaked: {text[:2000]}"
    assert after == before, f"failed {tool_name} changed row counts: {before} -> {after}"
    return match[1] + (": NUL" if "NUL character" in text else ": reference" if "cannot be resolved" in text else "")


def _short(args: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r:.200}" for key, value in args.items())


# PIPELINE_STATE_TEST_FUZZ_SCALE=10 runs ten times the examples (a deeper local search).
SCALE = int(os.environ.get("PIPELINE_STATE_TEST_FUZZ_SCALE", "1"))
FUZZ_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("tool", TOOLS)
@settings(max_examples=40 * SCALE, **FUZZ_SETTINGS)
@given(data=st.data())
def test_every_tool_answers_hostile_arguments_with_a_stable_code_on_sqlite(
    fuzzer: Fuzzer, tool: str, data: st.DataObject
) -> None:
    fuzzer.call(tool, data.draw(arguments(fuzzer.tools[tool], fuzzer.world), label="arguments"))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("tool", TOOLS)
@settings(max_examples=12 * SCALE, **FUZZ_SETTINGS)
@given(data=st.data())
def test_every_tool_answers_hostile_arguments_with_a_stable_code_on_postgresql(
    fuzzer: Fuzzer, tool: str, data: st.DataObject
) -> None:
    fuzzer.call(tool, data.draw(arguments(fuzzer.tools[tool], fuzzer.world), label="arguments"))


async def check_prompt_and_resource(fuzzer: Fuzzer, name: str, arguments: dict[str, str], uri: str) -> None:
    """MCP prompts and resources answer a result or a protocol error with a stable code, never a crash."""
    counts = await table_counts(fuzzer.db)
    for request in (
        lambda: fuzzer.client.get_prompt(name, arguments),
        lambda: fuzzer.client.read_resource(uri),
    ):
        try:
            with anyio.fail_after(60):
                await request()
        except MCPError as exc:
            message = exc.error.message
            assert message.split(":")[0] in (*STABLE_CODES, "Unknown resource"), message
    assert await table_counts(fuzzer.db) == counts


resource_uris = st.one_of(
    st.builds("pipeline://projects/{}".format, st.uuids().map(str) | texts | malformed_ids),
    st.builds("pipeline://executions/{}".format, st.uuids().map(str) | texts | malformed_ids),
    st.builds("pipeline://projects/{}/graph".format, st.uuids().map(str) | texts | malformed_ids),
    st.builds("pipeline://pipelines/{}".format, texts | malformed_ids),
    st.sampled_from(["pipeline://processes", "pipeline://nope", "file:///etc/passwd", "pipeline://projects/"]),
)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
@settings(max_examples=40 * SCALE, **FUZZ_SETTINGS)
@given(
    name=st.sampled_from(["greet", "plan"]) | texts | slugs,
    arguments=st.dictionaries(st.sampled_from(["name", "x"]) | texts, texts, max_size=3),
    uri=resource_uris,
)
def test_prompts_and_resources_answer_hostile_names_with_a_result_or_a_stable_error(
    fuzzer: Fuzzer, name: str, arguments: dict[str, str], uri: str
) -> None:
    fuzzer.portal.call(check_prompt_and_resource, fuzzer, name, arguments, uri)
