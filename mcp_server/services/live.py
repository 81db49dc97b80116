"""Live state: completions of ids a person cannot type, and change tokens of watched resources."""

from __future__ import annotations

import string
import uuid
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from mcp_server.repositories.live import LiveRepository, UuidRange

# completion/complete answers at most this many values (the MCP limit).
MAX_VALUES = 100
# Matches counted for `total`: past this many, `total` is left out and `has_more` says there are more.
COUNT_LIMIT = 1_000
# Pipelines resources/list names (one resource each).
LISTED_PIPELINES = 1_000
_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True)
class Completed:
    values: list[str]
    total: int | None
    has_more: bool


def uuid_range(typed: str) -> UuidRange | None:
    """The ids that start with ``typed`` (hex digits, dashes anywhere), as the lowest and highest UUID; None
    when ``typed`` cannot start an id."""
    digits = typed.strip().lower().replace("-", "")
    if len(digits) > 32 or not set(digits) <= _HEX:
        return None
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


def _completed(found: list[str]) -> Completed:
    unique = list(dict.fromkeys(found))
    total = len(unique) if len(found) < COUNT_LIMIT else None
    return Completed(values=unique[:MAX_VALUES], total=total, has_more=len(unique) > MAX_VALUES)


async def project_ids(session: AsyncSession, typed: str) -> Completed:
    """Live projects whose id starts with ``typed`` or whose name does (any case), newest first."""
    ids = uuid_range(typed)
    name = typed.strip()
    if ids is None and not name:
        return _completed([])
    found = await LiveRepository(session).project_ids(ids, name or None, COUNT_LIMIT)
    return _completed([str(project_id) for project_id in found])


async def execution_ids(session: AsyncSession, typed: str, project_id: str | None) -> Completed:
    """Executions whose id starts with ``typed``, of ``project_id`` when it is a valid id, newest first."""
    ids = uuid_range(typed)
    if ids is None:
        return _completed([])
    try:
        project = uuid.UUID(project_id) if project_id else None
    except ValueError:
        project = None
    found = await LiveRepository(session).execution_ids(ids, project, COUNT_LIMIT)
    return _completed([str(execution_id) for execution_id in found])


async def pipeline_ids(session: AsyncSession, typed: str) -> Completed:
    """Pipelines whose id starts with ``typed``."""
    return _completed(await LiveRepository(session).pipeline_ids(typed.strip(), COUNT_LIMIT))


async def catalogued_pipelines(session: AsyncSession) -> list[str]:
    """The pipelines resources/list names (those with a definition), at most LISTED_PIPELINES of them."""
    return await LiveRepository(session).catalogued_pipelines(LISTED_PIPELINES)


@dataclass(frozen=True)
class Watched:
    """What a server's subscribers watch, by kind."""

    projects: Collection[uuid.UUID] = ()
    pipelines: Collection[str] = ()
    executions: Collection[uuid.UUID] = ()


async def tokens(session: AsyncSession, watched: Watched) -> dict[tuple[str, str], str]:
    """A change token per watched thing, keyed by (kind, id); a thing that does not exist has none."""
    repo = LiveRepository(session)
    found: dict[tuple[str, str], str] = {}
    for project_id, token in (await repo.project_tokens(watched.projects)).items():
        found["project", str(project_id)] = token
    for pipeline_id, token in (await repo.pipeline_tokens(watched.pipelines)).items():
        found["pipeline", pipeline_id] = token
    for execution_id, token in (await repo.execution_tokens(watched.executions)).items():
        found["execution", str(execution_id)] = token
    return found
