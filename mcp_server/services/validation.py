"""JSON Schema 2020-12: checking schemas when defined and data against them (pure).

User schemas are data, never a way out of the server. Validation uses jsonschema-rs with:

- a retriever that refuses every lookup: a ``$ref``/``$dynamicRef``/``$schema`` that points outside the
  schema fails when the validator is built, wherever it hides, and nothing is ever fetched or read;
- the linear-time regex engine (Rust's ``regex``) for ``pattern`` and ``patternProperties``: no pattern
  can make a check run away. Lookaround and backreferences, which need backtracking, are refused when
  the schema is defined;
- references resolved lazily, so a self-referential schema (``{"$ref": "#"}``) validates in bounded time;
- a bound on what one value costs: a schema may apply at most ``MAX_APPLIED`` subschemas to any one value
  once its references are followed (``applied_size``), checked when it is defined and again when used.

Data is checked on a worker thread (a few at once), before the write lock once the step's schema is known
(``check_ahead``); a violation reply lists the first ``MAX_VIOLATIONS``, clipped, with the count.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.db.engine import database_key
from mcp_server.errors import InvalidArgument, SchemaViolation
from mcp_server.schemas.common import MAX_JSON_DEPTH


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


# --- What a schema costs: the most subschemas it applies to any one value -------------------------------

# A schema applies at most this many subschemas to one value of the data, once its references are followed.
# Real schemas stay in the hundreds (a oneOf of a hundred variants included); a schema whose definitions
# refer to each other twice per level passes it by depth 12, and validating against it would cost 2^depth.
MAX_APPLIED = 10_000

# Keywords whose subschemas apply to the same value, and those that apply to a part of it; ``$defs``
# are only indexed (a definition applies where it is referred to).
_HERE_ONE = ("not", "if", "then", "else")
_HERE_MANY = ("allOf", "anyOf", "oneOf")
_OBJECT_ONE = ("additionalProperties", "unevaluatedProperties", "propertyNames")
_ARRAY_ONE = ("items", "contains", "unevaluatedItems")
_ANY_KEY = "{*}"  # a label for the parts a wildcard keyword reaches: any property ...
_ANY_ITEM = "[*]"  # ... or any item
_ROOT = "https://schema.invalid/root"


class _TooCostly(Exception):
    """The schema applies more than ``MAX_APPLIED`` subschemas to one value (or cannot be followed)."""


def _subschemas(node: dict[str, Any]) -> list[tuple[str | None, Any]]:
    """Each subschema written in ``node`` with where it applies: None (the same value), a property name,
    or one of the wildcard labels; ``$defs`` entries as ``"$defs"``."""
    found: list[tuple[str | None, Any]] = [(None, node[k]) for k in _HERE_ONE if k in node]
    found += [(None, s) for k in _HERE_MANY if isinstance(node.get(k), list) for s in node[k]]
    for key, label in (("dependentSchemas", None), ("patternProperties", _ANY_KEY), ("$defs", "$defs")):
        if isinstance(node.get(key), dict):
            found += [(label, s) for s in node[key].values()]
    if isinstance(node.get("definitions"), dict):
        found += [("$defs", s) for s in node["definitions"].values()]
    if isinstance(node.get("properties"), dict):
        found += [(f"{{{name}}}", s) for name, s in node["properties"].items()]
    found += [(_ANY_KEY, node[k]) for k in _OBJECT_ONE if k in node]
    found += [(_ANY_ITEM, node[k]) for k in _ARRAY_ONE if k in node]
    if isinstance(node.get("prefixItems"), list):
        found += [(_ANY_ITEM, s) for s in node["prefixItems"]]
    return [(label, s) for label, s in found if isinstance(s, dict | bool)]


class _Expansion:
    """A schema's subschemas, its resources (``$id``) and anchors, and how many subschemas apply to one value."""

    def __init__(self, schema: Any) -> None:
        self.nodes: dict[int, Any] = {}
        self.base: dict[int, str] = {}
        self.root = schema
        self.resources: dict[str, Any] = {_ROOT: schema}
        self.anchors: dict[tuple[str, str], Any] = {}
        self.memo: dict[int, dict[int, int]] = {}
        self.open: set[int] = set()
        stack: list[tuple[Any, str]] = [(schema, _ROOT)]
        while stack:
            node, base = stack.pop()
            if id(node) in self.nodes:
                continue
            self.nodes[id(node)] = node
            if isinstance(node, dict):
                if isinstance(node.get("$id"), str):
                    base = urldefrag(urljoin(base, node["$id"]))[0]
                    self.resources[base] = node
                for key in ("$anchor", "$dynamicAnchor"):
                    if isinstance(node.get(key), str):
                        self.anchors[(base, node[key])] = node
                stack += [(s, base) for _, s in _subschemas(node)]
            self.base[id(node)] = base

    def resolve(self, node: dict[str, Any], ref: str) -> Any:
        base = self.base[id(node)]
        document, fragment = (base, ref[1:]) if ref.startswith("#") else urldefrag(urljoin(base, ref))
        target = self.resources.get(document or _ROOT)
        if target is not None and fragment and not fragment.startswith("/"):
            target = self.anchors.get((document or _ROOT, fragment))
        for part in fragment.split("/")[1:] if fragment.startswith("/") else []:
            part = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict):
                target = target.get(part)
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                target = None
        if not isinstance(target, dict | bool):
            raise _TooCostly(f"refers to {ref[:200]!r}, which the server cannot follow to measure the schema")
        if id(target) not in self.nodes:  # a pointer into a part that is not a schema keyword's
            self.nodes[id(target)] = target
            self.base[id(target)] = self.base[id(node)]
        return target

    def here(self, node: Any) -> dict[int, int]:
        """The subschemas that apply to the value ``node`` applies to, each with how many times it does
        (a reference back to a subschema already being applied to that value adds nothing)."""
        key = id(node)
        if key in self.memo:
            return self.memo[key]
        if key in self.open:
            return {}
        self.open.add(key)
        applied = {key: 1}
        if isinstance(node, dict):
            same = [s for label, s in _subschemas(node) if label is None]
            same += [self.resolve(node, node[k]) for k in ("$ref", "$dynamicRef") if isinstance(node.get(k), str)]
            for sub in same:
                for other, times in self.here(sub).items():
                    applied[other] = applied.get(other, 0) + times
                if sum(applied.values()) > MAX_APPLIED:
                    raise _TooCostly("")
        self.open.discard(key)
        self.memo[key] = applied
        return applied

    def _parts(self, applied: dict[int, int]) -> dict[str, dict[int, int]]:
        """What applies to each part of the value (one property, any property, any item)."""
        parts: dict[str, dict[int, int]] = {}
        for key, times in applied.items():
            node = self.nodes[key]
            for label, sub in _subschemas(node) if isinstance(node, dict) else []:
                if label is None or label == "$defs":
                    continue
                into = parts.setdefault(label, {})
                for other, count in self.here(sub).items():
                    into[other] = into.get(other, 0) + count * times
        wildcard = parts.get(_ANY_KEY, {})
        for label, into in parts.items():  # patternProperties and the like may reach a named property too
            if label.startswith("{") and label != _ANY_KEY:
                for other, count in wildcard.items():
                    into[other] = into.get(other, 0) + count
        return parts

    def most_applied(self, depth: int) -> int:
        """The most subschemas applied to one value, down to ``depth`` levels of nesting (an upper bound:
        each level takes, subschema by subschema, the most any one part gets)."""
        applied = self.here(self.root)
        most = sum(applied.values())
        for _ in range(depth):
            parts = self._parts(applied)
            if not parts:
                break
            deeper: dict[int, int] = {}
            for into in parts.values():
                for key, count in into.items():
                    deeper[key] = max(deeper.get(key, 0), count)
            most = max(most, sum(deeper.values()))
            if most > MAX_APPLIED:
                raise _TooCostly("")
            if deeper == applied:  # a recursion that applies as much at every level
                break
            applied = deeper
        return most


