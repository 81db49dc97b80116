"""JSON Schema 2020-12: checking schemas when defined and data against them (pure).

User schemas are data, never a way out of the server. Validation uses jsonschema-rs with:

- a retriever that refuses every lookup: a ``$ref``/``$dynamicRef``/``$schema`` that points outside the
  schema fails when the validator is built, wherever it hides, and nothing is ever fetched or read;
- the linear-time regex engine (Rust's ``regex``) for ``pattern`` and ``patternProperties``: no pattern
  can make a check run away. Lookaround and backreferences, which need backtracking, are refused when
  the schema is defined;
- references resolved lazily, so a self-referential schema (``{"$ref": "#"}``) validates in bounded time.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Any

from mcp_server.errors import InvalidArgument, SchemaViolation


def canonical_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def json_hash(value: Any) -> str:
    """sha256 of the canonical JSON form (key order and whitespace do not matter)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


class RemoteReferenceRefused(LookupError):
    """Raised by the retriever: a schema referred to something outside itself."""


def _refuse(uri: str) -> Any:
    raise RemoteReferenceRefused(f"{uri[:200]!r} is outside the schema; nothing is fetched or read")


def _reason(message: str) -> str:
    """What is wrong with a schema, said as the rest of a sentence that starts with the field's name."""
    first = message.strip().splitlines()[0][:500] if message.strip() else ""
    unresolved = re.match(r"Resource '(.*?)' is not present in a registry", first) or re.match(
        r"Pointer '(.*?)' does not exist", first
    )
    if unresolved:
        target = unresolved.group(1)
        target = f"#{target}" if first.startswith("Pointer") else target
        return (
            f"refers to {target!r}, which cannot be resolved: only references inside the schema work "
            "(nothing is fetched or read)"
        )
    pattern = re.match(r'(".*") is not a "regex"', first)
    if pattern:
        return (
            f"has the pattern {pattern.group(1)}, which is not supported: patterns run in a linear-time engine, "
            "without lookaround or backreferences"
        )
    return f"is not a valid JSON Schema 2020-12: {first or 'invalid schema'}"


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """The validator for one schema (canonical JSON), built once; raises ``ValueError`` for a bad schema."""
    import jsonschema_rs

    schema = json.loads(schema_json)
    try:
        return jsonschema_rs.Draft202012Validator(
            schema,
            validate_formats=True,
            retriever=_refuse,
            pattern_options=jsonschema_rs.RegexOptions(),
        )
    except jsonschema_rs.ValidationError as exc:  # the schema is not valid 2020-12, or a reference failed
        raise ValueError(_reason(exc.message)) from None
    except jsonschema_rs.ReferencingError as exc:
        raise ValueError(_reason(str(exc))) from None


def check_schema(schema: dict[str, Any], *, field: str) -> None:
    """Refuse a schema that is not valid JSON Schema 2020-12, refers outside itself, or needs a
    backtracking regex: ``invalid_argument`` naming the field and the problem."""
    try:
        _validator(canonical_json(schema))
    except ValueError as exc:
        raise InvalidArgument(
            f"{field} {exc}",
            hint="Fix the schema (put shared parts under $defs, refer to them as #/$defs/<name>), or omit it",
        ) from None


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
        {"path": _json_path(error.instance_path), "message": error.message} for error in validator.iter_errors(data)
    ]
    return sorted(found, key=lambda v: (v["path"], v["message"]))


def validate(schema: dict[str, Any] | None, data: Any, *, what: str, process_id: str) -> None:
    try:
        found = violations(schema, data)
    except ValueError as exc:
        # A definition stored before these checks existed can still be unusable (a reference to a URL):
        # it fails here, naming the schema, and nothing is fetched.
        field = "input_schema" if what == "input_data" else "output_schema"
        raise InvalidArgument(
            f"the {field} of process {process_id!r} {exc}; nothing was written",
            hint="Redefine the process with define_process, putting shared parts under $defs",
        ) from None
    if found:
        raise SchemaViolation(
            f"{what} of process {process_id!r} violates its schema ({len(found)} problem(s))",
            hint="Fix every listed path and call again; nothing was written",
            details={"violations": found},
        )
