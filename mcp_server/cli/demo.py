"""``pipeline-state-mcp demo``: an example pipeline end to end through a real MCP client over stdio."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from mcp_server.cli.tables import cost_table, status_table

TEXT_OUT = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string", "minLength": 1}}}
PIPELINE = [
    ("requirements", "Gather requirements", [], "anthropic", "claude-sonnet-4-5"),
    ("design", "Design the solution", ["requirements"], "anthropic", "claude-sonnet-4-5"),
    ("test_plan", "Plan the tests", ["requirements"], "openai", "gpt-4o-mini"),
    ("implementation", "Write the code", ["design", "test_plan"], "openai", "gpt-4.1"),
]


class Demo:
    def __init__(self, client: Any, console: Console) -> None:
        self.client = client
        self.console = console
        self.step = 0

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await self.client.call_tool(tool, arguments)
        if result.is_error:
            raise RuntimeError("".join(getattr(block, "text", "") for block in result.content))
        structured: dict[str, Any] = result.structured_content
        return structured

    def say(self, text: str) -> None:
        self.step += 1
        self.console.print(f"\n[bold cyan]{self.step}.[/] {text}")

    async def record(self, project: str, pid: str, text: str, provider: str, model: str, tokens: int) -> dict[str, Any]:
        usage = {"provider": provider, "model": model, "prompt_tokens": tokens, "completion_tokens": tokens // 3}
        reply = await self.call(
            "record_execution", project_id=project, process_id=pid, output_data={"text": text}, usage=usage
        )
        cost = reply["cost"]["cost_usd"] if reply.get("cost") else None
        self.console.print(
            f"   recorded [bold]{pid}[/] → {reply['state']['state']} v{reply['state']['version']}"
            f"  ({model}, {tokens} + {tokens // 3} tokens, ${cost})"
        )
        return reply


async def run_demo(console: Console) -> None:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    with tempfile.TemporaryDirectory(prefix="pipeline-state-demo-") as folder:
        database = Path(folder) / "demo.db"
        env = {key: value for key, value in os.environ.items() if not key.startswith("PIPELINE_STATE_")}
        env |= {"PIPELINE_STATE_DATABASE_URL": f"sqlite:///{database}", "PIPELINE_STATE_LOG_LEVEL": "WARNING"}
        params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_server", "serve"], env=env)
        console.print(f"[bold]pipeline-state-mcp demo[/]: a server over stdio on a temporary database ({database})")
        async with Client(params) as client:
            demo = Demo(client, console)
            tools = await client.list_tools()
            demo.say(f"The client connects and lists {len(tools.tools)} tools.")
            await _define_pipeline(demo)
            project = await _first_run(demo)
            await _refused(demo, project)
            await _change_requirements(demo, project)
            await _rework(demo, project)
        console.print(
            "\nDone. Wire it into your agent: see README.md (claude mcp add pipeline-state -- pipeline-state-mcp)."
        )


async def _define_pipeline(demo: Demo) -> None:
    demo.say("Define pipeline 'app' in one call: four steps (a DAG), an output schema on each.")
    steps = [
        {"process_id": pid, "name": name, "depends_on": deps, "output_schema": TEXT_OUT}
        for pid, name, deps, _, _ in PIPELINE
    ]
    await demo.call("apply_pipeline", pipeline_id="app", processes=steps)
    for pid, _, deps, _, _ in PIPELINE:
        demo.console.print(f"   {pid}" + (f"  ← {', '.join(deps)}" if deps else ""))


async def _first_run(demo: Demo) -> str:
    """Create the project and run every step once; returns the project's id."""
    project: str = (await demo.call("create_project", name="todo-app", budget_usd="0.05", pipeline_id="app"))["id"]
    demo.say(f"Create project 'todo-app' on pipeline 'app' with a $0.05 budget: {project}")

    demo.say("Run every step in order, reporting each LLM call's tokens (priced automatically).")
    for pid, _, _, provider, model in PIPELINE:
        await demo.record(project, pid, f"{pid} v1", provider, model, 1200)
    return project


async def _refused(demo: Demo, project: str) -> None:
    demo.say("A schema violation is refused, and nothing is written.")
    bad = await demo.client.call_tool(
        "record_execution", {"project_id": project, "process_id": "design", "output_data": {"text": ""}}
    )
    message = "".join(getattr(block, "text", "") for block in bad.content)
    demo.console.print(f"   [yellow]{escape(message.splitlines()[0])}[/]", highlight=False)


async def _change_requirements(demo: Demo, project: str) -> None:
    demo.say("The requirements change: re-record them. Everything downstream goes stale.")
    reply = await demo.record(project, "requirements", "requirements v2", "anthropic", "claude-sonnet-4-5", 900)
    for hit in reply["invalidated"]:
        demo.console.print(f"   [red]invalidated[/] {hit['process_id']} (was {hit['previous_state']})")

    status = await demo.call("get_pipeline_status", project_id=project)
    demo.say(
        f"The status says what can run next ({', '.join(status['ready_processes'])}) and the plan to "
        f"redo: {' → '.join(status['plan'])}."
    )
    demo.console.print(status_table(status))


async def _rework(demo: Demo, project: str) -> None:
    """Re-run the stale steps, then show the status, the cost by model and the budget."""
    demo.say("Re-run the stale steps; the re-runs are the cost of rework.")
    for pid, _, _, provider, model in PIPELINE[1:]:
        await demo.record(project, pid, f"{pid} v2", provider, model, 1200)

    status = await demo.call("get_pipeline_status", project_id=project)
    demo.say("Pipeline status:")
    demo.console.print(status_table(status))
    summary = await demo.call("get_cost_summary", project_id=project, group_by=["model"])
    demo.say("Cost summary by model:")
    demo.console.print(cost_table(summary, ["model"]))
    budget = status.get("cost") or {}
    demo.console.print(
        f"   budget ${budget.get('budget_usd')}: spent ${budget.get('spent_usd')}, "
        f"remaining ${budget.get('remaining_usd')}, exceeded: {budget.get('exceeded')}"
    )


def main_demo() -> int:
    import anyio

    console = Console(width=None if sys.stdout.isatty() else 120)
    anyio.run(run_demo, console)
    return 0
