"""Exactly once under faults, on real brokers: the router killed, the broker restarted.

While a producer thread publishes a steady stream (example events of every
kind, varied, and some garbage), the router is SIGKILLed at random moments
and restarted with the same instance id (so its new incarnation fences the
old one's open transaction), or the broker under it is stopped and started.
Afterwards, for every event published (and acknowledged):

- each subscriber the policy entitles (``decide_all``, as the router would
  decide it) finds it exactly once in its ``read_committed`` feed, and no
  other subscriber finds it at all;
- the audit log holds exactly one decision leaf per (event, subscriber), and
  the shares among them are exactly the entitled ones; no event was taken for
  a duplicate of itself;
- each garbage message is quarantined exactly once (one quarantine record,
  one leaf with its digest);
- a checkpoint of the whole log verifies offline (``verify_bundle``).

Bounded in time: about 10 s per kill (a dead member's session timeout before
the group moves its partitions) and a minute or two for the broker restarts.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from broker import config
from broker.audit.checkpointer import Checkpointer, read_log
from broker.audit.leaf import AuditLeaf, decode_batch
from broker.audit.verify import verify_bundle
from broker.clock import SystemClock
from broker.config import PROJECT_ROOT
from broker.kafka.clients import (
    Admin,
    Consumer,
    Record,
    SendFuture,
    TopicPartition,
    make_consumer,
    make_producer,
)
from broker.kafka.local import LocalKafka
from broker.policy import ConsentStore, Policy
from broker.routing.app import build_core, build_service
from broker.topics import Topics
from tests.routing_helpers import CODEC, create_topics, example, settings_for

pytestmark = pytest.mark.kafka

KINDS = (
    "missing_episode",
    "health_concern",
    "education_concern",
    "exploitation_screening",
    "police_notification",
    "return_home_interview",
)
KILLS = 10


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


def read_to_end(bootstrap: str, topic: str, *, committed: bool = True) -> list[Record]:
    """Every committed (or every) record of ``topic``, read up to its end offsets (no waiting
    for silence: called once the router stopped, when no transaction is open)."""
    consumer = make_consumer(
        bootstrap,
        group_id=None,
        max_poll_records=10_000,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[Record] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            out.extend(consumer.poll_records(timeout_ms=200))
        return out
    finally:
        consumer.close()


def wait_for(what: str, cond: Callable[[], bool], timeout_s: float, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


# -- the invariants ------------------------------------------------------------------------


def check_exactly_once(bootstrap: str, s: config.Settings, policy: Policy, load: Load) -> int:
    """Assert the invariants in the module docstring; return the number of leaves."""
    topics = s.topics
    leaves = [
        AuditLeaf.from_bytes(b)
        for r in read_to_end(bootstrap, topics.audit)
        for b in decode_batch(r.value or b"")
    ]
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


# -- SIGKILL ----------------------------------------------------------------------------------


def test_router_killed_at_random_moments_loses_and_duplicates_nothing(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    seed = int(os.environ.get("SAFESHARE_FAULT_SEED") or time.time())
    rng = random.Random(seed)
    print(f"seed {seed} (SAFESHARE_FAULT_SEED to repeat)")
    env = dict(
        os.environ,
        SAFESHARE_BOOTSTRAP=kafka_bootstrap,
        SAFESHARE_NAMESPACE=topics.namespace,
        SAFESHARE_HOME=str(tmp_path),
    )
    log_path = tmp_path / "router.log"
    cmd = [sys.executable, "-m", "broker.cli.main", "route", "--idle", "0", "--instance", "r1"]

    def start() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log_file:
            return subprocess.Popen(
                cmd, env=env, cwd=PROJECT_ROOT, stdout=log_file, stderr=subprocess.STDOUT
            )

    progress = GroupProgress(kafka_bootstrap, topics, [a.id for a in policy.agencies])
    load = Load(kafka_bootstrap, topics, rate=100, seed=seed)
    load.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        for kill in range(KILLS):
            proc = start()
            before = progress.committed()
            # Killed only once this incarnation has committed: then it is working,
            # and most kills land with a transaction open.
            wait_for(
                f"router incarnation {kill + 1} to commit",
                lambda: progress.committed() > before or proc.poll() is not None,  # noqa: B023
                timeout_s=90,
            )
            assert proc.poll() is None, "router exited by itself:\n" + log_path.read_text()[-3000:]
            time.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        load.stop()
        proc = start()
        wait_for(
            "the router to route everything",
            lambda: progress.committed() >= progress.end(),
            timeout_s=120,
            poll_s=0.5,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_path.read_text()[-3000:]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if load.is_alive():
            load._halt.set()
        progress.close()

    outputs = [topics.feed(x.id) for x in policy.subscribers] + [topics.quarantine, topics.audit]
    aborted = sum(
        len(read_to_end(kafka_bootstrap, t, committed=False)) - len(read_to_end(kafka_bootstrap, t))
        for t in outputs
    )
    print(
        f"{len(load.events)} events, {len(load.garbage)} garbage, {KILLS} kills; "
        f"{aborted} records written by transactions that a kill cut short were aborted"
    )
    assert len(load.events) > 300 and load.garbage
    n_leaves = check_exactly_once(kafka_bootstrap, s, policy, load)
    check_audit_verifies(kafka_bootstrap, s, n_leaves)


# -- broker restart ---------------------------------------------------------------------------


@pytest.fixture
def own_broker(tmp_path: Path) -> Any:
    """A throwaway single-node broker (own data dir and ports; the session's is not touched)."""
    broker = LocalKafka(config.load().home, instance_dir=tmp_path / "kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.wipe()


def test_broker_restarted_mid_stream_loses_and_duplicates_nothing(
    own_broker: LocalKafka, tmp_path: Path
) -> None:
    bootstrap = own_broker.bootstrap
    topics = Topics(f"r{uuid.uuid4().hex[:8]}")
    s = replace(config.load(), namespace=topics.namespace, home=tmp_path / "home")
    with Admin(bootstrap) as admin:
        policy = create_topics(admin, s)

    clock = SystemClock()
    service = build_service(
        s,
        bootstrap,
        clock=clock,
        instance_id="restart",
        core=build_core(s, clock=clock, codec=CODEC),
        retry_backoff_s=(0.2, 2.0),
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    router = threading.Thread(target=run, daemon=True)
    router.start()
    load = Load(bootstrap, topics, rate=60, seed=1)
    load.start()
    try:
        # A clean restart (SIGTERM, as in a rolling restart), then a crash (SIGKILL
        # at once: the broker recovers its logs and transaction state on start).
        for how, grace_s in (("restart", 30.0), ("crash", 0.0)):
            transactions = service.stats.transactions
            wait_for(
                "the router to commit",
                lambda: service.stats.transactions > transactions + 5,  # noqa: B023
                timeout_s=60,
            )
            transactions = service.stats.transactions
            own_broker.stop(timeout_s=grace_s)
            down_at = time.monotonic()
            time.sleep(3)  # load and router keep trying meanwhile
            own_broker.start()
            up_at = time.monotonic()
            wait_for(
                f"the router to commit after the {how}",
                lambda: service.stats.transactions > transactions + 2,  # noqa: B023
                timeout_s=120,
            )
            print(
                f"broker {how}: down {up_at - down_at:.1f} s; router committing again "
                f"{time.monotonic() - up_at:.1f} s after it answered; "
                f"{service.stats.aborted} transactions aborted so far"
            )
        time.sleep(3)
        load.stop()
        progress = GroupProgress(bootstrap, topics, [a.id for a in policy.agencies])
        try:
            wait_for(
                "the router to route everything",
                lambda: progress.committed() >= progress.end(),
                timeout_s=120,
                poll_s=0.5,
            )
        finally:
            progress.close()
    finally:
        service.stop()
        router.join(60)
        if load.is_alive():
            load._halt.set()
    assert not router.is_alive() and errors == [], errors
    stats = service.stats
    print(
        f"{len(load.events)} events, {len(load.garbage)} garbage; router: "
        f"{stats.transactions} transactions, {stats.aborted} aborted, "
        f"{stats.producer_restarts} producer restarts"
    )
    assert not stats.fenced
    n_leaves = check_exactly_once(bootstrap, s, policy, load)
    check_audit_verifies(bootstrap, s, n_leaves)
