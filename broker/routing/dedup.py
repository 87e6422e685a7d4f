"""Which event ids have been routed already: so a repeated event is not shared twice.

The authority is the audit log: every routed event has leaves there, committed
in the same transaction as its shares. Each router instance replays the audit
topic on start and keeps following it, so whichever instance owns a partition
after a rebalance or a crash knows what any instance committed before it.

Memory is bounded: the most recent ``capacity`` ids are kept, enough for weeks
of a county's safeguarding traffic; an id older than that is treated as new,
which at worst shares a stale repeat once more — and the audit log still shows
both. An id that was never added is never reported as seen (that would
silently withhold a safeguarding event), so there is no Bloom filter or
truncated hash here: every answer compares the id's full 16 bytes.

How the ids are held, and why. A UUID is 16 bytes, but as a Python ``bytes``
in an ``OrderedDict`` it costs an object header, a hash-table slot and a link
each, many times its size, and the router's RSS grew with every event. Here the
ids live as raw 16-byte runs packed into ``bytes`` *buckets* (about 32 ids per
bucket at capacity, chosen by ``hash(id)``), plus a log of bucket numbers in
insertion order (2 bytes per id; 4 for a capacity above ~2,000,000). Once
full, every add evicts the oldest id and memory stays flat. The figures
(``python -m bench dedup``) are in docs/PERFORMANCE.md.

The insertion log is what keeps the semantics exact: a new id is appended at
the end of its bucket and of the log, so the log's first entry names the bucket
whose *first* id is the oldest overall (evicted first, exactly FIFO, no
generations) and its last entry the bucket whose last id is the newest (undone
first by :meth:`SeenEvents.forget_since`).
"""

from __future__ import annotations

import binascii
import re
import uuid
from array import array
from collections import OrderedDict

__all__ = ["DEFAULT_CAPACITY", "SeenEvents"]

DEFAULT_CAPACITY = 2_000_000
# Ids per bucket when the set is full. A lookup scans its bucket in C
# (``bytes.find``), so ~512 bytes per bucket costs little, while fewer, larger
# buckets spread the per-object overhead (~50 bytes each) over more ids.
IDS_PER_BUCKET = 32
_ID_BYTES = 16
# The log's consumed prefix is cut off once it is this long and at least a
# quarter of the log: the log never holds more than ~4/3 x capacity entries.
_COMPACT_AFTER = 4096
# Leaves are canonical JSON (RFC 8785): keys sorted, no whitespace, every value
# a flat string or number, and a string cannot contain an unescaped quote, so
# the event id and kind can be read without parsing the whole leaf.
_EVENT_ID = re.compile(rb'"event_id":"([0-9a-fA-F-]{36})"')
_EVENT_ID_KEY = b'"event_id":"'
_SHARED = b'"kind":"SHARED"'
_WITHHELD = b'"kind":"WITHHELD"'


def _key(event_id: str) -> bytes | str:
    """The 16 bytes of a UUID (in any spelling ``uuid.UUID`` accepts), else the id."""
    digits = event_id.replace("-", "")
    if len(digits) == 32:
        # The common case, much cheaper than uuid.UUID and the same bytes: 32 hex
        # digits and hyphens are all uuid.UUID would see of this string.
        try:
            return binascii.a2b_hex(digits)
        except ValueError:  # not hex, or not ASCII
            pass
    try:
        return uuid.UUID(event_id).bytes
    except ValueError:
        return event_id


def _find(bucket: bytes, key: bytes) -> int:
    """The offset of ``key`` in ``bucket`` as one of its ids, or -1.

    A match at an offset that is not a multiple of 16 straddles two ids (the
    tail of one and the head of the next) and is no match. Callers inline the
    first ``find`` (the hot path) and call this only for such a straddling match.
    """
    at = bucket.find(key)
    while at > 0 and at % _ID_BYTES:
        at = bucket.find(key, at + 1)
    return at


