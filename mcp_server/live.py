"""Live resources: who watches which resource, and the watcher that tells them when it changed, whichever
server process made the change.

Clients watch a resource with ``resources/subscribe`` (2025-11-25; per session) or ``subscriptions/listen``
(2026-07-28; per stream). While anyone watches, one task per server waits on the database's change source
(mcp_server/db/changes.py: PostgreSQL LISTEN, SQLite ``PRAGMA data_version`` every 0.5 s) and on this
server's own writes, then reads one change token per watched project, pipeline and execution
(services/live.tokens) and sends ``notifications/resources/updated`` for each URI whose token moved. It also
reads them at least every SAFETY_CHECK seconds whatever the signals say, so a change whose signal was missed
is told late, never lost. Events are coalesced per URI (one check sends at most one event per URI; nothing
queues up), and a session holds at most MAX_PER_SESSION subscriptions. When nobody watches, the task waits
and holds no connection.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from mcp_server.enums import DEFAULT_PIPELINE

if TYPE_CHECKING:
    from mcp_server.app import DatabaseHandle

log = logging.getLogger(__name__)

# Resources one session (or one listen stream) may watch at a time.
MAX_PER_SESSION = 100
# The least time between two checks: a burst of commits costs one token read per gap, not one per commit.
MIN_GAP = 0.05
# How long one subscriber may take to accept an event before its subscriptions are dropped.
SEND_TIMEOUT = 2.0
# The most time between two token reads while anyone watches, signal or none (the safety net under the
# change signals: a commit between a check's read and its signal, a lost notification).
SAFETY_CHECK = 5.0

Key = tuple[str, str]
_PATTERNS = (
    (re.compile(r"pipeline://projects/([0-9a-fA-F-]{32,36})(?:/graph)?"), "project"),
    (re.compile(r"pipeline://executions/([0-9a-fA-F-]{32,36})"), "execution"),
    (re.compile(r"pipeline://pipelines/([^/?#]{1,100})"), "pipeline"),
)


def key_of(uri: str) -> Key | None:
    """What a resource URI shows, as (kind, id); None for a URI that cannot be watched."""
    if uri == "pipeline://processes":
        return "pipeline", DEFAULT_PIPELINE
    for pattern, kind in _PATTERNS:
        match = pattern.fullmatch(uri)
        if match is None:
            continue
        if kind == "pipeline":
            return kind, match.group(1)
        try:
            return kind, str(uuid.UUID(match.group(1)))
        except ValueError:
            return None
    return None


def _too_many(count: int) -> MCPError:
    return MCPError(
        code=INVALID_PARAMS,
        message=f"limit: at most {MAX_PER_SESSION} resource subscriptions per session ({count} asked); "
        "unsubscribe from some first",
    )


@dataclass
class Subscriber:
    session: Any
    uris: set[str] = field(default_factory=set)
    # Held so that the id keying this subscriber is not reused while it lives.
    connection: Any = None


def _connection_of(session: Any) -> int:
    """Which connection a request's session belongs to: the SDK makes a session per request, and the
    client's initialize parameters are the connection's own object."""
    params = session.client_params
    return id(params if params is not None else session)


class LiveHub:
    """The subscriptions of one server (its lifespan), and the watcher that serves them."""

    def __init__(self, bus: SubscriptionBus, database: DatabaseHandle, url: str) -> None:
        self.bus = bus
        self.database = database
        self.url = url
        # 2025-11-25 subscriptions, by connection: the session of the subscribe request (it sends on the
        # connection's channel after the request) and the URIs.
        self.sessions: dict[int, Subscriber] = {}
        self.listened: Counter[str] = Counter()
        self.tokens: dict[Key, str | None] = {}
        self.checks = 0
        self.wake = anyio.Event()
        self.interest = anyio.Event()

    def watched(self) -> dict[Key, set[str]]:
        """Every watched URI, by what it shows."""
        found: dict[Key, set[str]] = {}
        for uris in [*(subscriber.uris for subscriber in self.sessions.values()), self.listened]:
            for uri in uris:
                key = key_of(uri)
                if key is not None:
                    found.setdefault(key, set()).add(uri)
        return found

    async def subscribe(self, session: Any, uri: str) -> None:
        key = key_of(uri)
        if key is None:
            raise MCPError(code=INVALID_PARAMS, message=f"not_found: {uri[:200]!r} is no resource of this server")
        subscriber = self.sessions.setdefault(
            _connection_of(session), Subscriber(session, connection=session.client_params)
        )
        uris = subscriber.uris
        if uri in uris:
            return
        if len(uris) >= MAX_PER_SESSION:
            raise _too_many(len(uris) + 1)
        await self._baseline([key])
        uris.add(uri)
        self.interest.set()

    def unsubscribe(self, session: Any, uri: str) -> None:
        subscriber = self.sessions.get(_connection_of(session))
        if subscriber is not None:
            subscriber.uris.discard(uri)
            if not subscriber.uris:
                self.sessions.pop(_connection_of(session), None)

    @asynccontextmanager
    async def listening(self, uris: list[str]) -> AsyncIterator[None]:
        """The URIs of one subscriptions/listen stream are watched while it lasts."""
        if len(uris) > MAX_PER_SESSION:
            raise _too_many(len(uris))
        watched = list(dict.fromkeys(uri for uri in uris if key_of(uri) is not None))
        await self._baseline(key for uri in watched if (key := key_of(uri)) is not None)
        self.listened.update(watched)
        self.interest.set()
        try:
            yield
        finally:
            self.listened.subtract(watched)
            for uri in watched:
                if self.listened[uri] <= 0:
                    del self.listened[uri]

    def poke(self) -> None:
        """Something may have changed (this server wrote, or PostgreSQL notified): check now."""
        self.wake.set()

    async def _read(self, keys: Iterable[Key]) -> dict[Key, str | None]:
        from mcp_server.services import live

        chosen = list(keys)
        watched = live.Watched(
            projects=[uuid.UUID(i) for kind, i in chosen if kind == "project"],
            pipelines=[i for kind, i in chosen if kind == "pipeline"],
            executions=[uuid.UUID(i) for kind, i in chosen if kind == "execution"],
        )
        found = await self.database.run(lambda session: live.tokens(session, watched), write=False)
        return {key: found.get(key) for key in chosen}

    async def _baseline(self, keys: Iterable[Key]) -> None:
        """The current token of each key not yet known: a change after this is an event."""
        missing = [key for key in keys if key not in self.tokens]
        if missing:
            self.tokens.update(await self._read(missing))

    async def run(self) -> None:
        """The watcher (the lifespan's background task): idle while nobody watches."""
        while True:
            await self.interest.wait()
            try:
                await self._watch()
            except Exception as exc:  # noqa: BLE001 - the database may be down; watch again in a second
                log.warning("live resources: watching the database failed (%s); retrying", type(exc).__name__)
                self.poke()  # a change whose check failed is checked again, not lost
                await anyio.sleep(1)

    async def _watch(self) -> None:
        from mcp_server.db.changes import open_changes

        async with open_changes(self.url, self.poke) as source:
            # What changed between the subscriptions' baselines and this source's first reading is
            # invisible to the source: the first round checks.
            self.poke()
            checked = -SAFETY_CHECK
            while True:
                with anyio.move_on_after(source.interval):
                    await self.wake.wait()
                woken = self.wake.is_set()
                self.wake = anyio.Event()
                watched = self.watched()
                if not watched:
                    self.interest = anyio.Event()
                    self.tokens.clear()
                    return
                due = anyio.current_time() - checked >= SAFETY_CHECK
                if await source.changed() or woken or due:
                    checked = anyio.current_time()
                    await self.check(watched)
                await anyio.sleep(MIN_GAP)

    async def check(self, watched: dict[Key, set[str]]) -> None:
        """Read the watched tokens; an event for every URI whose token moved."""
        self.checks += 1
        fresh = await self._read(watched)
        moved = [key for key, token in fresh.items() if key in self.tokens and self.tokens[key] != token]
        self.tokens.update(fresh)
        current = self.watched()
        for key in [key for key in self.tokens if key not in current]:
            del self.tokens[key]
        for key in moved:
            for uri in sorted(watched[key]):
                await self.publish(uri)

    async def publish(self, uri: str) -> None:
        if self.listened.get(uri, 0) > 0:
            await self.bus.publish(ResourceUpdated(uri=uri))
        for connection, subscriber in list(self.sessions.items()):
            if uri not in subscriber.uris:
                continue
            try:
                with anyio.fail_after(SEND_TIMEOUT):
                    await subscriber.session.send_resource_updated(uri)
            except Exception as exc:  # noqa: BLE001 - the connection closed or stopped reading: its subscriptions end
                log.warning(
                    "live resources: the update of %s could not be sent (%s: the client closed or took more "
                    "than %s s); that connection's %d subscription(s) end",
                    uri,
                    type(exc).__name__,
                    SEND_TIMEOUT,
                    len(subscriber.uris),
                )
                self.sessions.pop(connection, None)
