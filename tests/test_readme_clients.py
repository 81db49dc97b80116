"""The client set-up snippets of README.md work as written, each checked by the client itself where it
installs here (OpenAI Agents SDK, Pydantic AI, Gemini CLI) and by its documented format otherwise (Codex
CLI's TOML). Nothing reaches a model API: the agents run on their offline paths."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent
GEMINI_CLI = "@google/gemini-cli@0.61.0"

pytestmark = pytest.mark.slow


def _block(after: str, language: str) -> str:
    """The first ```language block after the line that starts with ``after``."""
    start = README.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(README, start)
    assert match is not None, f"no {language} block after {after!r}"
    return match.group(1)


@pytest.fixture
def client_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The snippets start `pipeline-state-mcp` from PATH on the default database under HOME."""
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in list(os.environ):
        if key.startswith("PIPELINE_STATE_") or key == "XDG_DATA_HOME":
            monkeypatch.delenv(key)
    return tmp_path


def test_openai_agents_snippet_lists_strict_tools_and_calls_one(
    client_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import agents
    from agents import RunContextWrapper
    from agents.tool_context import ToolContext

    seen: dict[str, Any] = {}

    async def offline_run(agent: Any, prompt: str) -> Any:
        """Runner.run without a model: what the agent would offer the model, and one strict-shaped call."""
        tools = {tool.name: tool for tool in await agent.get_mcp_tools(RunContextWrapper(None))}
        seen["strict"] = {name for name, tool in tools.items() if tool.strict_json_schema}
        create = tools["create_project"]
        arguments = dict.fromkeys(create.params_json_schema["properties"]) | {"name": "demo"}
        context = ToolContext(context=None, tool_name="create_project", tool_call_id="1", tool_arguments="")
        output = await create.on_invoke_tool(context, json.dumps(arguments))
        return type("Result", (), {"final_output": output["text"] if isinstance(output, dict) else output})()

    monkeypatch.setattr(agents.Runner, "run", offline_run)
    exec(compile(_block("**OpenAI Agents SDK**", "python"), "README.md", "exec"), {"__name__": "__main__"})
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] == "demo" and printed["status"] == "draft"
    assert "get_pipeline_status" in seen["strict"] and "record_execution" not in seen["strict"]
    # The snippet's toolsets: no prompts tools.
    assert "save_prompt_version" not in seen["strict"]
    assert (client_env / ".local" / "share" / "pipeline-state-mcp" / "state.db").exists()


def test_pydantic_ai_snippet_loads_the_mcp_json_and_calls_a_tool(client_env: Path) -> None:
    from pydantic_ai.models.test import TestModel

    config = json.loads(_block("**Gemini CLI**", "json"))
    config["mcpServers"]["pipeline-state"]["command"] = "pipeline-state-mcp"
    (client_env / "mcp.json").write_text(json.dumps(config))
    code = _block("**Pydantic AI**", "python")
    assert '"openai:gpt-5"' in code
    # Offline: Pydantic AI's TestModel stands in for the model and calls one tool through the toolset.
    model = TestModel(call_tools=["pipeline-state_list_projects"])
    namespace: dict[str, Any] = {"__name__": "__main__", "offline_model": model}
    cwd = Path.cwd()
    os.chdir(client_env)
    try:
        exec(compile(code.replace('"openai:gpt-5"', "offline_model"), "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    offered = {tool.name for tool in model.last_model_request_parameters.function_tools}  # type: ignore[union-attr]
    assert "pipeline-state_record_execution" in offered and "pipeline-state_save_prompt_version" not in offered
    assert all(len(name) <= 64 for name in offered)


def test_codex_toml_has_the_documented_stdio_keys() -> None:
    # Codex CLI itself (npm @openai/codex, 424 MB) accepted this table with `codex mcp get`; its package is
    # too large to install on every CI run, so the test holds the snippet to the documented keys.
    table = tomllib.loads(_block("**Codex CLI**", "toml"))["mcp_servers"]["pipeline-state"]
    assert set(table) <= {"command", "args", "env", "cwd", "startup_timeout_sec", "tool_timeout_sec", "enabled"}
    assert table["command"].endswith("pipeline-state-mcp")
    assert all(key.startswith("PIPELINE_STATE_") and isinstance(value, str) for key, value in table["env"].items())


@pytest.mark.skipif(shutil.which("npx") is None and not IN_CI, reason="npx is not installed (CI requires it)")
def test_gemini_cli_connects_with_the_settings_snippet(client_env: Path) -> None:
    npx = shutil.which("npx")
    assert npx is not None
    settings = json.loads(_block("**Gemini CLI**", "json"))
    server = settings["mcpServers"]["pipeline-state"]
    server["command"] = str(BIN / "pipeline-state-mcp")
    server["env"]["PIPELINE_STATE_DATABASE_URL"] = f"sqlite:///{client_env / 'gemini.db'}"
    folder = client_env / ".gemini"
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps(settings))
    # Gemini CLI starts MCP servers only in a folder the user trusts.
    (folder / "trustedFolders.json").write_text(json.dumps({str(client_env): "TRUST_FOLDER"}))
    done = subprocess.run(
        [npx, "-y", GEMINI_CLI, "mcp", "list"],
        cwd=client_env,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"HOME": str(client_env)},
    )
    assert done.returncode == 0, done.stderr
    listed = done.stdout + done.stderr  # the CLI writes its listing to stderr
    assert re.search(r"pipeline-state: .*pipeline-state-mcp .*\(stdio\) - Connected", listed), listed