class SeenEvents:
    """A bounded, insertion-ordered set of event ids (the newest ``capacity`` kept).

    UUID ids are kept as 16 raw bytes in buckets (see the module docstring).
    Ids that are not UUIDs (the schema requires UUIDs, so these are rare) are
    kept as strings in a small ordered dict; they share the insertion log and
    the capacity with the UUIDs, so eviction and :meth:`forget_since` treat
    both kinds in one order.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 0:
            raise ValueError(f"SeenEvents capacity must be 0 or more, not {capacity}")
        self._capacity = capacity
        self._nbuckets = max(1, -(-capacity // IDS_PER_BUCKET))
        # Every empty bucket is the one empty bytes object: no memory until used.
        self._buckets: list[bytes] = [b""] * self._nbuckets
        self._others: OrderedDict[str, None] = OrderedDict()
        self._other = self._nbuckets  # the log's entry for a non-UUID id
        # Bucket number of each id, in insertion order; live entries from _head on.
        self._log = array("H" if self._other <= 0xFFFF else "I")
        self._head = 0
        self._added = 0  # ids newly added since creation (for mark/forget_since)
        self._last: tuple[str | None, bytes | str] = (None, b"")  # (id, its key)

    @property
    def capacity(self) -> int:
        """How many of the most recently added ids are kept."""
        return self._capacity

    def __len__(self) -> int:
        return len(self._log) - self._head

    def _key_of(self, event_id: str) -> bytes | str:
        """:func:`_key` of ``event_id``, kept for the last id: the router asks whether
        an id was seen, then adds it (the bytes keep their hash, too)."""
        last = self._last
        if last[0] == event_id:
            return last[1]
        key = _key(event_id)
        self._last = (event_id, key)
        return key

    def __contains__(self, event_id: object) -> bool:
        if not isinstance(event_id, str):
            return False
        key = self._key_of(event_id)
        if isinstance(key, str):
            return key in self._others
        bucket = self._buckets[hash(key) % self._nbuckets]
        at = bucket.find(key)
        if at > 0 and at % _ID_BYTES:
            at = _find(bucket, key)
        return at >= 0

    def add(self, event_id: str) -> None:
        """Note ``event_id`` as routed. An id already held stays where it is."""
        key = self._key_of(event_id)
        if isinstance(key, bytes):
            self._add_key(key)
        elif key not in self._others:
            self._others[key] = None
            self._added_at(self._other)

    def _add_key(self, key: bytes) -> None:
        # hash() of bytes is SipHash with a per-process key: buckets stay even
        # for time-ordered UUIDs (v1, v7) and for ids chosen to collide.
        i = hash(key) % self._nbuckets
        buckets = self._buckets
        bucket = buckets[i]
        at = bucket.find(key)
        if at > 0 and at % _ID_BYTES:
            at = _find(bucket, key)
        if at >= 0:
            return
        # A new bytes per add (copying ~0.5 KB at most) rather than a growing
        # bytearray: no over-allocated slack, and no 56-byte bytearray header.
        buckets[i] = bucket + key
        self._added_at(i)

    def _added_at(self, bucket: int) -> None:
        self._log.append(bucket)
        self._added += 1
        if len(self._log) - self._head > self._capacity:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        # The oldest id is the first id of the bucket the log names first.
        log = self._log
        oldest = log[self._head]
        self._head += 1
        if oldest == self._other:
            self._others.popitem(last=False)
        else:
            self._buckets[oldest] = self._buckets[oldest][_ID_BYTES:]
        if self._head >= _COMPACT_AFTER and 4 * self._head >= len(log):
            del log[: self._head]
            self._head = 0

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
        if not 0 <= mark <= self._added:
            raise ValueError(
                f"mark {mark} was not given by this SeenEvents (its marks are 0..{self._added})"
            )
        count = min(self._added - mark, len(self))
        log, buckets = self._log, self._buckets
        for _ in range(count):
            newest = log.pop()
            if newest == self._other:
                self._others.popitem(last=True)
            else:
                buckets[newest] = buckets[newest][:-_ID_BYTES]
        self._added = mark
        return count

    def add_from_leaf(self, leaf: bytes) -> None:
        """Note the event of an audit leaf that records a routing decision.

        Only SHARED and WITHHELD leaves count: a quarantined or duplicate
        event was not routed. Called for every leaf every router instance reads
        back from the audit topic, so the common case is two substring
        searches and a hex decode, no regex and no JSON parsing.
        """
        if _SHARED not in leaf and _WITHHELD not in leaf:
            return
        at = leaf.find(_EVENT_ID_KEY)
        if at < 0:
            return
        start = at + len(_EVENT_ID_KEY)
        if leaf[start + 36 : start + 37] == b'"':
            digits = leaf[start : start + 36].replace(b"-", b"")
            if len(digits) == 32:
                try:
                    self._add_key(binascii.a2b_hex(digits))
                    return
                except ValueError:
                    pass
        # Not a hyphenated UUID: read it as before (uuid.UUID's other spellings).
        m = _EVENT_ID.search(leaf)
        if m is not None:
            self.add(m.group(1).decode())
