"""What a server keeps in memory between calls, each copy with the basis it was made from (a change
token, or the figures it was computed from): used only while the basis read now is the same."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    """The last ``size`` copies used (least recently used goes first). A copy made without a basis (None)
    is never kept: nothing could tell when it went stale. Units of work on several threads share it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._copies: OrderedDict[K, tuple[Hashable, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, basis: Hashable | None) -> tuple[V] | None:
        """``(copy,)`` when one was kept for ``key`` on this very basis, else None (a kept None is a hit)."""
        with self._lock:
            found = self._copies.get(key)
            if found is None or basis is None or found[0] != basis:
                return None
            self._copies.move_to_end(key)
            return (found[1],)

    def put(self, key: K, basis: Hashable | None, value: V) -> None:
        if basis is None:
            return
        with self._lock:
            self._copies[key] = (basis, value)
            self._copies.move_to_end(key)
            while len(self._copies) > self.size:
                self._copies.popitem(last=False)