def applied_size(schema: Any) -> int:
    """The most subschemas the schema applies to any one value (references followed, recursion as deep
    as data may nest); past ``MAX_APPLIED`` raises ``ValueError`` saying so."""
    try:
        return _Expansion(schema).most_applied(MAX_JSON_DEPTH)
    except RecursionError:
        raise ValueError("refers through a chain of references too long to follow; shorten it") from None
    except _TooCostly as exc:
        reason = str(exc) or (
            f"applies more than {MAX_APPLIED:,} subschemas to one value once its $ref/$dynamicRef are followed "
            f"(the limit is {MAX_APPLIED:,}; definitions that refer to each other more than once per level "
            "double the work at every level)"
        )
        raise ValueError(reason) from None


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> tuple[Any, int]:
    """The validator for one schema (canonical JSON) with its ``applied_size``, built once; raises
    ``ValueError`` for a bad schema, or one that applies too many subschemas to one value."""
    import jsonschema_rs

    schema = json.loads(schema_json)
    try:
        validator = jsonschema_rs.Draft202012Validator(
            schema,
            validate_formats=True,
            retriever=_refuse,
            pattern_options=jsonschema_rs.RegexOptions(),
        )
    except jsonschema_rs.ValidationError as exc:  # the schema is not valid 2020-12, or a reference failed
        raise ValueError(_reason(exc.message)) from None
    except jsonschema_rs.ReferencingError as exc:
        raise ValueError(_reason(str(exc))) from None
    return validator, applied_size(schema)


