"""Tool schemas the provider SDKs take unchanged, judged by the SDKs themselves.

- google-genai's MCP conversion (``mcp_to_gemini_tool``, the path a Gemini call with an MCP session takes)
  loads every tool and keeps every argument's description;
- openai-agents' MCP path (``Agent.get_mcp_tools`` with ``convert_schemas_to_strict``) makes every tool
  strict except the ones with a free-form JSON object argument, and a call shaped the way strict mode
  sends it (every key present, null for the optional ones) succeeds on every tool, over stdio, on SQLite
  and PostgreSQL;
- what a host sends the model for all tools fits 4,500 o200k tokens (tiktoken with the encoding file
  that bpe-openai ships: nothing is downloaded), and output schemas stay within half their first size.

MCP Inspector's portability check runs in tests/test_stdio.py.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import itertools
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import Tool

from mcp_server.schemas.portable import free_form_arguments
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.conftest import fresh_sqlite_url
from tests.helpers import CONTRACT_TOOLS, CONTRACT_TOOLSETS, call_error, table_counts

pytestmark = pytest.mark.anyio

TOKEN_BUDGET = 5_000  # the whole list (4,500 before claims and leases)
WORKER_TOKEN_BUDGET = 1_500  # the `worker` preset: claim, renew, finish, fail, read a step, report cost
OUTPUT_SCHEMA_BUDGET = 43_838 // 2 + 8_350  # characters: half the first release's, plus leases, what a record opens,
# what a plan names per project, lineage (inputs_from), a step's schemas in get_process_state (1,200), and the
# budgets of teams (periods, caps, alerts and the pipeline's shared budget in every budget reply and project:
# 4,700, with caps and the shared budget written as plain objects), a start's reuse offer (250) and what a resuming
# agent lacked (150: a passed lease, a claimed step's output schema, the projects a redefinition made stale), and
# reuse and checks (900: a definition's reuse and required checks, a reuse's source and saving, check results),
# and what checks took past those (410 of 1,190: record_check's reply, 500; the checks of an execution in
# get_execution, 230, and of the current one with the missing ones in get_process_state, 310; a status row's
# failed and missing check names, 150), and 740 for what agents tripped on: a replaced output named (its id,
# completion time and agent) and its superseded_by, the expired execution a start took over, a status row's
# passed lease, and what a reuse completes (its source and saving, what went stale, what it unblocked)
# The tools with a free-form JSON object argument: the only ones that may stay non-strict for OpenAI.
NON_STRICT = {
    "create_project",
    "update_project",
    "define_process",
    "apply_pipeline",
    "start_execution",
    "record_execution",
    "record_check",
}
OPENAI_FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
SCRIPT = Path(sys.executable).parent / "pipeline-state-mcp"
# Every toolset combination, each with and without read-only mode.
COMBINATIONS = [
    (",".join(combo), read_only)
    for size in range(1, len(CONTRACT_TOOLSETS) + 1)
    for combo in itertools.combinations(CONTRACT_TOOLSETS, size)
    for read_only in (False, True)
] + [("worker", False)]


async def _tools(url: str, toolsets: str = "projects,pipeline,prompts,costs", read_only: bool = False) -> list[Tool]:
    settings = Settings(database_url=url, auto_migrate=False, toolsets=toolsets, read_only=read_only)
    async with Client(build_server(settings)) as client:
        return (await client.list_tools()).tools


@pytest.fixture(scope="module")
def o200k(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """tiktoken's o200k_base, read from the file bpe-openai ships; tiktoken checks its published hash."""
    import tiktoken

    # Located, not imported: importing bpe_openai loads its own tokenizers (and warns doing so).
    spec = importlib.util.find_spec("bpe_openai")
    assert spec is not None and spec.origin is not None, "bpe-openai is a dev dependency"
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    cache = tmp_path_factory.mktemp("tiktoken")
    packed = Path(spec.origin).parent / "data" / "o200k_base.tiktoken.gz"
    (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(gzip.decompress(packed.read_bytes()))
    before = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        yield tiktoken.get_encoding("o200k_base")
    finally:
        if before is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = before


def _payload(tool: Tool) -> str:
    """What a host sends the model for one tool: name, description, input schema, as compact JSON."""
    return json.dumps(
        {"name": tool.name, "description": tool.description, "parameters": tool.input_schema}, separators=(",", ":")
    )


def _described(schema: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path, description) of every property, nested ones included, that carries a description."""
    for name, prop in schema.get("properties", {}).items():
        branches = [prop, *prop.get("anyOf", [])]
        for branch in branches:
            if "description" in branch:
                yield (*path, name), branch["description"]
                break
        for branch in branches:
            if "properties" in branch:
                yield from _described(branch, (*path, name))


def _gemini_description(schema: Any, path: tuple[str, ...]) -> str | None:
    for name in path:
        schema = schema.properties[name]
    return schema.description  # type: ignore[no-any-return]


def _strict_agent_server() -> Any:
    from agents.mcp import MCPServerStdio

    return MCPServerStdio(params={"command": str(SCRIPT)})


@pytest.mark.parametrize(("toolsets", "read_only"), COMBINATIONS)
async def test_every_provider_sdk_takes_every_tool_of_every_configuration(
    sqlite_template: Path, tmp_path: Path, o200k: Any, toolsets: str, read_only: bool
) -> None:
    from agents.mcp.util import MCPUtil
    from google.genai._mcp_utils import mcp_to_gemini_tool

    tools = await _tools(fresh_sqlite_url(sqlite_template, tmp_path), toolsets, read_only)
    assert tools
    unconnected = _strict_agent_server()
    for tool in tools:
        # Gemini: the conversion loads the tool and no argument loses its description.
        declaration = mcp_to_gemini_tool(tool).function_declarations[0]  # type: ignore[index]
        described = list(_described(tool.input_schema))
        for path, description in described:
            assert _gemini_description(declaration.parameters, path) == description, (tool.name, path)
        # OpenAI: strict unless a free-form object argument makes that impossible.
        function_tool = MCPUtil.to_function_tool(tool, unconnected, True)
        assert function_tool.strict_json_schema is (tool.name not in NON_STRICT), tool.name
        assert (tool.name in NON_STRICT) is bool(free_form_arguments(tool.input_schema)), tool.name
    budget = WORKER_TOKEN_BUDGET if toolsets == "worker" else TOKEN_BUDGET
    assert sum(len(o200k.encode(_payload(tool))) for tool in tools) <= budget


async def test_the_whole_tool_list_fits_the_token_budget_and_output_schemas_halved(
    sqlite_template: Path, tmp_path: Path, o200k: Any
) -> None:
    tools = await _tools(fresh_sqlite_url(sqlite_template, tmp_path))
    assert [tool.name for tool in tools] == list(CONTRACT_TOOLS) or {t.name for t in tools} >= set(CONTRACT_TOOLS)
    tokens = sum(len(o200k.encode(_payload(tool))) for tool in tools)
    assert tokens <= TOKEN_BUDGET, f"{tokens} o200k tokens"
    output = sum(len(json.dumps(tool.output_schema, separators=(",", ":"))) for tool in tools)
    assert output <= OUTPUT_SCHEMA_BUDGET, f"{output} characters of output schemas"


async def test_the_worker_preset_is_what_a_worker_needs_within_its_budget(
    sqlite_template: Path, tmp_path: Path, o200k: Any
) -> None:
    tools = await _tools(fresh_sqlite_url(sqlite_template, tmp_path), toolsets="worker")
    names = [tool.name for tool in tools]
    assert sorted(names) == sorted(
        ["start_execution", "renew_lease", "record_execution", "fail_execution", "get_process_state", "report_cost"]
    )
    tokens = sum(len(o200k.encode(_payload(tool))) for tool in tools)
    assert tokens <= WORKER_TOKEN_BUDGET, f"{tokens} o200k tokens"


def _walk(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(schema, dict):
        yield path, schema
        for key, value in schema.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            yield from _walk(value, f"{path}/{index}")


async def test_input_schemas_keep_to_the_portable_subset(sqlite_template: Path, tmp_path: Path) -> None:
    """The house rules behind the SDK checks above, so that a change breaking one is named precisely."""
    for tool in await _tools(fresh_sqlite_url(sqlite_template, tmp_path)):
        schema = tool.input_schema
        assert schema["type"] == "object" and not {"anyOf", "oneOf", "allOf"} & set(schema), tool.name
        # Claude Code prefixes `mcp__<server>__`; OpenAI and Gemini allow 64 characters.
        assert len(f"mcp__pipeline-state__{tool.name}") <= 64
        for path, node in _walk(schema):
            assert not {"$ref", "$defs", "title", "additionalProperties"} & set(node), (tool.name, path)
            assert node.get("default", 0) is not None, (tool.name, path)
            assert node.get("format", "uuid") in OPENAI_FORMATS, (tool.name, path)
            assert not isinstance(node.get("type"), list), (tool.name, path)  # type unions: anyOf instead
        for name, prop in schema["properties"].items():
            branches = prop.get("anyOf", [prop])
            assert all("type" in branch for branch in branches), (tool.name, name)
            if name not in schema.get("required", []):
                # Strict mode can say "not given"; the non-strict tools spare the model the null branches.
                assert ({"type": "null"} in branches) is (tool.name not in NON_STRICT), (tool.name, name)


async def test_unknown_arguments_are_refused_by_name_and_write_nothing(client: Client, db: Any) -> None:
    counts = await table_counts(db)
    text = await call_error(client, "create_project", "invalid_argument", name="x", colour="blue")
    assert "'colour'" in text
    text = await call_error(
        client, "report_cost", "invalid_argument", provider="openai", model="gpt-4o", usage={"prompt_tokens": 1}
    )
    assert "'usage'" in text
    assert await table_counts(db) == counts


def _text(output: Any) -> str:
    if isinstance(output, dict):
        return str(output.get("text", ""))
    return str(output)


async def test_strict_shaped_calls_of_every_tool_through_openai_agents_over_stdio(db_url: str, tmp_path: Path) -> None:
    """openai-agents lists the tools from the console script and invokes each as strict mode would:
    every key of the (strict) schema present, null for each optional one. Each call must succeed."""
    from agents import Agent, RunContextWrapper
    from agents.mcp import MCPServerStdio
    from agents.tool_context import ToolContext

    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("PIPELINE_STATE_")},
        "PIPELINE_STATE_DATABASE_URL": db_url,
        "PIPELINE_STATE_LOG_LEVEL": "WARNING",
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    server = MCPServerStdio(params={"command": str(SCRIPT), "env": env}, client_session_timeout_seconds=30)
    called: set[str] = set()
    with anyio.fail_after(120):
        async with server:
            agent = Agent(name="strict", mcp_servers=[server], mcp_config={"convert_schemas_to_strict": True})
            tools = {tool.name: tool for tool in await agent.get_mcp_tools(RunContextWrapper(None))}
            listed = {tool.name: tool for tool in await server.list_tools()}

            async def call(tool_name: str, /, **given: Any) -> dict[str, Any]:
                name = tool_name
                function_tool: Any = tools[name]
                properties = function_tool.params_json_schema["properties"]
                if name not in NON_STRICT:
                    assert set(function_tool.params_json_schema["required"]) == set(properties), name
                required = set(listed[name].input_schema.get("required", []))
                assert required <= set(given), name
                arguments = {key: given.get(key) for key in properties}
                context = ToolContext(context=None, tool_name=name, tool_call_id=name, tool_arguments="")
                output = _text(await function_tool.on_invoke_tool(context, json.dumps(arguments)))
                try:
                    reply = json.loads(output)
                except json.JSONDecodeError:
                    pytest.fail(f"{name} with {arguments}: {output}")
                assert isinstance(reply, dict), output
                called.add(name)
                return reply

            project = (await call("create_project", name="strict"))["id"]
            other = (await call("create_project", name="other"))["id"]
            await call("get_project", project_id=project)
            await call("list_projects")
            assert (await call("update_project", project_id=project))["name"] == "strict"  # null: unchanged
            await call("define_process", process_id="a", name="A")
            await call("define_process", process_id="b", name="B", depends_on=["a"])
            await call("define_process", process_id="gone", name="Gone")
            assert len((await call("list_processes"))["items"]) == 3
            assert (await call("list_pipelines"))["items"][0]["pipeline_id"] == "default"
            planned = await call("apply_pipeline", pipeline_id="side", processes=[{"process_id": "x", "name": "X"}])
            assert planned["added"] == ["x"]
            await call("delete_process", process_id="gone")
            claimed = await call("start_execution", project_id=project)  # a claim: process_id null
            assert claimed["state"]["process_id"] == "a"
            started = claimed["execution"]["id"]
            renewed = await call("renew_lease", execution_id=started, lease_token=claimed["lease_token"])
            assert renewed["lease_expires_at"] >= claimed["lease_expires_at"]
            await call("fail_execution", execution_id=started, error_message="boom")
            usage = dict.fromkeys(("prompt_tokens", "total_tokens", "cost_usd", "inference_time_ms"))
            recorded = await call(
                "record_execution",
                project_id=project,
                process_id="a",
                output_data={"v": None},
                usage={"provider": "openai", "model": "gpt-4o", "completion_tokens": 10, **usage},
            )
            assert recorded["state"]["state"] == "completed" and recorded["cost"]["cost_source"] == "computed"
            execution = recorded["execution"]["id"]
            assert (await call("get_execution", execution_id=execution))["output_data"] == {"v": None}
            await call("list_executions")
            await call("get_process_state", project_id=project, process_id="a")
            await call("get_pipeline_status", project_id=project)
            checked = await call("record_check", execution_id=execution, name="review", passed=True)
            assert checked["check"]["passed"] is True and checked["current"] is True
            await call("invalidate_process", project_id=project, process_id="a")
            prompt = await call("save_prompt_version", prompt_id="greet", user_template="Hi {{name}}")
            assert prompt["version"] == 1
            await call("get_prompt_version", prompt_id="greet")
            await call("list_prompt_versions", prompt_id="greet")
            await call("report_cost", provider="openai", model="gpt-4o")
            assert (await call("get_cost_summary"))["totals"]["calls"] == 2
            await call("delete_project", project_id=other)
            await call("restore_project", project_id=other)
    assert called == set(CONTRACT_TOOLS)


async def test_rows_written_before_data_had_to_be_objects_read_back_wrapped(client: Client, db: Any) -> None:
    """The first release took any JSON value as input, output or missing_info; such rows still read
    (a scalar or a list comes back as {"value": …}), so the output schemas hold for them too."""
    from sqlalchemy import update

    from mcp_server.models import ProcessExecution
    from tests.helpers import call_ok

    await call_ok(client, "define_process", process_id="a", name="A")
    project = (await call_ok(client, "create_project", name="legacy"))["id"]
    recorded = await call_ok(client, "record_execution", project_id=project, process_id="a", output_data={"v": 1})
    async with db.unit_of_work() as session:
        await session.execute(
            update(ProcessExecution).values(input_data=[1, 2], output_data=3, missing_info="the budget")
        )
    execution = await call_ok(client, "get_execution", execution_id=recorded["execution"]["id"])
    assert execution["input_data"] == {"value": [1, 2]} and execution["output_data"] == {"value": 3}
    assert execution["missing_info"] == {"value": "the budget"}
    state = await call_ok(client, "get_process_state", project_id=project, process_id="a")
    assert state["current_output"] == {"value": 3}
    listed = await call_ok(client, "list_executions", project_id=project, include_data=True)
    assert listed["items"][0]["output_data"] == {"value": 3}


def _nulls(value: Any, path: str = "$") -> list[str]:
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _nulls(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _nulls(item, f"{path}[{index}]")]
    return [path] if value is None else []


async def test_replies_leave_out_null_fields_but_keep_the_callers_data(client: Client) -> None:
    from tests.helpers import call_ok

    await call_ok(client, "define_process", process_id="a", name="A")
    project = (await call_ok(client, "create_project", name="compact"))["id"]
    usage = {"provider": "acme", "model": "unknown-1", "prompt_tokens": 5}
    recorded = await call_ok(
        client, "record_execution", project_id=project, process_id="a", output_data={"kept": None}, usage=usage
    )
    assert _nulls(recorded) == [] and "cost_usd" not in recorded["cost"]
    assert recorded["cost"]["cost_source"] == "unpriced" and "unpriced" in recorded["cost"]["note"]
    status = await call_ok(client, "get_pipeline_status", project_id=project)
    assert _nulls(status) == []
    execution = await call_ok(client, "get_execution", execution_id=recorded["execution"]["id"])
    assert _nulls(execution) == ["$.output_data.kept"]  # the caller's own null stays
