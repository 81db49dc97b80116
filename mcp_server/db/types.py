"""Column types that map to native types on PostgreSQL and portable ones on SQLite (docs/design.md, "Data model")."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class GUID(TypeDecorator[uuid.UUID]):
    """UUID: native ``uuid`` on PostgreSQL, ``VARCHAR(36)`` on SQLite."""

    impl = String(36)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            # Imported here, like the other PostgreSQL types: an SQLite server never loads that dialect.
            from sqlalchemy.dialects.postgresql import UUID as PG_UUID

            return dialect.type_descriptor(PG_UUID(as_uuid=True))
        return dialect.type_descriptor(String(36))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        as_uuid = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        return as_uuid if dialect.name == "postgresql" else str(as_uuid)

    def process_result_value(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        if value is None:
            return None
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


class JSONType(TypeDecorator[Any]):
    """JSON: ``JSONB`` on PostgreSQL, JSON text on SQLite."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, str) and dialect.name != "postgresql":
            return json.loads(value)
        return value


class ArrayType(TypeDecorator[list[Any]]):
    """A list: ``ARRAY`` on PostgreSQL, a JSON array in text on SQLite."""

    impl = Text
    cache_ok = True

    def __init__(self, item_type: TypeEngine[Any] | None = None) -> None:
        super().__init__()
        self.item_type: TypeEngine[Any] = item_type if item_type is not None else String()

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import ARRAY

            return dialect.type_descriptor(ARRAY(self.item_type))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return None if value is None else list(value)
        return json.dumps(list(value), ensure_ascii=False)

    def process_result_value(self, value: Any, dialect: Dialect) -> list[Any] | None:
        if value is None:
            return None
        if isinstance(value, str):
            loaded: list[Any] = json.loads(value)
            return loaded
        return list(value)


# Money is stored as a whole number of 1e-10 USD in a BIGINT: integer sums are exact on both
# databases (SQLite has no exact decimal type; REAL would drift), and 1e-10 is well below the
# 1e-9 USD the product promises. A BIGINT holds up to about 9.2e8 USD per value or sum.
MONEY_SCALE = Decimal(10) ** 10
MONEY_QUANTUM = Decimal(1) / MONEY_SCALE


def money_to_units(value: Decimal | int | str) -> int:
    """Decimal USD → integer 1e-10 units, rounding half-even below the quantum."""
    return int((Decimal(value) * MONEY_SCALE).to_integral_value(rounding=ROUND_HALF_EVEN))


def units_to_money(units: int | Decimal) -> Decimal:
    """Integer 1e-10 units → Decimal USD in plain notation without trailing zeros (``0.0096``, ``12``)."""
    exact = (Decimal(units) / MONEY_SCALE).quantize(MONEY_QUANTUM)
    return Decimal(format(exact.normalize(), "f"))


class Money(TypeDecorator[Decimal]):
    """Exact USD amount, a ``Decimal`` in Python and an integer of 1e-10 USD in the database."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, float):
            value = repr(value)  # the shortest decimal that round-trips, not the binary expansion
        return money_to_units(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return units_to_money(value)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both databases (SQLite keeps no zone, so it is restored)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware UTC value")
        moment: datetime = value.astimezone(UTC)
        # SQLite stores text; a naive UTC value keeps its lexical order equal to time order.
        return moment.replace(tzinfo=None) if dialect.name == "sqlite" else moment

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


# What utcnow reads; tests move time through set_clock (budget periods, leases), never by sleeping.
_clock: Callable[[], datetime] | None = None


def utcnow() -> datetime:
    """Timezone-aware current UTC time (from the clock set_clock installed, if any)."""
    return datetime.now(UTC) if _clock is None else _clock()


def set_clock(clock: Callable[[], datetime] | None) -> None:
    """Install the clock utcnow reads (None: the system clock again). For tests."""
    global _clock
    _clock = clock
