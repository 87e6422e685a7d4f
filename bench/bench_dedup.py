"""The router's duplicate-id memory (``broker.routing.dedup.SeenEvents``) against the
``OrderedDict`` it replaced, measured in the same run. Prints figures; never passes or fails.

    .venv/bin/python -m bench dedup
    .venv/bin/python bench/bench_dedup.py [--ids N] [--capacity C] [--ops N]

Figures, for both implementations:

- bytes per id, tracemalloc: the memory allocated while ``--ids`` random UUIDs
  (default 1,000,000) are added at the default capacity, divided by the ids;
- RSS growth, MB: a fresh Python process per implementation adds the same
  number of ids and reports its resident set growth (and at each tenth, to
  show the shape); then once more with ``--ids`` into a capacity of half that,
  where the second half of the run evicts as it adds: the growth over that
  second half should be about nothing;
- ns per operation (CPU time of this process, best of three, interleaved):
  ``add`` of a new id at capacity (so each add also evicts), ``in`` for an id
  held and for one not held, and ``add_from_leaf`` of a SHARED audit leaf.

Each figure is printed for people and once more as a machine-readable line::

    BENCH {"name": "...", "value": ..., "unit": "..."}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.audit.leaf import AuditLeaf, LeafKind  # noqa: E402
from broker.routing.dedup import DEFAULT_CAPACITY, SeenEvents  # noqa: E402

_EVENT_ID = re.compile(rb'"event_id":"([0-9a-fA-F-]{36})"')
_KIND = re.compile(rb'"kind":"(SHARED|WITHHELD)"')


class OrderedDictSeen:
    """The implementation SeenEvents replaced (as of 784dcce), for comparison."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[bytes | str, None] = OrderedDict()

    @staticmethod
    def _key(event_id: str) -> bytes | str:
        try:
            return uuid.UUID(event_id).bytes
        except ValueError:
            return event_id

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and self._key(event_id) in self._ids

    def add(self, event_id: str) -> None:
        key = self._key(event_id)
        if key in self._ids:
            return
        self._ids[key] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def add_from_leaf(self, leaf: bytes) -> None:
        if _KIND.search(leaf) is None:
            return
        m = _EVENT_ID.search(leaf)
        if m is not None:
            self.add(m.group(1).decode())


class Seen(Protocol):
    def __contains__(self, event_id: object) -> bool: ...
    def add(self, event_id: str) -> None: ...
    def add_from_leaf(self, leaf: bytes) -> None: ...


IMPLEMENTATIONS: dict[str, Callable[[int], Seen]] = {
    "OrderedDict": OrderedDictSeen,
    "SeenEvents": SeenEvents,
}


