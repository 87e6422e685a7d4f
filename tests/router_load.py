"""A steady stream of events for router tests, and the exactly-once invariants after it.

:class:`Load` publishes example events of every kind (varied) and some garbage
at a steady rate; :func:`check_exactly_once` asserts, once the routers have
stopped, that every acknowledged event reached each entitled subscriber's
``read_committed`` feed exactly once (entitlement by the policy's
``decide_all``), that every decision has exactly one audit leaf, and that each
garbage message was quarantined exactly once; :func:`check_audit_verifies`
checkpoints the log and verifies it offline.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections import Counter
from typing import Any

from broker import config
from broker.audit.checkpointer import Checkpointer, read_log
from broker.audit.verify import verify_bundle
from broker.clock import SystemClock
from broker.kafka.consumer import Consumer, make_consumer
from broker.kafka.producer import SendFuture, make_producer
from broker.kafka.structs import TopicPartition
from broker.policy import ConsentStore, Policy
from broker.topics import Topics
from tests.helpers import CODEC, example, read_leaves, read_to_end, wait_for

KINDS = (
    "missing_episode",
    "health_concern",
    "education_concern",
    "exploitation_screening",
    "police_notification",
    "return_home_interview",
)


# -- load ------------------------------------------------------------------------------


class Load(threading.Thread):
    """Publishes example events (and every ``garbage_every``-th message garbage) at ``rate``/s.

    Only acknowledged messages count as published; a send that failed would
    leave the test unable to say what should have been routed, so it fails it.
    """

    def __init__(
        self, bootstrap: str, topics: Topics, *, rate: float, seed: int, garbage_every: int = 20
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topics = bootstrap, topics
        self.rate, self.garbage_every = rate, garbage_every
        self.rng = random.Random(seed)
        self.events: dict[str, dict[str, Any]] = {}  # event id -> in-memory event
        self.garbage: list[bytes] = []
        self.failed: list[str] = []
        self._pending: list[tuple[str, Any, SendFuture]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        producer = make_producer(self.bootstrap, linger_ms=5)
        agencies = sorted({example(k)["source"]["agency_id"] for k in KINDS})
        try:
            n, next_at = 0, time.monotonic()
            while not self._halt.is_set():
                n += 1
                if n % self.garbage_every == 0:
                    value = b"\x00garbage " + uuid.uuid4().bytes
                    topic = self.topics.ingest(self.rng.choice(agencies))
                    self._pending.append(("garbage", value, producer.send(topic, value)))
                else:
                    obj = example(self.rng.choice(KINDS))
                    obj["subject"]["pseudonym"] = f"psn-LOAD-{self.rng.randrange(40):04d}"
                    event = CODEC.from_json(obj)
                    fut = producer.send(
                        self.topics.ingest(obj["source"]["agency_id"]),
                        CODEC.encode(event),
                        key=obj["subject"]["pseudonym"].encode(),
                    )
                    self._pending.append(("event", event, fut))
                next_at += 1 / self.rate
                self._halt.wait(max(0.0, next_at - time.monotonic()))
            producer.flush(timeout=120)
        finally:
            for kind, item, fut in self._pending:
                try:
                    fut.get(timeout=120)
                except Exception as exc:  # noqa: BLE001 - reported by the test
                    self.failed.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                if kind == "garbage":
                    self.garbage.append(item)
                else:
                    self.events[item["event_id"]] = item
            producer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(180)
        assert not self.is_alive(), "load producer did not finish"
        assert self.failed == [], f"{len(self.failed)} sends failed, e.g. {self.failed[:3]}"


# -- observing the router from outside -----------------------------------------------------


class GroupProgress:
    """The router group's committed offsets on the ingest topics (never joins the group)."""

    def __init__(self, bootstrap: str, topics: Topics, agencies: list[str]) -> None:
        self._consumer: Consumer = make_consumer(bootstrap, group_id=topics.router_group)
        self.tps = [TopicPartition(topics.ingest(a), p) for a in agencies for p in (0, 1)]

    def committed(self) -> int:
        return sum(self._consumer.committed(tp) or 0 for tp in self.tps)

    def end(self) -> int:
        return sum(self._consumer.end_offsets(self.tps).values())

    def close(self) -> None:
        self._consumer.close()


