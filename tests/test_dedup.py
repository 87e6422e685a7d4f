"""SeenEvents: the router's memory of routed event ids.

What a user would notice if this were wrong: a repeated event shared twice (an
id forgotten too early, or kept after an aborted transaction so its replay is
refused as a duplicate), or — worse — a new event withheld as a "duplicate" it
never was (a false positive). And the router's memory growing with every event.
"""

from __future__ import annotations

import hashlib
import random
import tracemalloc
import uuid
from collections import OrderedDict

import pytest

from broker.audit.leaf import AuditLeaf, LeafKind
from broker.routing.dedup import IDS_PER_BUCKET, SeenEvents


def ids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


class Reference:
    """The previous implementation (an OrderedDict of keys), whose semantics are the contract."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ids: OrderedDict[bytes | str, None] = OrderedDict()
        self.added = 0

    @staticmethod
    def key(event_id: str) -> bytes | str:
        try:
            return uuid.UUID(event_id).bytes
        except ValueError:
            return event_id

    def __contains__(self, event_id: str) -> bool:
        return self.key(event_id) in self.ids

    def add(self, event_id: str) -> None:
        k = self.key(event_id)
        if k in self.ids:
            return
        self.ids[k] = None
        self.added += 1
        if len(self.ids) > self.capacity:
            self.ids.popitem(last=False)

    def forget_since(self, mark: int) -> int:
        count = min(self.added - mark, len(self.ids))
        for _ in range(count):
            self.ids.popitem(last=True)
        self.added = mark
        return count


# -- the basics ---------------------------------------------------------------------------


def test_added_ids_are_seen_and_others_are_not() -> None:
    seen = SeenEvents(capacity=100)
    a, b, c = ids(3, seed=1)
    seen.add(a)
    seen.add(b)
    assert a in seen and b in seen
    assert c not in seen
    assert len(seen) == 2
    seen.add(a)  # again: still one id
    assert len(seen) == 2


def test_a_uuid_is_the_same_id_however_it_is_spelled() -> None:
    seen = SeenEvents(capacity=10)
    u = uuid.UUID(ids(1, seed=2)[0])
    seen.add(str(u))
    for spelling in (str(u).upper(), u.hex, "{" + str(u) + "}", "urn:uuid:" + str(u)):
        assert spelling in seen, spelling
    seen.add(str(u).upper())
    assert len(seen) == 1


def test_ids_that_are_not_uuids_are_kept_too() -> None:
    seen = SeenEvents(capacity=10)
    odd = ["not-a-uuid", "", "g" * 32, "ä" * 32, "0123456789abcdef0123456789abcdef0123"]
    for e in odd:
        seen.add(e)
    assert all(e in seen for e in odd)
    assert len(seen) == len(odd)
    assert "not-a-uui" not in seen and "G" * 32 not in seen
    assert 12 not in seen and None not in seen  # not a string: never seen


def test_capacity_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="capacity must be 0 or more, not -1"):
        SeenEvents(capacity=-1)


def test_capacity_zero_remembers_nothing() -> None:
    seen = SeenEvents(capacity=0)
    mark = seen.mark()
    for e in ids(3, seed=3) + ["plain"]:
        seen.add(e)
        assert e not in seen
    assert len(seen) == 0
    assert seen.forget_since(mark) == 0


def test_capacity_one_remembers_the_newest_id_only() -> None:
    seen = SeenEvents(capacity=1)
    a, b = ids(2, seed=4)
    seen.add(a)
    seen.add("plain")
    assert "plain" in seen and a not in seen
    seen.add(b)
    assert b in seen and "plain" not in seen and len(seen) == 1
    assert seen.capacity == 1


def test_the_oldest_ids_are_evicted_first_and_a_repeat_does_not_refresh() -> None:
    seen = SeenEvents(capacity=5)
    es = ids(8, seed=5)
    for e in es[:5]:
        seen.add(e)
    seen.add(es[0])  # already there: stays the oldest
    for e in es[5:]:
        seen.add(e)
    assert [e in seen for e in es] == [False] * 3 + [True] * 5


# -- aborted transactions -------------------------------------------------------------------


def test_forget_since_after_an_abort_undoes_the_batch_so_its_replay_is_routed() -> None:
    seen = SeenEvents(capacity=1000)
    before, batch = ids(10, seed=6), ids(20, seed=7)
    for e in before:
        seen.add(e)
    mark = seen.mark()
    for e in batch:
        seen.add(e)
    seen.add(before[3])  # a duplicate within the batch: not added by it
    seen.add("legacy-id")
    assert seen.forget_since(mark) == 21
    assert all(e in seen for e in before)
    assert not any(e in seen for e in batch) and "legacy-id" not in seen
    # The replay adds the same ids again, and this time they commit.
    for e in batch:
        assert e not in seen
        seen.add(e)
    assert all(e in seen for e in batch) and len(seen) == 30


def test_forget_since_across_evictions_keeps_what_was_there_before_the_mark() -> None:
    seen = SeenEvents(capacity=4)
    a, b, c, d, e, f = ids(6, seed=8)
    for x in (a, b, c):
        seen.add(x)
    mark = seen.mark()
    for x in (d, e, f):  # evicts a and b
        seen.add(x)
    assert seen.forget_since(mark) == 3
    assert [x in seen for x in (a, b, c, d, e, f)] == [False, False, True, False, False, False]
    assert len(seen) == 1


def test_a_mark_this_set_never_gave_is_refused() -> None:
    seen = SeenEvents(capacity=4)
    seen.add(ids(1, seed=9)[0])
    with pytest.raises(ValueError, match="mark 5 was not given by this SeenEvents"):
        seen.forget_since(5)
    with pytest.raises(ValueError, match="mark -1"):
        seen.forget_since(-1)


@pytest.mark.parametrize("capacity", [0, 1, 2, 3, 7, IDS_PER_BUCKET, 100, 5000])
def test_random_adds_marks_and_aborts_match_the_reference(capacity: int) -> None:
    """Against the previous OrderedDict implementation, over many random histories."""
    rng = random.Random(capacity)
    pool = ids(3 * capacity + 20, seed=capacity) + [f"legacy-{i}" for i in range(10)]
    seen, ref = SeenEvents(capacity=capacity), Reference(capacity)
    marks: list[int] = []
    for step in range(20_000):
        op = rng.random()
        if op < 0.75:
            e = rng.choice(pool)
            seen.add(e)
            ref.add(e)
        elif op < 0.9:
            marks.append(seen.mark())
            assert marks[-1] == ref.added
        elif marks:
            mark = marks.pop()
            assert seen.forget_since(mark) == ref.forget_since(mark), step
            marks = [m for m in marks if m <= mark]
        if step % 97 == 0:
            assert len(seen) == len(ref.ids)
            sample = rng.sample(pool, min(len(pool), 60))
            assert [e in seen for e in sample] == [e in ref for e in sample], step
    assert [e in seen for e in pool] == [e in ref for e in pool]


# -- never a false positive -------------------------------------------------------------------


def test_no_false_positives_over_200k_random_ids() -> None:
    added, never = ids(200_000, seed=10), ids(200_000, seed=11)
    seen = SeenEvents(capacity=len(added))
    for e in added:
        seen.add(e)
    assert len(seen) == len(added)
    assert all(e in seen for e in added)
    assert not any(e in seen for e in never)


def test_bytes_straddling_two_stored_ids_are_not_an_id() -> None:
    seen = SeenEvents(capacity=IDS_PER_BUCKET)  # one bucket: the two ids sit side by side
    first, second = bytes(range(16)), bytes(range(16, 32))
    seen.add(str(uuid.UUID(bytes=first)))
    seen.add(str(uuid.UUID(bytes=second)))
    straddling = [str(uuid.UUID(bytes=(first + second)[i : i + 16])) for i in range(1, 16)]
    assert not any(e in seen for e in straddling)
    assert str(uuid.UUID(bytes=second)) in seen
    for e in straddling:  # and such an id is a new one when it comes
        seen.add(e)
        assert e in seen
    assert len(seen) == 17


def test_an_id_differing_from_a_stored_one_in_a_single_byte_is_not_seen() -> None:
    seen = SeenEvents(capacity=IDS_PER_BUCKET)  # one bucket: every id is compared
    stored = bytes(range(100, 116))
    seen.add(str(uuid.UUID(bytes=stored)))
    for i in range(16):
        near = stored[:i] + bytes([stored[i] ^ 1]) + stored[i + 1 :]
        assert str(uuid.UUID(bytes=near)) not in seen, f"byte {i}"


# -- audit leaves ---------------------------------------------------------------------------------


def leaf(kind: LeafKind, event_id: str) -> bytes:
    return AuditLeaf(
        time_ms=1_700_000_000_000,
        kind=kind,
        event_id=event_id,
        event_digest=hashlib.sha256(event_id.encode()).hexdigest(),
        source_agency="police-devon",
        recipient="mash-torbay",
        # A reason quoting another leaf's fields must not be read as this leaf's.
        reason='"kind":"SHARED","event_id":"00000000-0000-4000-8000-000000000000"',
    ).to_bytes()


def test_add_from_leaf_notes_shared_and_withheld_events_only() -> None:
    seen = SeenEvents(capacity=100)
    shared, withheld, quarantined, duplicate = ids(4, seed=12)
    seen.add_from_leaf(leaf(LeafKind.SHARED, shared))
    seen.add_from_leaf(leaf(LeafKind.WITHHELD, withheld.upper()))
    seen.add_from_leaf(leaf(LeafKind.QUARANTINED, quarantined))
    seen.add_from_leaf(leaf(LeafKind.DUPLICATE, duplicate))
    seen.add_from_leaf(leaf(LeafKind.QUARANTINED, ""))
    assert shared in seen and withheld in seen
    assert quarantined not in seen and duplicate not in seen
    assert "00000000-0000-4000-8000-000000000000" not in seen
    assert len(seen) == 2
    seen.add_from_leaf(leaf(LeafKind.SHARED, shared))  # each recipient has a leaf: one id
    assert len(seen) == 2


def test_add_from_leaf_reads_an_unhyphenated_36_character_id_as_before() -> None:
    seen, ref = SeenEvents(capacity=10), Reference(10)
    odd = "0123456789abcdef0123456789abcdef0123"  # 36 hex digits: not a UUID
    seen.add_from_leaf(leaf(LeafKind.SHARED, odd))
    ref.add(odd)
    assert odd in seen and len(seen) == 1 == len(ref.ids)


def test_add_from_leaf_does_not_take_a_longer_id_for_the_uuid_it_starts_with() -> None:
    seen = SeenEvents(capacity=10)
    u = ids(1, seed=14)[0]
    seen.add_from_leaf(leaf(LeafKind.SHARED, u + "-resent"))
    assert u not in seen


# -- memory ----------------------------------------------------------------------------------------


def test_memory_per_id_is_a_small_multiple_of_its_16_bytes_and_flat_past_capacity() -> None:
    """tracemalloc counts allocated bytes, not time: the figure does not depend on load.

    The OrderedDict this replaced took ~140-180 bytes per id; the module
    docstring says ~19.5 at capacity (16 of them the id itself).
    """
    capacity = 50_000
    es = ids(2 * capacity, seed=13)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        seen = SeenEvents(capacity=capacity)
        for e in es[:capacity]:
            seen.add(e)
        full = tracemalloc.get_traced_memory()[0] - base
        for e in es[capacity:]:  # every add now evicts the oldest id
            seen.add(e)
        later = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(seen) == capacity
    per_id = full / capacity
    assert 16 <= per_id < 24, f"{per_id:.1f} bytes per id at capacity"
    assert later < 1.1 * full, f"grew from {full:,} to {later:,} bytes past capacity"