def check_schema(schema: dict[str, Any], *, field: str) -> None:
    """Refuse a schema that is not valid JSON Schema 2020-12, refers outside itself, needs a backtracking
    regex, or applies more than ``MAX_APPLIED`` subschemas to one value: ``invalid_argument`` naming the
    field and the problem."""
    try:
        _validator(canonical_json(schema))
    except ValueError as exc:
        raise InvalidArgument(
            f"{field} {exc}",
            hint="Fix the schema (put shared parts under $defs, refer to them as #/$defs/<name>), or omit it",
        ) from None


# --- Checking data: bounded replies, off the event loop, before the write lock when possible --------------

# A schema_violation reply lists this many violations (in path order) and counts them all.
MAX_VIOLATIONS = 20
# Characters kept of each violation's path and message (a message may quote the offending value).
MAX_ECHO = 200
# Listing every violation is done when the values of the data times the subschemas applied to one value
# stay under this; past it (listing costs the validator superlinear time, anyOf and oneOf most) only the
# first violation found is listed, which costs no more than one value's check.
LIST_ALL_BUDGET = 200_000
# Validations running at once in one server process, each on a worker thread.
CONCURRENT_CHECKS = 4


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


@dataclass(frozen=True)
class Found:
    """What checking data against a schema found: how many violations (``complete``: all were counted,
    else only the first found is), and the first ``MAX_VIOLATIONS`` in path order, each clipped."""

    count: int = 0
    first: list[dict[str, str]] = field(default_factory=list)
    complete: bool = True


def _values(data: Any, limit: int) -> int:
    """How many JSON values ``data`` holds, counting stops past ``limit``."""
    count, stack = 0, [data]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _violation(error: Any) -> dict[str, str]:
    return {"path": clip(_json_path(error.instance_path)), "message": clip(error.message)}


