"""Tool schemas every provider SDK takes unchanged, and the argument rule that goes with them.

pydantic writes input schemas that some clients cannot load: ``$ref``/``$defs``, ``additionalProperties:
true`` (google-genai's MCP conversion crashes on any boolean there), ``anyOf [X, null]`` with the
description outside the branches (Gemini keeps only the branch, so the description is lost), auto
``title``s and ``default: null`` (tokens the model pays for on every request). ``portable_input_schema``
rewrites a tool's input schema into the subset google-genai, OpenAI strict mode and MCP Inspector's
portability check accept:

- references inlined, no ``$defs``; no ``title``; no ``additionalProperties`` (unknown arguments are
  refused by the server instead, see ``checked_arguments``);
- a required argument is its plain typed schema; an optional one is ``anyOf [X, {"type": "null"}]``
  with the description inside X, so that OpenAI strict mode (which makes every key required) can send
  ``null``, and ``null`` means "not given". A tool with a free-form object argument cannot be strict
  for OpenAI anyway: its optional arguments stay plain X (null is still taken as "not given");
- free-form JSON is ``{"type": "object"}``; size bounds the server enforces anyway are left out.

``compact_output_schema`` keeps output schemas exact but small: no titles, no ``additionalProperties:
true``, no defaults (the reply always carries every field), no formats (annotations only), no ``type``
beside an enum of strings.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

# Bounds that only matter to the server (it enforces them with a clear error): not worth tokens.
SERVER_ONLY_KEYWORDS = frozenset({"title", "default", "maxLength", "minLength", "maxItems", "minItems"})
# A maximum guides the model only when it is small (page_size ≤ 100, temperature ≤ 2).
GUIDING_MAXIMUM = 1000
NULL = {"type": "null"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs[ref.removeprefix("#/$defs/")]
        node = {**target, **{key: value for key, value in node.items() if key != "$ref"}}
    return {key: _inline(value, defs) for key, value in node.items() if key != "$defs"}


def _null_branch(branch: Any) -> bool:
    return isinstance(branch, dict) and branch == NULL


def _clean(node: dict[str, Any], *, nullable: bool = True) -> dict[str, Any]:
    """One schema node without server-only keywords, its sub-schemas cleaned and its optional properties
    nullable (or, with ``nullable`` false, plain)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in SERVER_ONLY_KEYWORDS or key == "additionalProperties":  # google-genai fails on any boolean
            continue
        if key == "maximum" and isinstance(value, int | float) and value > GUIDING_MAXIMUM:
            continue
        if key == "minimum" and (value == 0 or (isinstance(value, int | float) and value < -GUIDING_MAXIMUM)):
            continue  # counts, versions, durations are never negative, obviously; a far floor guides nothing
        if key == "properties":
            out[key] = {name: _clean(sub, nullable=nullable) for name, sub in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = _clean(value, nullable=nullable)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [_clean(branch, nullable=nullable) for branch in value]
        else:
            out[key] = value
    if out.get("type") == "object" or "properties" in out:
        out["type"] = "object"
        required = set(out.get("required", ()))
        for name, prop in out.get("properties", {}).items():
            if name not in required:
                out["properties"][name] = _nullable(prop) if nullable else _not_null(prop)
    return out


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """X with its description: the optional property without its null branch."""
    inner: dict[str, Any] = _nullable(prop)["anyOf"][0]
    return inner


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    """``anyOf [X with its description, null]``: Gemini's converter keeps X whole, OpenAI strict can send null."""
    prop = dict(prop)
    description = prop.pop("description", None)
    branches = prop.pop("anyOf", None)
    if branches is not None:
        kept = [branch for branch in branches if not _null_branch(branch)]
        inner = kept[0] if len(kept) == 1 else {"anyOf": kept}
        inner = {**inner, **prop}
    else:
        inner = prop
    if description is not None:
        inner = {**inner, "description": description}
    return {"anyOf": [inner, dict(NULL)]}


def portable_input_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The input schema in the portable subset described in the module docstring."""
    inlined = _inline(schema, schema.get("$defs", {}))
    cleaned = _clean(inlined)
    if free_form_arguments(cleaned):
        # OpenAI cannot call this tool in strict mode anyway, so nothing needs to send null for "not given":
        # the optional arguments stay plain, which saves the model a dozen tokens each.
        cleaned = _clean(inlined, nullable=False)
    cleaned.setdefault("properties", {})
    if not cleaned.get("required"):
        cleaned.pop("required", None)
    return cleaned


def _compact(node: Any) -> Any:
    if isinstance(node, list):
        return [_compact(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "default", "format") and not isinstance(value, dict):
            continue  # "format" only annotates (JSON Schema 2020-12 does not assert it): the reply's text says it
        if key == "additionalProperties" and value is True:
            continue
        if key in ("properties", "$defs"):
            out[key] = {name: _compact(sub) for name, sub in value.items()}
        else:
            out[key] = _compact(value)
    if isinstance(out.get("enum"), list) and out.get("type") == "string":
        out.pop("type")  # an enum of strings says the type already
    properties = out.get("properties")
    if isinstance(properties, dict):
        # Replies leave null fields out (``without_nulls``): a nullable field is an optional, typed one.
        optional = set()
        for name, prop in properties.items():
            branches = prop.get("anyOf") if isinstance(prop, dict) else None
            if isinstance(branches, list) and any(_null_branch(branch) for branch in branches):
                kept = [branch for branch in branches if not _null_branch(branch)]
                rest = {key: value for key, value in prop.items() if key != "anyOf"}
                properties[name] = {**(kept[0] if len(kept) == 1 else {"anyOf": kept}), **rest}
                optional.add(name)
        required = [name for name in out.get("required", ()) if name not in optional]
        if required:
            out["required"] = required
        else:
            out.pop("required", None)
    return out


def compact_output_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The output schema of replies without null fields, and without titles, defaults and
    ``additionalProperties: true``; a definition used once, or an enum, is written in place."""
    return None if schema is None else _inline_single_use(_compact(schema))


def _refs(node: Any, counts: dict[str, int]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            counts[ref] = counts.get(ref, 0) + 1
        for value in node.values():
            _refs(value, counts)
    elif isinstance(node, list):
        for item in node:
            _refs(item, counts)


def _inline_single_use(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.get("$defs")
    if not defs:
        return schema
    counts: dict[str, int] = {}
    _refs(schema, counts)
    single = {ref.removeprefix("#/$defs/") for ref, count in counts.items() if count == 1}
    # An enum is as short written in place as referred to (and a reference costs every validator a lookup).
    single |= {name for name, body in defs.items() if "enum" in body and "properties" not in body}
    # A definition that refers to others keeps them as they are: only leaves and their users are inlined.
    kept = {name: body for name, body in defs.items() if name not in single}
    inlined = {name: body for name, body in defs.items() if name in single}

    def replace(node: Any) -> Any:
        if isinstance(node, list):
            return [replace(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.removeprefix("#/$defs/") in inlined:
            rest = {key: value for key, value in node.items() if key != "$ref"}
            return {**replace(inlined[ref.removeprefix("#/$defs/")]), **rest}
        return {key: replace(value) for key, value in node.items() if key != "$defs"}

    out: dict[str, Any] = replace(schema)
    if kept:
        out["$defs"] = {name: replace(body) for name, body in kept.items()}
    return out


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: dict[str, Any] = root["$defs"][ref.removeprefix("#/$defs/")]
        return resolved
    return schema


def without_nulls(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A reply with its null fields left out: replies stay small, and the published output schema says so.

    Only the fields the reply's models declare are touched; free-form JSON inside (an output, a schema,
    metadata) is the caller's data and keeps its nulls."""
    schema = _resolve(schema, root)
    if isinstance(value, dict):
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return value
        return {
            key: without_nulls(item, properties[key], root) if key in properties else item
            for key, item in value.items()
            if item is not None or key not in properties
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [without_nulls(item, schema["items"], root) for item in value]
    return value


def _object_branch(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The branch of a (nullable) schema that declares properties, if any."""
    if "properties" in schema:
        return schema
    for branch in schema.get("anyOf", ()):
        if isinstance(branch, dict) and "properties" in branch:
            return branch
    return None


def free_form_arguments(schema: dict[str, Any]) -> list[str]:
    """Arguments that take any JSON object (no declared properties) anywhere inside them, e.g. a list of
    objects with a free-form field: OpenAI strict mode cannot express them."""
    return [name for name, prop in schema.get("properties", {}).items() if _free_form(prop)]


def _free_form(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    if node.get("type") == "object" and not node.get("properties"):
        return True
    nested = [*node.get("anyOf", ()), *node.get("properties", {}).values()]
    if isinstance(node.get("items"), dict):
        nested.append(node["items"])
    return any(_free_form(sub) for sub in nested)


def unknown_arguments(arguments: dict[str, Any], schema: dict[str, Any], path: str = "") -> list[str]:
    """Names of arguments (nested ones dotted) that the schema does not declare."""
    properties = schema.get("properties", {})
    unknown = []
    for key, value in arguments.items():
        if key not in properties:
            unknown.append(f"{path}{key}")
            continue
        nested = _object_branch(properties[key])
        if nested is not None and isinstance(value, dict):
            unknown.extend(unknown_arguments(value, nested, f"{path}{key}."))
    return unknown


def describe_unknown(unknown: list[str], schema: dict[str, Any]) -> str:
    """The error for unknown arguments: each named (cut short), with the closest known name when one is near."""
    import difflib

    parts = []
    for dotted in unknown[:10]:
        parent, _, name = dotted.rpartition(".")
        known: Any = schema
        for step in parent.split(".") if parent else ():
            known = _object_branch(known.get("properties", {}).get(step, {})) or {}
        names = list(known.get("properties", {}))
        close = (
            difflib.get_close_matches(name[:100], names, n=1, cutoff=0.75)
            or [n for n in names if name and (n.startswith(name + "_") or name.startswith(n + "_"))][:1]
        )
        parts.append(
            repr(dotted[:100]) + (f" (did you mean {'.'.join([parent, close[0]]).lstrip('.')!r}?)" if close else "")
        )
    more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    return (
        f"unknown argument(s) {', '.join(parts)}{more}; nothing was written. Use only the arguments of the input schema"
    )


def without_null_optionals(arguments: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The arguments with every optional key whose value is ``null`` left out: null means "not given".

    That is how OpenAI strict mode calls a tool (every key present, null for the ones it does not use).
    Nested objects with declared properties (e.g. ``usage``) are treated the same way; free-form objects
    (no declared properties) are passed through untouched."""
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        prop = properties.get(key)
        if value is None and prop is not None and key not in required:
            continue
        nested = _object_branch(prop) if prop is not None else None
        if nested is not None and isinstance(value, dict):
            value = without_null_optionals(value, nested)
        out[key] = value
    return out


@cache
def _reply_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = compact_output_schema(model.model_json_schema())
    assert schema is not None
    return schema


def reply_data(reply: BaseModel) -> Any:
    """A reply model as the tools send it (null fields left out), for the CLI and the resources."""
    schema = _reply_schema(type(reply))
    return without_nulls(reply.model_dump(mode="json"), schema, schema)