# -- the invariants ------------------------------------------------------------------------


def check_exactly_once(bootstrap: str, s: config.Settings, policy: Policy, load: Load) -> int:
    """Assert the invariants in the module docstring; return the number of leaves."""
    topics = s.topics
    leaves = read_leaves(bootstrap, topics, to_end=True)
    subscribers = [x.id for x in policy.subscribers]
    feeds = {
        sub: Counter(
            CODEC.decode(r.value or b"", "safeshare.FeedRecord")["event"]["event_id"]
            for r in read_to_end(bootstrap, topics.feed(sub))
        )
        for sub in subscribers
    }
    problems: list[str] = []

    decisions = Counter((lf.event_id, lf.recipient) for lf in leaves if lf.recipient)
    problems += [f"{n} leaves for decision {d}" for d, n in decisions.items() if n != 1]
    problems += [f"DUPLICATE leaf for {lf.event_id}" for lf in leaves if lf.kind == "DUPLICATE"]
    by_event: dict[str, dict[str, str]] = {}
    for lf in leaves:
        if lf.recipient:
            by_event.setdefault(lf.event_id, {})[lf.recipient] = str(lf.kind)

    store, now = ConsentStore(), SystemClock().now_ms()
    for eid, event in load.events.items():
        entitled = {d.subscriber for d in policy.decide_all(event, store, now)
                    if d.outcome == "SHARE"}
        for sub in subscribers:
            want = 1 if sub in entitled else 0
            if feeds[sub][eid] != want:
                problems.append(f"{eid} in feed of {sub} {feeds[sub][eid]}x, expected {want}x")
        kinds = by_event.get(eid, {})
        if set(kinds) != set(subscribers):
            problems.append(f"{eid}: decisions for {sorted(kinds)}, expected every subscriber")
        shared = {sub for sub, kind in kinds.items() if kind == "SHARED"}
        if shared != entitled:
            problems.append(f"{eid}: audited shares {sorted(shared)}, entitled {sorted(entitled)}")
    strangers = {eid for c in feeds.values() for eid in c} - set(load.events)
    problems += [f"{eid} in a feed but never published" for eid in strangers]

    digests = Counter(lf.event_digest for lf in leaves if lf.kind == "QUARANTINED")
    originals = Counter(
        CODEC.decode(r.value or b"", "safeshare.QuarantineRecord")["original"]
        for r in read_to_end(bootstrap, topics.quarantine)
    )
    for g in load.garbage:
        if digests[hashlib.sha256(g).hexdigest()] != 1 or originals[g] != 1:
            problems.append(
                f"garbage {g!r}: {digests[hashlib.sha256(g).hexdigest()]} leaves, "
                f"{originals[g]} quarantine records, expected 1 and 1"
            )
    if sum(originals.values()) != len(load.garbage):
        problems.append(f"{sum(originals.values())} quarantined, {len(load.garbage)} garbage sent")

    assert problems == [], f"{len(problems)} problems, e.g.: " + "; ".join(problems[:8])
    assert len(leaves) == len(load.events) * len(subscribers) + len(load.garbage)
    return len(leaves)


def check_audit_verifies(bootstrap: str, s: config.Settings, n_leaves: int) -> None:
    checkpointer = Checkpointer.from_settings(s, bootstrap)
    wait_for(
        f"a checkpoint of all {n_leaves} leaves",
        lambda: checkpointer.run_once().checkpoint.size >= n_leaves,
        timeout_s=60,
        poll_s=0.5,
    )
    anchor = (s.home / "keys" / "audit-log.vkey").read_text().strip()
    report = verify_bundle(read_log(bootstrap, s.topics), [anchor])
    assert report.tree_size == n_leaves
