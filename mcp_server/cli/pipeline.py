"""``pipeline-state-mcp pipeline apply FILE`` and ``pipeline export PIPELINE_ID``: pipelines as files.

A pipeline file (YAML or JSON) has ``pipeline_id`` and ``processes``, each with define_process's fields.
``apply`` brings the database to the file in one transaction (as the apply_pipeline tool does) and prints
the plan; ``export`` prints the file that ``apply`` reads back unchanged. A team keeps its pipeline in
its own repository and applies it like a migration.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from mcp_server.settings import Settings

FILE_LIMIT = 16 * 1024 * 1024  # a pipeline file, read whole


def add_parsers(commands: Any) -> None:
    pipeline = commands.add_parser("pipeline", help="apply or export a pipeline file (YAML or JSON)")
    actions = pipeline.add_subparsers(dest="action", required=True)
    apply = actions.add_parser("apply", help="make the database's pipeline exactly the file's")
    apply.add_argument("file", type=Path)
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    export = actions.add_parser("export", help="print a pipeline as the file apply reads")
    export.add_argument("pipeline_id")
    export.add_argument("--json", action="store_true", help="JSON instead of YAML")


class FileError(ValueError):
    """A pipeline file that cannot be read: the message says where and why."""


def read_file(path: Path) -> tuple[str, list[Any]]:
    """The file's pipeline id and its processes (as ProcessSpec), or FileError."""
    import yaml
    from pydantic import ValidationError

    from mcp_server.enums import DEFAULT_PIPELINE
    from mcp_server.schemas.common import SLUG_PATTERN
    from mcp_server.schemas.pipeline import ProcessSpec

    try:
        if path.stat().st_size > FILE_LIMIT:
            raise FileError(f"{path} is larger than {FILE_LIMIT // (1024 * 1024)} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FileError(f"cannot read {path}: {exc}") from None
    try:
        # JSON is YAML; the safe loader builds plain data only (no tags, no objects).
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FileError(f"{path} is not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("processes"), list):
        raise FileError(f"{path} must be a mapping with `pipeline_id` and a list `processes`")
    unknown = sorted(set(data) - {"pipeline_id", "processes"})
    if unknown:
        raise FileError(f"{path}: unknown keys {unknown} (a pipeline file has pipeline_id and processes)")
    pipeline_id = data.get("pipeline_id", DEFAULT_PIPELINE)
    specs = []
    for index, item in enumerate(data["processes"]):
        try:
            specs.append(ProcessSpec.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                ".".join(str(part) for part in error["loc"]) + ": " + error["msg"]
                for error in exc.errors(include_url=False, include_input=False)
            )
            raise FileError(f"{path}: processes[{index}]: {problems}") from None
    if not isinstance(pipeline_id, str) or not re.fullmatch(SLUG_PATTERN, pipeline_id):
        raise FileError(f"{path}: pipeline_id must be a slug like `review` (lower case, digits, - and _)")
    return pipeline_id, specs


async def _apply(settings: Settings, pipeline_id: str, specs: list[Any], dry_run: bool) -> dict[str, Any]:
    from mcp_server.db.engine import Database
    from mcp_server.db.migrate import upgrade_to_head
    from mcp_server.schemas.portable import reply_data
    from mcp_server.services import definitions

    db = Database.connect(settings.url)
    try:
        if settings.auto_migrate:
            await upgrade_to_head(settings.async_database_url, engine=db.engine)
        async with db.unit_of_work() as session:
            plan = await definitions.apply(
                session, pipeline_id=pipeline_id, specs=specs, dry_run=dry_run, actor="pipeline-state-mcp cli"
            )
            return reply_data(plan)  # type: ignore[no-any-return]
    finally:
        await db.dispose()


async def _export(settings: Settings, pipeline_id: str) -> dict[str, Any]:
    from mcp_server.db.engine import Database
    from mcp_server.services import definitions

    db = Database.connect(settings.url)
    try:
        async with db.unit_of_work(write=False) as session:
            catalogue = await definitions.list_all(session, pipeline_id)
    finally:
        await db.dispose()
    processes = []
    for item in catalogue.items:
        spec: dict[str, Any] = {"process_id": item.id, "name": item.name}
        if item.depends_on:
            spec["depends_on"] = item.depends_on
        if item.order_index:
            spec["order_index"] = item.order_index
        for name in ("description", "input_schema", "output_schema"):
            if getattr(item, name) is not None:
                spec[name] = getattr(item, name)
        processes.append(spec)
    return {"pipeline_id": pipeline_id, "processes": processes}


def run_pipeline(settings: Settings, args: argparse.Namespace) -> int:
    import anyio

    from mcp_server.errors import DomainError

    try:
        if args.action == "export":
            data = anyio.run(_export, settings, args.pipeline_id)
            if args.json:
                sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            else:
                import yaml

                sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
            return 0
        pipeline_id, specs = read_file(args.file)
        plan = anyio.run(_apply, settings, pipeline_id, specs, args.dry_run)
    except FileError as exc:
        sys.stderr.write(f"pipeline-state-mcp: {exc}\n")
        return 2
    except DomainError as exc:
        sys.stderr.write(exc.render() + "\nNothing was changed.\n")
        return 1
    _print_plan(plan)
    return 0


def _print_plan(plan: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 120)
    verb = "would" if plan["dry_run"] else "did"
    console.print(
        f"pipeline [bold]{plan['pipeline_id']}[/] ({'dry run: nothing changed' if plan['dry_run'] else 'applied'})"
    )
    for label, key in (("added", "added"), ("changed", "changed"), ("removed", "removed")):
        ids = plan[key]
        console.print(f"  {label:8} {len(ids):4}  {', '.join(ids)}")
    console.print(f"  {'unchanged':8} {plan['unchanged']:4}")
    if plan.get("blocked"):
        console.print(f"  [red]refused[/]: {', '.join(plan['blocked'])} have executions and cannot be removed")
    console.print(f"  stale: {verb} make {plan['stale_states']} state(s) stale in {plan['stale_projects']} project(s)")
