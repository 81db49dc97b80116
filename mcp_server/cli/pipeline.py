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
MAX_DEPTH = 100  # nesting levels of a pipeline file (schemas included), aliases expanded
MAX_VALUES = 200_000  # values of a pipeline file, every alias counted each time it is used


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


class Refused(ValueError):
    """A pipeline file that parses but is refused: nested too deep, too large once its aliases are
    expanded, an alias inside itself, or a key given twice."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        super().__init__(problem + where)


def _loader(text: str) -> Any:
    """A safe YAML loader (plain data only: no tags, no objects) that bounds the nesting while it
    composes and refuses a mapping that gives a key twice (YAML and JSON both would keep the last)."""
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise Refused(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)  # type: ignore[no-untyped-call]
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults`: keys given here may override the merged ones
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, str | int | float | bool) or key is None:
                    if key in seen:
                        raise Refused(f"the key {key!r} is given twice", key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader(text)


def _expanded(node: Any, depth: int, sizes: dict[int, tuple[int, int]], open_: set[int]) -> int:
    """How many values ``node`` stands for with every alias expanded (memoised by node: a billion laughs
    costs its distinct nodes, not its expansion); Refused past MAX_VALUES, MAX_DEPTH or on a cycle."""
    import yaml

    known = sizes.get(id(node))
    if known is not None:
        if depth + known[1] > MAX_DEPTH:
            raise Refused(f"nested deeper than {MAX_DEPTH} levels once its aliases are expanded", node.start_mark)
        return known[0]
    if id(node) in open_:
        raise Refused("an alias refers to the value that contains it", node.start_mark)
    if depth > MAX_DEPTH:
        raise Refused(f"nested deeper than {MAX_DEPTH} levels once its aliases are expanded", node.start_mark)
    children: list[Any] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    open_.add(id(node))
    size, height = 1, 0
    for child in children:
        size += _expanded(child, depth + 1, sizes, open_)
        height = max(height, sizes[id(child)][1] + 1)
        if size > MAX_VALUES:
            raise Refused(f"more than {MAX_VALUES} values once its aliases are expanded", node.start_mark)
    open_.discard(id(node))
    sizes[id(node)] = (size, height)
    return size


def load_text(text: str) -> Any:
    """The data of a YAML or JSON text (JSON is YAML), bounded: see _loader and _expanded."""
    loader = _loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded(node, 1, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


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
        data = load_text(text)
    except Refused as exc:
        raise FileError(f"{path}: {exc}") from None
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
        for name in ("description", "input_schema", "output_schema", "timeout_seconds", "reuse_ttl_seconds"):
            if getattr(item, name) is not None:
                spec[name] = getattr(item, name)
        if item.required_checks:
            spec["required_checks"] = item.required_checks
        for name, default in (("max_attempts", 3), ("retry_backoff_seconds", 0), ("reuse", "project")):
            if getattr(item, name) != default:  # the retry policy only where it is not the default
                spec[name] = getattr(item, name)
        processes.append(spec)
    return {"pipeline_id": pipeline_id, "processes": processes}


def run_pipeline(settings: Settings, args: argparse.Namespace) -> int:
    import anyio

    from mcp_server.cli.tables import visible
    from mcp_server.errors import DomainError

    try:
        if args.action == "export":
            data = anyio.run(_export, settings, args.pipeline_id)
            sys.stdout.write(_exported(data, as_json=args.json))
            return 0
        pipeline_id, specs = read_file(args.file)
        plan = anyio.run(_apply, settings, pipeline_id, specs, args.dry_run)
    except FileError as exc:
        sys.stderr.write(visible(f"pipeline-state-mcp: {exc}", keep="\n") + "\n")
        return 2
    except DomainError as exc:
        sys.stderr.write(visible(exc.render(), keep="\n") + "\nNothing was changed.\n")
        return 1
    _print_plan(plan)
    if plan.get("blocked"):  # only a dry run gets here with it: applying would be refused
        sys.stderr.write(
            visible(f"conflict: applying would be refused: processes {plan['blocked']} have executions")
            + "\nNothing was changed.\n"
        )
        return 1
    return 0


def _exported(data: dict[str, Any], *, as_json: bool) -> str:
    """The export as text with every invisible control character escaped (JSON ``\\u009b``, YAML in double
    quotes), so printing it to a terminal is safe and applying it reads back the same names."""
    import yaml

    from mcp_server.cli.tables import INVISIBLE

    text = json.dumps(data, indent=2, ensure_ascii=False)
    escapes = {code: f"\\u{code:04x}" for code in INVISIBLE if code != ord("\n")}
    if as_json:  # outside strings JSON has none of them but newlines; inside, \u reads back the same
        return text.translate(escapes) + "\n"
    # YAML escapes C0 and C1 itself, but with allow_unicode writes a bidi override as it is: then ASCII.
    plain = text.translate(escapes) == text
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=plain))


def _print_plan(plan: dict[str, Any]) -> None:
    from rich.console import Console

    from mcp_server.cli.tables import line, text

    console = Console(width=None if sys.stdout.isatty() else 120)
    verb = "would" if plan["dry_run"] else "did"
    outcome = "dry run: nothing changed" if plan["dry_run"] else "applied"
    console.print(line("pipeline ", text(plan["pipeline_id"], style="bold"), f" ({outcome})"))
    for label, key in (("added", "added"), ("changed", "changed"), ("removed", "removed")):
        ids = plan[key]
        console.print(line(f"  {label:8} {len(ids):4}  ", text(", ".join(ids))))
    console.print(f"  {'unchanged':8} {plan['unchanged']:4}", markup=False)
    if plan.get("blocked"):
        blocked = text(", ".join(plan["blocked"]))
        console.print(line(text("  refused", style="red"), ": ", blocked, " have executions and cannot be removed"))
    console.print(f"  stale: {verb} make {plan['stale_states']} state(s) stale in {plan['stale_projects']} project(s)")
