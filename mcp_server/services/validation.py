"""JSON Schema 2020-12: checking schemas when defined and data against them (pure)."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

from mcp_server.errors import InvalidArgument, SchemaViolation


def canonical_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def json_hash(value: Any) -> str:
    """sha256 of the canonical JSON form (key order and whitespace do not matter)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def check_schema(schema: dict[str, Any], *, field: str) -> None:
    """Refuse a schema that is not valid JSON Schema 2020-12."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = "$" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
        raise InvalidArgument(
            f"{field} is not a valid JSON Schema 2020-12 at {path}: {exc.message}",
            hint="Fix the schema, or omit it to accept any JSON",
        ) from None


# Keywords whose values are data, not subschemas: a "$ref" key inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})


def check_references(schema: dict[str, Any], *, field: str) -> None:
    """Refuse a schema whose ``$ref`` leads nowhere: only references inside it work (nothing is fetched)."""
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    root = DRAFT202012.create_resource(schema)
    declared = schema.get("$id")
    base = declared if isinstance(declared, str) else ""
    resolver = Registry().with_resource(base, root).resolver(base_uri=base)
    stack: list[tuple[Any, Any]] = [(schema, resolver)]
    while stack:
        node, scope = stack.pop()
        if isinstance(node, list):
            stack.extend((item, scope) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        if node is not schema and isinstance(node.get("$id"), str):
            scope = scope.in_subresource(DRAFT202012.create_resource(node))
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                scope.lookup(ref)
            except Unresolvable:
                raise InvalidArgument(
                    f"{field} refers to {ref!r}, which cannot be resolved: only references inside the schema "
                    "work (nothing is fetched)",
                    hint="Put shared parts under $defs and refer to them as #/$defs/<name>",
                ) from None
        stack.extend((value, scope) for key, value in node.items() if key not in _DATA_KEYWORDS)


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_json), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def violations(schema: dict[str, Any] | None, data: Any) -> list[dict[str, str]]:
    """Every violation of the schema by the data, each with its JSON path, in path order."""
    if schema is None:
        return []
    validator = _validator(canonical_json(schema))
    found = [
        {"path": _json_path(error.absolute_path), "message": error.message} for error in validator.iter_errors(data)
    ]
    return sorted(found, key=lambda v: (v["path"], v["message"]))


def validate(schema: dict[str, Any] | None, data: Any, *, what: str, process_id: str) -> None:
    from referencing.exceptions import Unresolvable

    try:
        found = violations(schema, data)
    except Unresolvable as exc:
        # A valid schema can still point at nothing ("#/$defs/missing") or elsewhere (a URL): nothing
        # is ever fetched, and the reference only fails once data reaches it.
        field = "input_schema" if what == "input_data" else "output_schema"
        raise InvalidArgument(
            f"the {field} of process {process_id!r} refers to {getattr(exc, 'ref', '?')!r}, which cannot be "
            "resolved (only references inside the schema work; nothing is fetched); nothing was written",
            hint="Redefine the process with define_process, putting shared parts under $defs",
        ) from None
    if found:
        raise SchemaViolation(
            f"{what} of process {process_id!r} violates its schema ({len(found)} problem(s))",
            hint="Fix every listed path and call again; nothing was written",
            details={"violations": found},
        )