def report(name: str, value: float, unit: str, note: str = "") -> None:
    shown = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    print(f"{name:<52} {shown:>12} {unit}{'  (' + note + ')' if note else ''}", flush=True)
    print("BENCH " + json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def event_ids(n: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(n):
        yield str(uuid.UUID(int=rng.getrandbits(128), version=4))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


# -- in a child process: one implementation, nothing else allocated ---------------------------


def child(impl: str, mode: str, n: int, capacity: int) -> dict[str, object]:
    ids = event_ids(n, seed=1)  # generated as they are added: no list of a million strings
    if mode == "tracemalloc":
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        seen = IMPLEMENTATIONS[impl](capacity)
        for e in ids:
            seen.add(e)
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        return {"bytes": used}
    seen = IMPLEMENTATIONS[impl](capacity)
    base = rss_bytes()
    tenths = []
    step = max(1, n // 10)
    for i, e in enumerate(ids, 1):
        seen.add(e)
        if i % step == 0:
            tenths.append(rss_bytes() - base)
    return {"bytes": rss_bytes() - base, "tenths": tenths}


def in_child(impl: str, mode: str, n: int, capacity: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", impl, mode, str(n), str(capacity)],
        check=True, capture_output=True, text=True,
    ).stdout
    result: dict[str, object] = json.loads(out.splitlines()[-1])
    return result


# -- figures --------------------------------------------------------------------------------


def memory(n: int, capacity: int) -> None:
    per_id: dict[str, float] = {}
    for impl in IMPLEMENTATIONS:
        used = in_child(impl, "tracemalloc", n, capacity)["bytes"]
        assert isinstance(used, int)
        per_id[impl] = used / min(n, capacity)
        report(f"dedup bytes/id tracemalloc {impl}", per_id[impl], "B/id",
               f"{n:,} ids, capacity {capacity:,}")
    report("dedup bytes/id OrderedDict / SeenEvents", per_id["OrderedDict"] / per_id["SeenEvents"],
           "x")
    for impl in IMPLEMENTATIONS:
        r = in_child(impl, "rss", n, capacity)
        tenths = r["tenths"]
        assert isinstance(r["bytes"], int) and isinstance(tenths, list)
        report(f"dedup RSS growth {impl}", r["bytes"] / 1e6, "MB",
               f"{n:,} ids; per tenth: " + " ".join(f"{t / 1e6:.0f}" for t in tenths))
    half = n // 2
    for impl in IMPLEMENTATIONS:
        r = in_child(impl, "rss", n, half)
        tenths = r["tenths"]
        assert isinstance(tenths, list) and len(tenths) == 10
        report(f"dedup RSS growth past capacity {impl}", (tenths[-1] - tenths[4]) / 1e6, "MB",
               f"ids {half:,}..{n:,} into capacity {half:,}; at capacity {tenths[4] / 1e6:.0f} MB")


def best_ns(
    setup: Callable[[str], Seen], run: Callable[[Seen], object], ops: int
) -> dict[str, float]:
    """CPU time per operation of ``run(setup(impl))`` for each implementation, best of
    three rounds, the implementations taking turns within each round (so both see
    the same machine load). ``setup`` is not timed."""
    best = dict.fromkeys(IMPLEMENTATIONS, float("inf"))
    for _ in range(3):
        for impl in IMPLEMENTATIONS:
            seen = setup(impl)
            started = time.process_time()
            run(seen)
            best[impl] = min(best[impl], time.process_time() - started)
    return {impl: t / ops * 1e9 for impl, t in best.items()}


def leaf(event_id: str) -> bytes:
    return AuditLeaf(
        time_ms=1_700_000_000_000,
        kind=LeafKind.SHARED,
        event_id=event_id,
        event_digest=hashlib.sha256(event_id.encode()).hexdigest(),
        source_agency="devon-cornwall-police",
        recipient="mash-torbay",
        outcome="ALLOW",
        rule_id="mash-all",
        lawful_basis="Children Act 1989 s.47",
        data_classes_shared=["concern_summary", "location"],
        policy_digest=hashlib.sha256(b"policy").hexdigest(),
        subject=hashlib.sha256(b"subject").hexdigest(),
    ).to_bytes()


def speed(ops: int) -> None:
    capacity = ops
    held = list(event_ids(capacity, seed=2))
    fresh = list(event_ids(ops, seed=3))
    absent = list(event_ids(ops, seed=4))
    leaves = [leaf(e) for e in event_ids(min(ops, 50_000), seed=5)]
    full: dict[str, Seen] = {}
    for impl, make in IMPLEMENTATIONS.items():
        full[impl] = make(capacity)
        for e in held:
            full[impl].add(e)

    def add_fresh(seen: Seen) -> None:
        for e in fresh:  # at capacity: each add evicts the oldest
            seen.add(e)

    def contains(ids: list[str]) -> Callable[[Seen], None]:
        def run(seen: Seen) -> None:
            for e in ids:
                _ = e in seen

        return run

    def from_leaves(seen: Seen) -> None:
        for b in leaves:
            seen.add_from_leaf(b)

    def refilled(impl: str) -> Seen:  # a second round of adds would find its ids held
        seen = IMPLEMENTATIONS[impl](capacity)
        for e in held:
            seen.add(e)
        return seen

    results = {
        "add (new id, at capacity)": best_ns(refilled, add_fresh, ops),
        "in (held)": best_ns(full.__getitem__, contains(held), ops),
        "in (not held)": best_ns(full.__getitem__, contains(absent), ops),
        "add_from_leaf (SHARED)": best_ns(
            lambda impl: IMPLEMENTATIONS[impl](capacity), from_leaves, len(leaves)
        ),
    }
    for what, ns in results.items():
        for impl in IMPLEMENTATIONS:
            report(f"dedup {what} {impl}", ns[impl], "ns/op")
        report(f"dedup {what} OrderedDict / SeenEvents", ns["OrderedDict"] / ns["SeenEvents"], "x")


def main(argv: Sequence[str] | None = None) -> None:
    """Every figure. ``argv`` defaults to none (``python -m bench`` calls ``main()``)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ids", type=int, default=1_000_000, help="ids added for the memory figures")
    ap.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY)
    ap.add_argument("--ops", type=int, default=200_000, help="operations per speed figure")
    args = ap.parse_args(list(argv or []))
    speed(args.ops)
    memory(args.ids, args.capacity)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        _, _, impl_, mode_, n_, cap_ = sys.argv
        print(json.dumps(child(impl_, mode_, int(n_), int(cap_))))
    else:
        main(sys.argv[1:])
