"""Generate docs/tools.md from the live server's tools/list, resources/templates/list and prompts/list.

Run: ``python docs/generate.py`` (writes docs/tools.md); ``--check`` exits 1 when the file is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

OUTPUT = Path(__file__).resolve().parent / "tools.md"
TOOLSET_OF = {
    "projects": [
        "create_project", "get_project", "list_projects", "update_project", "delete_project", "restore_project",
    ],
    "pipeline": [
        "define_process", "list_processes", "delete_process", "start_execution", "record_execution",
        "fail_execution", "get_execution", "list_executions", "get_process_state", "get_pipeline_status",
        "invalidate_process", "record_check",
    ],
    "prompts": ["save_prompt_version", "get_prompt_version", "list_prompt_versions"],
    "costs": ["report_cost", "get_cost_summary"],
}  # fmt: skip


def _type(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _type(defs.get(name, {}), defs) if defs.get(name, {}).get("enum") else f"object ({name})"
    if "anyOf" in schema:
        return " | ".join(_type(option, defs) for option in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}), defs)}"
    if schema.get("format"):
        return f"{kind} ({schema['format']})"
    return str(kind)


def _limits(schema: dict[str, Any]) -> str:
    keys = ("minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength", "pattern", "maxItems")
    parts = [f"{key} {schema[key]}" for key in keys if key in schema]
    for option in schema.get("anyOf", []):
        parts += [f"{key} {option[key]}" for key in keys if key in option]
    return ", ".join(parts)


def render_tool(tool: Any) -> list[str]:
    from mcp_server.schemas.portable import free_form_arguments

    schema = tool.input_schema
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    notes = tool.annotations
    hints = (
        f"read-only: {notes.read_only_hint}, destructive: {notes.destructive_hint}, idempotent: {notes.idempotent_hint}"
        if notes
        else "none"
    )
    free_form = free_form_arguments(schema)
    strict = f"no (free-form {', '.join(f'`{name}`' for name in free_form)})" if free_form else "yes"
    lines = [
        f"### `{tool.name}`",
        "",
        (tool.description or "").strip(),
        "",
        f"Annotations: {hints}. OpenAI strict mode: {strict}.",
        "",
    ]
    properties = schema.get("properties", {})
    if properties:
        lines += ["| argument | type | required | default | description |", "|---|---|---|---|---|"]
        for name, prop in properties.items():
            default = json.dumps(prop["default"]) if "default" in prop else ""
            # An optional argument carries its description inside its non-null branch (portable schemas).
            described = [prop, *prop.get("anyOf", [])]
            text = next((option["description"] for option in described if "description" in option), "")
            description = text.replace("|", "\\|")
            limits = _limits(prop)
            if limits:
                description += f" ({limits})"
            kind = _type(prop, defs).replace("|", "\\|")
            lines.append(f"| `{name}` | {kind} | {'yes' if name in required else 'no'} | {default} | {description} |")
    else:
        lines.append("No arguments.")
    output = tool.output_schema or {}
    if output.get("properties"):
        lines += ["", "Returns: " + ", ".join(f"`{key}`" for key in output["properties"]) + "."]
    return [*lines, ""]


def _error_codes_lines() -> list[str]:
    """The codes a tool error starts with, from mcp_server.errors: the list the server's instructions and
    the tests read too."""
    import textwrap

    from mcp_server.errors import error_codes

    codes = [f"`{code}`" for code in error_codes()]
    listed = f"{', '.join(codes[:-1])} or {codes[-1]}. Null fields are left out of replies."
    return [
        "Every tool returns structured content matching its output schema. A failure is a tool error",
        "whose text starts `Error executing tool <name>: <code>:` with one of the codes",
        *textwrap.wrap(listed, width=100, break_long_words=False, break_on_hyphens=False),
    ]


async def generate() -> str:
    from mcp import Client

    from mcp_server.schemas.portable import free_form_arguments
    from mcp_server.server import build_server
    from mcp_server.settings import Settings

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(database_url=f"sqlite:///{folder}/docs.db", log_level="WARNING")
        async with Client(build_server(settings)) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            templates = (await client.list_resource_templates()).resource_templates
            resources = (await client.list_resources()).resources
            await client.call_tool(
                "save_prompt_version",
                {"prompt_id": "example", "system_prompt": "You are terse.", "user_template": "Summarise {{text}}"},
            )
            prompts = (await client.list_prompts()).prompts
    lines = [
        "# Tool reference",
        "",
        "Generated by `python docs/generate.py` from the server's own `tools/list`, `resources/list`,",
        "`resources/templates/list` and `prompts/list`; a test fails when this file is out of date.",
        "",
        *_error_codes_lines(),
        "",
        "Input schemas are portable: google-genai's MCP conversion and MCP Inspector's portability check take",
        'them unchanged, and `null` for an optional argument means "not given" (that is how OpenAI strict mode',
        "calls a tool: every key present). openai-agents converts every tool to a strict schema except those",
        "with a free-form JSON object argument, which stay non-strict: "
        + ", ".join(f"`{name}`" for name, tool in tools.items() if free_form_arguments(tool.input_schema))
        + ".",
        "",
    ]
    listed = {name for names in TOOLSET_OF.values() for name in names}
    for toolset, names in TOOLSET_OF.items():
        lines += [f"## Toolset `{toolset}`", ""]
        for name in names:
            if name in tools:
                lines += render_tool(tools[name])
    others = sorted(set(tools) - listed)
    if others:
        lines += ["## Other tools", ""]
        for name in others:
            lines += render_tool(tools[name])
    lines += ["## Resources", ""]
    for resource in resources:
        lines.append(f"- `{resource.uri}` ({resource.mime_type}): {resource.description}")
    for template in templates:
        lines.append(f"- `{template.uri_template}` ({template.mime_type}): {template.description}")
    lines += ["", "## Prompts", ""]
    lines.append("Every prompt saved with `save_prompt_version` is also an MCP prompt named after its `prompt_id`; its")
    lines.append("arguments are the `{{placeholders}}` of the latest version's `user_template`; its description ends")
    lines.append("with the `prompt_version_id` to record with the execution that uses it. For example:")
    lines.append("")
    for prompt in prompts:
        arguments = ", ".join(f"`{a.name}` (required)" for a in prompt.arguments or [])
        # The version id is new in every run: shown as a placeholder, so the file stays reproducible.
        description = re.sub(r"prompt_version_id [0-9a-f-]{36}", "prompt_version_id <uuid>", prompt.description or "")
        lines.append(f"- `{prompt.name}`: {' '.join(description.split())} Arguments: {arguments}.")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/tools.md differs")
    args = parser.parse_args()
    text = anyio.run(generate)
    if args.check:
        if OUTPUT.read_text() != text:
            sys.stderr.write("docs/tools.md is out of date: run python docs/generate.py\n")
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
