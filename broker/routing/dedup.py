"""Which event ids have been routed already: so a repeated event is not shared twice.

The authority is the audit log: every routed event has leaves there, committed
in the same transaction as its shares. Each router instance replays the audit
topic on start and keeps following it, so whichever instance owns a partition
after a rebalance or a crash knows what any instance committed before it.

Memory is bounded: the most recent ``capacity`` ids are kept (16 bytes each as
UUIDs), enough for weeks of a county's safeguarding traffic; an id older than
that is treated as new, which at worst shares a stale repeat once more — and
the audit log still shows both.
"""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict

DEFAULT_CAPACITY = 2_000_000
# Leaves are canonical JSON (RFC 8785): keys sorted, no whitespace, so the
# event id and kind can be read without parsing the whole leaf.
_EVENT_ID = re.compile(rb'"event_id":"([0-9a-fA-F-]{36})"')
_KIND = re.compile(rb'"kind":"(SHARED|WITHHELD)"')


def _key(event_id: str) -> bytes | str:
    try:
        return uuid.UUID(event_id).bytes
    except ValueError:
        return event_id


class SeenEvents:
    """A bounded, insertion-ordered set of event ids."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[bytes | str, None] = OrderedDict()
        self._added = 0  # ids newly added since creation (for mark/forget_since)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and _key(event_id) in self._ids

    def add(self, event_id: str) -> None:
        key = _key(event_id)
        if key in self._ids:
            return
        self._ids[key] = None
        self._added += 1
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def mark(self) -> int:
        """A mark to pass to :meth:`forget_since` (how many ids were ever added)."""
        return self._added

    def forget_since(self, mark: int) -> int:
        """Remove the ids added after ``mark``; return how many were removed.

        For a router transaction that aborted: the ids its batch added were
        never committed to the audit log, so when the batch is replayed they
        must not count as routed. New ids are appended at the end of the
        ordered set and a repeated id is not moved, so the ids added since the
        mark are exactly the newest ones. Ids evicted meanwhile (at capacity)
        stay forgotten, as eviction always does.
        """
        count = min(self._added - mark, len(self._ids))
        for _ in range(count):
            self._ids.popitem(last=True)
        self._added = mark
        return count

    def add_from_leaf(self, leaf: bytes) -> None:
        """Note the event of an audit leaf that records a routing decision."""
        if _KIND.search(leaf) is None:
            return
        m = _EVENT_ID.search(leaf)
        if m is not None:
            self.add(m.group(1).decode())
