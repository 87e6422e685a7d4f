"""A bounded memory of derived values: the one cache helper of the package.

Hot paths (the policy's plans, the codec's redaction copiers and varints) read
a memo with plain ``dict.get`` at C speed and no lock; only
:meth:`BoundedMemo.remember` takes a lock. When full, the oldest entry is
forgotten first, so unusual inputs cost a recomputation, never unbounded memory.
"""

from __future__ import annotations

import threading
from typing import TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


class BoundedMemo(dict[_K, _V]):
    """A ``dict`` of at most ``limit`` entries, written through :meth:`remember`."""

    __slots__ = ("limit", "_lock")

    def __init__(self, limit: int) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError(f"a memo holds at least one entry, not {limit}")
        self.limit = limit
        self._lock = threading.Lock()

    def remember(self, key: _K, value: _V) -> _V:
        """Store ``value`` under ``key`` (forgetting the oldest entry when full); return it."""
        with self._lock:
            if len(self) >= self.limit and key not in self:
                self.pop(next(iter(self)), None)
            self[key] = value
        return value