def _find(schema_json: str, data: Any) -> Found | str:
    """Check ``data`` (runs on a worker thread): what was found, or why the schema cannot be used."""
    import jsonschema_rs

    try:
        validator, applied = _validator(schema_json)
    except ValueError as exc:
        return str(exc)
    if validator.is_valid(data):
        return Found()
    if applied * _values(data, LIST_ALL_BUDGET // applied) > LIST_ALL_BUDGET:
        try:
            validator.validate(data)
        except jsonschema_rs.ValidationError as error:
            return Found(1, [_violation(error)], complete=False)
    found = sorted(
        (_violation(error) for error in validator.iter_errors(data)), key=lambda v: (v["path"], v["message"])
    )
    return Found(len(found), found[:MAX_VIOLATIONS])


def violations(schema: dict[str, Any] | None, data: Any) -> Found:
    """The violations of the schema by the data (checked here, on this thread); ``ValueError`` if the
    schema cannot be used."""
    if schema is None:
        return Found()
    result = _find(canonical_json(schema), data)
    if isinstance(result, str):
        raise ValueError(result)
    return result


_limiter: RunVar[CapacityLimiter] = RunVar("schema_checks")


async def _find_off_loop(schema_json: str, data: Any) -> Found | str:
    try:
        limiter = _limiter.get()
    except LookupError:
        limiter = CapacityLimiter(CONCURRENT_CHECKS)
        _limiter.set(limiter)
    return await anyio.to_thread.run_sync(_find, schema_json, data, limiter=limiter)


# The schema each (database, project, process, field) was last checked against, for the next call to check
# its data before it takes the write lock. A schema changed meanwhile is noticed under the lock.
_KEPT_SCHEMAS = 4096
_last_schema: OrderedDict[tuple[str, str, str, str], str | None] = OrderedDict()
_last_schema_lock = threading.Lock()  # units of work on several threads share it


def _raise(result: Found | str, *, what: str, process_id: str) -> None:
    if isinstance(result, str):
        # A definition stored before these checks existed can still be unusable (a reference to a URL, or
        # too costly to check against): it fails here, naming the schema, and nothing is fetched.
        field_name = "input_schema" if what == "input_data" else "output_schema"
        raise InvalidArgument(
            f"the {field_name} of process {process_id!r} {result}; nothing was written",
            hint="Redefine the process with define_process, putting shared parts under $defs",
        )
    if result.count and not result.complete:
        raise SchemaViolation(
            f"{what} of process {process_id!r} violates its schema (the first problem found is listed: data this "
            "large is not checked path by path against this schema)",
            hint="Fix it, check the rest of the data yourself, and call again; nothing was written",
            details={"violations": result.first, "violation_count": None},
        )
    if result.count:
        listed = "" if result.count <= len(result.first) else f", the first {len(result.first)} listed"
        raise SchemaViolation(
            f"{what} of process {process_id!r} violates its schema ({result.count} problem(s){listed})",
            hint="Fix every listed path and call again; nothing was written",
            details={"violations": result.first, "violation_count": result.count},
        )


def validate(schema: dict[str, Any] | None, data: Any, *, what: str, process_id: str) -> None:
    """Check data against a schema on this thread: ``schema_violation`` listing the first violations, or
    ``invalid_argument`` if the schema cannot be used."""
    if schema is not None:
        _raise(_find(canonical_json(schema), data), what=what, process_id=process_id)


@dataclass
class Checks:
    """Data checked ahead of the write lock against the schemas last seen for its step; ``validate``
    uses those results when the schema read under the lock is the same, and checks again otherwise."""

    key: tuple[str, str, str]
    done: dict[str, tuple[str, Any, Found | str]] = field(default_factory=dict)

    async def validate(self, schema: dict[str, Any] | None, data: Any, *, what: str, process_id: str) -> None:
        schema_json = None if schema is None else canonical_json(schema)
        with _last_schema_lock:
            _last_schema[(*self.key, what)] = schema_json
            _last_schema.move_to_end((*self.key, what))
            while len(_last_schema) > _KEPT_SCHEMAS:
                _last_schema.popitem(last=False)
        if schema_json is None:
            return
        ahead = self.done.get(what)
        if ahead is not None and ahead[0] == schema_json and (ahead[1] is data or ahead[1] == data == {}):
            result = ahead[2]
        else:  # the first call for this step, or its schema changed: checked now, still off the event loop
            result = await _find_off_loop(schema_json, data)
        _raise(result, what=what, process_id=process_id)


async def check_ahead(session: AsyncSession, project_id: Any, process_id: str, **data: Any) -> Checks:
    """Check each ``what=data`` against the schema last seen for the step, off the event loop and before
    the caller's first statement (which takes the write lock): a slow check holds no lock and no loop."""
    checks = Checks((database_key(session), str(project_id), process_id))
    for what, value in data.items():
        schema_json = _last_schema.get((*checks.key, what))
        if schema_json is not None:
            checks.done[what] = (schema_json, value, await _find_off_loop(schema_json, value))
    return checks
