"""Domain errors, each with the stable code that agents see (SPEC §6)."""

from __future__ import annotations

import json
from typing import Any, ClassVar


class DomainError(Exception):
    """A failure the caller can act on; the tool layer turns it into a tool error with its code."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, hint: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def render(self) -> str:
        """``<code>: <message>. <what to do>`` plus machine-readable details when there are any."""
        text = f"{self.code}: {self.message}"
        if self.hint:
            text += f". {self.hint}"
        if self.details is not None:
            text += "\ndetails: " + json.dumps(self.details, ensure_ascii=False, default=str, sort_keys=True)
        return text

    def __str__(self) -> str:
        return self.render()


class NotFound(DomainError):
    code = "not_found"


class InvalidArgument(DomainError):
    code = "invalid_argument"


class SchemaViolation(DomainError):
    code = "schema_violation"


class NotReady(DomainError):
    code = "not_ready"


class Conflict(DomainError):
    code = "conflict"


class InvalidTransition(DomainError):
    code = "invalid_transition"


class ReadOnly(DomainError):
    code = "read_only"


class BudgetExceeded(DomainError):
    """A start refused under the `block` budget policy: it would pass the project's budget."""

    code = "budget_exceeded"


class Unavailable(DomainError):
    """The database could not be reached; the call wrote nothing and can be retried."""

    code = "unavailable"


ERROR_CODES = tuple(
    cls.code
    for cls in (
        NotFound,
        InvalidArgument,
        SchemaViolation,
        NotReady,
        Conflict,
        InvalidTransition,
        ReadOnly,
        BudgetExceeded,
        Unavailable,
    )
)
