"""Long-lived writers (an Acknowledger, a notifier) kept by key, and made again
when their producer breaks.

kafka-python's idempotent producer fails every later record once the broker
refused one for good (:attr:`broker.kafka.producer.Producer.broken`). A
process that keeps one writer per subscriber (the gateway's acks route, the
workspace's triage pages) would then fail every later write until a restart;
:class:`Writers` hands out the kept writer, or a new one in place of a broken
one, and closes the stale one outside its lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)


class Breakable(Protocol):
    """A writer that says when its producer will send nothing more."""

    @property
    def broken(self) -> bool: ...

    def close(self) -> None: ...


K = TypeVar("K", bound=Hashable)
W = TypeVar("W", bound=Breakable)


class Writers(Generic[K, W]):
    """Writers by key, each made by ``make(key)`` when first asked for and made
    again when the last one is :attr:`~Breakable.broken`. Thread-safe."""

    def __init__(self, what: str, make: Callable[[K], W]) -> None:
        self._what = what
        self._make = make
        self._kept: dict[K, W] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> W:
        """The writer for ``key``: the kept one, or a new one if it broke (the
        stale one is closed: nothing is pending, it sends no more)."""
        with self._lock:
            w = stale = self._kept.get(key)
            if w is None or w.broken:
                w = self._kept[key] = self._make(key)
            else:
                stale = None
        if stale is not None:
            log.warning("%s of %s: producer refused a record for good; replaced it",
                        self._what, key)
            stale.close()
        return w

    def close(self) -> None:
        """Close every kept writer (the process is stopping)."""
        with self._lock:
            kept = list(self._kept.values())
            self._kept.clear()
        for w in kept:
            w.close()
