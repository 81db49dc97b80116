"""The dashboard's change feed: server-sent events that tell open pages the database changed, so they
fetch their view again instead of polling (an unchanged view still answers 304).

One watcher per dashboard process, and only while a page listens: it waits on the database's change
source (mcp_server/db/changes.py: PostgreSQL LISTEN, SQLite ``PRAGMA data_version`` every 0.5 s), which
hears commits of every process, and wakes every listening page at most once per MIN_GAP. When nobody
listens it holds no connection. At most MAX_LISTENERS pages listen at once; more are answered 503 and
fall back to polling.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio

log = logging.getLogger(__name__)

MAX_LISTENERS = 100
MIN_GAP = 0.25  # seconds between two events: a burst of commits is one event
HEARTBEAT = 15.0  # seconds between two comments on an idle stream (proxies close silent ones)
RETRY_MS = 5000  # what a page waits before reconnecting a dropped stream


class ChangeFeed:
    def __init__(self, url: str) -> None:
        self.url = url
        self.version = 0
        self.listeners = 0
        self._changed = anyio.Event()
        self._interest = anyio.Event()
        self._wake = anyio.Event()

    def _poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """The watcher (the app's lifespan task): idle while no page listens."""
        from mcp_server.db.changes import open_changes

        while True:
            await self._interest.wait()
            try:
                async with open_changes(self.url, self._poke) as source:
                    while self.listeners:
                        with anyio.move_on_after(source.interval):
                            await self._wake.wait()
                        self._wake = anyio.Event()
                        if await source.changed():
                            self.version += 1
                            changed, self._changed = self._changed, anyio.Event()
                            changed.set()
                        await anyio.sleep(MIN_GAP)
                if not self.listeners:
                    self._interest = anyio.Event()
            except Exception as exc:  # noqa: BLE001 - the database may be down: pages poll meanwhile
                log.warning("dashboard feed: watching the database failed (%s); retrying", type(exc).__name__)
                await anyio.sleep(1)

    def full(self) -> bool:
        return self.listeners >= MAX_LISTENERS

    async def events(self) -> AsyncIterator[bytes]:
        """One page's stream: a retry hint, then `change` events, and a comment when idle."""
        self.listeners += 1
        self._interest.set()
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            while True:
                changed = self._changed
                with anyio.move_on_after(HEARTBEAT):
                    await changed.wait()
                if changed.is_set():
                    yield f"event: change\ndata: {self.version}\n\n".encode()
                else:
                    yield b": idle\n\n"
        finally:
            self.listeners -= 1
