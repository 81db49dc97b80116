"""Shared input types with their size limits, and the paging envelope."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

MAX_TEXT = 100_000  # characters in a free-text field (description, reasoning, prompt text)
MAX_JSON_BYTES = 1_000_000  # serialized size of one JSON argument (input/output data, metadata)
MAX_JSON_DEPTH = 64
MAX_PAGE_SIZE = 100
SLUG_PATTERN = r"^[a-z][a-z0-9_\-]{0,99}$"


def no_nul(value: str) -> str:
    """Refuse U+0000: PostgreSQL cannot store it in text or JSON, so neither database takes it."""
    if "\x00" in value:
        raise ValueError("contains a NUL character (U+0000), which cannot be stored; remove it")
    return value


def _checked_depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value (the walk stops past ``limit``); refuses NUL in strings and keys."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        if isinstance(item, str):
            no_nul(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                no_nul(str(key))
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def bounded_json(value: Any) -> Any:
    """Refuse JSON that is too large or too deeply nested to store and query sanely, or not storable."""
    if _checked_depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        # allow_nan=False: NaN and Infinity parse from the wire but are not JSON; PostgreSQL refuses them.
        size = len(json.dumps(value, ensure_ascii=False, default=str, allow_nan=False).encode())
    except ValueError:
        raise ValueError("NaN and Infinity are not JSON numbers; send null or a string instead") from None
    if size > MAX_JSON_BYTES:
        raise ValueError(f"JSON is {size} bytes; the limit is {MAX_JSON_BYTES}")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(bounded_json)]


def as_object(value: Any) -> Any:
    """Rows written before data had to be a JSON object held scalars and lists: they read back wrapped."""
    return value if value is None or isinstance(value, dict) else {"value": value}


JsonObjectOut = Annotated[dict[str, Any], BeforeValidator(as_object)]
NoNul = AfterValidator(no_nul)
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT), NoNul]
ShortText = Annotated[str, StringConstraints(max_length=200), NoNul]
# created_by / updated_by columns are VARCHAR(100): PostgreSQL would refuse anything longer.
ACTOR_MAX = 100
Actor = Annotated[str, StringConstraints(min_length=1, max_length=ACTOR_MAX, strip_whitespace=True), NoNul]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True), NoNul]
# Who spends or runs (a sub-agent, worker or role); the MCP client's name/version when not given.
Agent = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True), NoNul]
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
# A slug that names something existing: the pattern is still enforced, but not spelled out to the model.
SlugRef = Annotated[str, StringConstraints(pattern=SLUG_PATTERN), WithJsonSchema({"type": "string"})]
# Money comes in as a decimal string (a JSON number is taken too, but binary floats are what it avoids).
Usd = Annotated[
    Decimal,
    Field(ge=0, le=Decimal("900000000"), decimal_places=10),
    WithJsonSchema({"type": "string"}),
]
USD_QUANTUM = Decimal(1).scaleb(-10)  # the database keeps money to 1e-10 USD


def plain_usd(value: Decimal) -> Decimal:
    """Money as stored, without trailing zeros: 12.5 both when just written and when read back."""
    return value.quantize(USD_QUANTUM).normalize()


# Out in plain decimal notation ("0.0000001", "100"): str(Decimal) would say "1E-7" and "1E+2".
DecimalOut = Annotated[
    Decimal, PlainSerializer(lambda value: format(value, "f"), return_type=str), WithJsonSchema({"type": "string"})
]
UsdOut = Annotated[DecimalOut, AfterValidator(plain_usd)]
Page = Annotated[int, Field(ge=1, le=1_000_000)]  # from 1
PageSize = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE, description="Default 20.")]


class Out(BaseModel):
    """Base of every tool result: built from ORM rows by attribute."""

    model_config = ConfigDict(from_attributes=True)


class Paged(Protocol):
    @property
    def total(self) -> int: ...

    @property
    def page(self) -> int: ...

    @property
    def has_more(self) -> bool: ...


class PageInfo(Out):
    """The paging envelope of every reply that pages: how many match, which page this is, whether more follow."""

    total: int
    page: int
    has_more: bool


def envelope(result: Paged) -> dict[str, Any]:
    """A repository page's envelope, as the reply models take it."""
    return {"total": result.total, "page": result.page, "has_more": result.has_more}
