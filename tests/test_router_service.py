"""The router as a service on a real Kafka: /metrics, /healthz, several instances, fail closed.

What an operator would notice: the metrics name agencies, subscribers and
reason codes and nothing about a child; /healthz answers 200 while the router
consumes and commits and 503 while its transactions keep failing; two
instances in one group share the partitions and together route every event
exactly once; and while the audit log cannot be written nothing is shared at
all, then everything is, once, when it can again.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
import threading
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker import config
from broker.api import Publisher
from broker.audit.checkpointer import Checkpointer
from broker.clock import SystemClock
from broker.kafka.admin import Admin
from broker.kafka.exceptions import KafkaTimeoutError
from broker.kafka.producer import make_producer
from broker.policy import Policy
from broker.routing import service as service_module
from broker.routing.app import build_core, build_service
from broker.routing.core import Routed
from broker.routing.dedup import SeenEvents
from broker.routing.metrics import HealthServer, RouterMetrics
from broker.routing.service import RouterService
from broker.topics import Topics
from tests.helpers import (
    CODEC,
    EVENTS,
    create_topics,
    example,
    read_all,
    read_leaves,
    read_to_end,
    settings_for,
    wait_for,
)
from tests.router_load import GroupProgress, Load, check_exactly_once

# -- no Kafka -------------------------------------------------------------------------

def routed_partitions(policy: Policy) -> int:
    """The router group's partitions in create_topics: per agency of the policy, an
    ingest topic of two partitions and a consent topic of one; per subscriber, an
    identity-decisions topic of one."""
    return len(policy.agencies) * (2 + 1) + len(policy.subscribers)


def test_forget_since_undoes_exactly_the_ids_added_after_the_mark() -> None:
    seen = SeenEvents()
    before = [str(uuid.uuid4()) for _ in range(3)]
    for e in before:
        seen.add(e)
    mark = seen.mark()
    during = [str(uuid.uuid4()) for _ in range(4)]
    for e in during:
        seen.add(e)
    seen.add(before[0])  # already there: not "added" by this batch
    assert seen.forget_since(mark) == 4
    assert all(e in seen for e in before)
    assert not any(e in seen for e in during)
    assert seen.forget_since(seen.mark()) == 0


# -- on Kafka ---------------------------------------------------------------------------



class Running:
    """A RouterService run in a thread (as ``safeshare serve`` runs it), recording batches."""

    def __init__(
        self, bootstrap: str, s: config.Settings, instance: str | None = None, **kwargs: Any
    ) -> None:
        self.routed: list[Routed] = []
        self._lock = threading.Lock()
        clock = SystemClock()
        self.service: RouterService = build_service(
            s,
            bootstrap,
            clock=clock,
            instance_id=instance or f"svc-{uuid.uuid4().hex[:6]}",
            core=build_core(s, clock=clock, codec=CODEC),
            on_batch=self._on_batch,
            **kwargs,
        )
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_batch(self, batch: list[Routed]) -> None:
        with self._lock:
            self.routed.extend(batch)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def event_ids(self) -> list[str]:
        with self._lock:
            return [r.event_id for r in self.routed if r.event_id]

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.service.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> None:
        self.service.stop()
        self._thread.join(60)
        assert not self._thread.is_alive(), "router did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def running() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(*args: Any, **kwargs: Any) -> Running:
        r = Running(*args, **kwargs)
        started.append(r)
        return r

    yield start
    for r in started:
        r.service.stop()
    for r in started:
        r._thread.join(60)


def feed_event_ids(bootstrap: str, topics: Topics, subscriber: str) -> list[str]:
    return [
        CODEC.decode(r.value or b"", "safeshare.FeedRecord")["event"]["event_id"]
        for r in read_all(bootstrap, topics.feed(subscriber))
    ]


def publish(bootstrap: str, topics: Topics, events: list[dict[str, Any]]) -> None:
    by_agency: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_agency.setdefault(e["source"]["agency_id"], []).append(e)
    for agency, evs in by_agency.items():
        with Publisher(bootstrap=bootstrap, agency=agency, topics=topics) as p:
            for e in evs:
                p.publish_json(e)


def personal_strings(obj: Any, key: str = "") -> set[str]:
    """Every free-text or identifying string of an example event (not enums or ids)."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in {"source", "event_id", "type", "local_authority"}:
                out |= personal_strings(v, k)
    elif isinstance(obj, list):
        for v in obj:
            out |= personal_strings(v, key)
    elif (
        isinstance(obj, str)
        and len(obj) >= 4
        and not re.fullmatch(r"[A-Z][A-Z0-9_]*", obj)  # enum symbols
        and not re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", obj)  # times
    ):
        out.add(obj)
    return out


@pytest.mark.kafka
def test_metrics_and_logs_name_agencies_subscribers_and_reasons_never_a_child(
    kafka_bootstrap: str,
    topics: Topics,
    admin: Admin,
    tmp_path: Path,
    running: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="broker.routing")
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    raw = [json.loads(p.read_text()) for p in sorted(EVENTS.glob("*.json"))]
    events = [dict(e, event_id=str(uuid.uuid4())) for e in raw]
    publish(kafka_bootstrap, topics, events)

    router = running(kafka_bootstrap, s, metrics_port=0)
    wait_for("every example event routed", lambda: len(router.routed) == len(events))

    status, body = router.get("/healthz")
    health = json.loads(body)
    assert status == 200, health
    assert health["ok"] and health["consuming"] and health["committing"]
    assert health["transactions"] >= 1 and health["assigned_partitions"] > 0

    status, body = router.get("/metrics")
    assert status == 200
    text = body.decode()
    labels: set[str] = set()
    for line in text.splitlines():
        if line.startswith("safeshare_") and "{" in line:
            labels |= set(re.findall(r"([a-z_]+)=\"", line.split("{", 1)[1].rsplit("}", 1)[0]))
    # (``le``: a histogram's bucket bound; ``topic``: an ingest topic, named after its agency.)
    assert labels <= {"agency", "subscriber", "reason", "topic", "le"}, labels
    assert 'safeshare_shares_total{subscriber="torbay-mash"}' in text
    per_agency = Counter(e["source"]["agency_id"] for e in events)
    for agency, n in per_agency.items():
        assert f'safeshare_events_consumed_total{{agency="{agency}"}} {float(n)}' in text
    assert re.search(r'safeshare_withheld_total\{reason="[A-Z_]+",subscriber="[a-z-]+"\}', text)
    pii = set().union(*(personal_strings(e) for e in raw))
    assert {"psn-7Q2K-93XD", "Jamie", "Example", "9434765919"} <= pii  # the check has teeth
    leaked = sorted(p for p in pii if p in text)
    assert leaked == [], f"personal data in /metrics: {leaked}"
    # Log lines: where each record was and which event it held, nothing about the child.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for e in events:
        assert re.search(rf"\.(ingest|consent)\.[a-z-]+\[\d\]@\d+ event={e['event_id']} ", logged)
    leaked = sorted(p for p in pii if p in logged)
    assert leaked == [], f"personal data in the router's log: {leaked}"

    # Audit checkpoint lag: every committed leaf, until a checkpoint covers them.
    n_leaves = len(read_leaves(kafka_bootstrap, topics))
    assert n_leaves > 0

    def metrics() -> str:
        return router.get("/metrics")[1].decode()

    wait_for(
        "checkpoint lag = committed leaves",
        lambda: f"safeshare_audit_checkpoint_lag {float(n_leaves)}" in metrics(),
        timeout_s=20,
    )
    cp = Checkpointer.from_settings(s, kafka_bootstrap)
    wait_for("a checkpoint of every leaf", lambda: cp.run_once().checkpoint.size == n_leaves, 20)
    wait_for(
        "checkpoint lag 0",
        lambda: "safeshare_audit_checkpoint_lag 0.0" in metrics(),
        timeout_s=20,
    )
    # The lag is measured once a loop, before its poll: the last batch's commit
    # shows at the next pass, not necessarily in the page read just after it.
    wait_for(
        "consumer lag 0 on an ingest topic",
        lambda: re.search(
            r'safeshare_consumer_lag\{topic="[^"]+\.ingest\.[a-z-]+"\} 0\.0', metrics()
        ) is not None,
        timeout_s=20,
    )
    router.stop()


@pytest.mark.kafka
def test_instances_joining_and_leaving_one_group_route_a_stream_exactly_once(
    kafka_bootstrap: str,
    topics: Topics,
    admin: Admin,
    tmp_path: Path,
    running: Callable[..., Running],
) -> None:
    """Two instances split the partitions; a third joins and the first leaves while
    events flow: each rebalance moves partitions under open transactions, whose
    offsets the broker then refuses (KIP-447), and their batches are replayed by
    the new owners. Every event is still routed exactly once."""
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    a = running(kafka_bootstrap, s, instance="a")
    b = running(kafka_bootstrap, s, instance="b")
    wait_for(
        "a and b to split the partitions",
        lambda: bool(a.service.assignment()) and bool(b.service.assignment())
        and not (a.service.assignment() & b.service.assignment())
        and len(a.service.assignment() | b.service.assignment()) == routed_partitions(policy),
    )
    load = Load(kafka_bootstrap, topics, rate=100, seed=3)
    load.start()
    wait_for("a and b to route the load", lambda: bool(a.event_ids()) and bool(b.event_ids()))
    c = running(kafka_bootstrap, s, instance="c")
    wait_for("c to own partitions", lambda: bool(c.service.assignment()))
    wait_for("c to route the load", lambda: bool(c.event_ids()))
    routed_b, routed_c = len(b.event_ids()), len(c.event_ids())
    a.stop()  # leaves the group: b and c take its partitions over
    wait_for(
        "b and c to route on without a",
        lambda: len(b.event_ids()) > routed_b and len(c.event_ids()) > routed_c,
    )
    load.stop()
    progress = GroupProgress(kafka_bootstrap, topics, [x.id for x in policy.agencies])
    try:
        wait_for("everything routed", lambda: progress.committed() >= progress.end())
    finally:
        progress.close()
    b.stop()
    c.stop()

    routed = [set(r.event_ids()) for r in (a, b, c)]
    assert all(routed), "an instance routed nothing: the partitions were not shared"
    assert not (routed[0] & routed[1] or routed[0] & routed[2] or routed[1] & routed[2])
    check_exactly_once(kafka_bootstrap, s, policy, load)
    aborted = sum(r.service.stats.aborted for r in (a, b, c))
    print(f"{len(load.events)} events; {aborted} transactions aborted by rebalances")


@pytest.mark.kafka
def test_while_the_audit_cannot_be_written_nothing_is_shared_then_everything_once(
    kafka_bootstrap: str,
    topics: Topics,
    admin: Admin,
    tmp_path: Path,
    running: Callable[..., Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service_module, "HEALTH_STALE_S", 2.0)
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    # The broker refuses every audit batch: one event's leaves (one per subscriber)
    # take several kilobytes. (Not smaller: the abort's control marker, about
    # 80 bytes, must still fit, or the transaction can never finish aborting.)
    admin.alter_topic_config(topics.audit, {"max.message.bytes": "1024"})
    events = [example("missing_episode") for _ in range(5)]
    publish(kafka_bootstrap, topics, events)

    router = running(kafka_bootstrap, s, metrics_port=0, retry_backoff_s=(0.2, 0.5))
    wait_for("three failed transactions", lambda: router.service.stats.aborted >= 3)
    wait_for("/healthz 503", lambda: router.get("/healthz")[0] == 503, timeout_s=10)
    health = json.loads(router.get("/healthz")[1])
    assert health["consuming"] and not health["committing"], health
    assert "MessageSizeTooLarge" in (health["last_error"] or ""), health

    # The copies were written, inside transactions that were then aborted:
    # a read_uncommitted reader sees them, no read_committed reader ever does.
    written = read_to_end(kafka_bootstrap, topics.feed("torbay-mash"), committed=False)
    assert len(written) >= len(events)
    assert feed_event_ids(kafka_bootstrap, topics, "torbay-mash") == []
    assert read_all(kafka_bootstrap, topics.audit, timeout_s=1) == []
    assert router.routed == []

    # The audit can be written again: every event is shared once, none is taken
    # for a duplicate of its own aborted attempt.
    admin.alter_topic_config(topics.audit, {"max.message.bytes": "1048588"})
    wait_for("every event routed", lambda: len(router.routed) == len(events), timeout_s=30)
    wait_for("/healthz 200", lambda: router.get("/healthz")[0] == 200, timeout_s=10)
    router.stop()
    assert not any(r.duplicate for r in router.routed)
    assert Counter(feed_event_ids(kafka_bootstrap, topics, "torbay-mash")) == Counter(
        e["event_id"] for e in events
    )
    leaves = read_leaves(kafka_bootstrap, topics)
    assert len(leaves) == len(events) * len(policy.subscribers)
    assert Counter((lf.event_id, lf.recipient) for lf in leaves).most_common(1)[0][1] == 1


@pytest.mark.kafka
def test_an_instance_fenced_by_its_successor_stops_cleanly_and_nothing_is_shared_twice(
    kafka_bootstrap: str,
    topics: Topics,
    admin: Admin,
    tmp_path: Path,
    running: Callable[..., Running],
) -> None:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    first = [example("missing_episode") for _ in range(3)]
    publish(kafka_bootstrap, topics, first)
    zombie = running(kafka_bootstrap, s, instance="same")
    wait_for("the first events routed", lambda: len(zombie.routed) == len(first))

    # A new incarnation of instance "same" registers its transactional id: the
    # old one, still running (a zombie: paused, partitioned away), is fenced.
    successor = make_producer(
        kafka_bootstrap, transactional_id=topics.router_transactional_id("same")
    )
    successor.init_transactions()
    later = [example("missing_episode") for _ in range(3)]
    publish(kafka_bootstrap, topics, later)
    wait_for("the zombie to stop", lambda: not zombie._thread.is_alive(), timeout_s=60)
    successor.close()
    assert zombie.error is None, zombie.error
    assert zombie.service.stats.fenced
    assert not [r for r in zombie.routed if r.event_id in {e["event_id"] for e in later}]

    heir = running(kafka_bootstrap, s, instance="same")
    wait_for("the later events routed", lambda: len(heir.routed) == len(later))
    heir.stop()
    ids = [e["event_id"] for e in first + later]
    assert Counter(feed_event_ids(kafka_bootstrap, topics, "torbay-mash")) == Counter(ids)


@pytest.mark.kafka
def test_a_stalled_instance_loses_its_partitions_and_its_late_offsets_are_refused(
    kafka_bootstrap: str,
    topics: Topics,
    admin: Admin,
    tmp_path: Path,
    running: Callable[..., Running],
) -> None:
    """KIP-447: instance a polls a batch and then stalls (a long pause) past its
    max poll interval, so it is put out of the group and b takes its partitions.
    When a wakes up and commits, its offsets carry the group generation of its
    poll, which the broker refuses: a aborts, and every event is routed exactly
    once (b replays the batch)."""
    s = settings_for(topics, tmp_path)
    every = routed_partitions(create_topics(admin, s))
    a = running(
        kafka_bootstrap, s, instance="a", max_poll_interval_ms=6000
    )
    wait_for("a to own every partition", lambda: len(a.service.assignment()) == every)
    original = a.service._start
    joined: list[Running] = []

    def stalled(batches: Any, group: Any) -> Any:
        if not joined:
            joined.append(running(kafka_bootstrap, s, instance="b"))
            wait_for(
                "b to take the partitions over from the stalled a",
                lambda: len(joined[0].service.assignment()) == every,
                timeout_s=60,
            )
        return original(batches, group)

    a.service._start = stalled  # type: ignore[method-assign]
    events = [example("missing_episode") for _ in range(20)]
    ids = Counter(e["event_id"] for e in events)
    publish(kafka_bootstrap, topics, events)
    wait_for("b to start", lambda: bool(joined))
    b = joined[0]
    wait_for("every event routed", lambda: set(a.event_ids()) | set(b.event_ids()) == set(ids))
    wait_for("a's late commit refused", lambda: a.service.stats.aborted >= 1)
    progress = GroupProgress(kafka_bootstrap, topics, [events[0]["source"]["agency_id"]])
    try:
        # Once the group's offsets reach the end nothing is left to route twice.
        wait_for("the group's offsets at the end", lambda: progress.committed() >= progress.end())
    finally:
        progress.close()
    b.stop()
    a.stop()
    assert a.service.stats.aborted >= 1, "the stale offsets were accepted"
    assert "CommitFailed" in a.service._last_error or "generation" in a.service._last_error, (
        a.service._last_error
    )
    assert Counter(a.event_ids() + b.event_ids()) == ids
    assert Counter(feed_event_ids(kafka_bootstrap, topics, "torbay-mash")) == ids


@pytest.mark.kafka
def test_a_commit_the_broker_applied_but_the_router_saw_fail_shares_a_resent_event_once(
    kafka_bootstrap: str,
    topics: Topics,
    admin: Admin,
    tmp_path: Path,
    running: Callable[..., Running],
) -> None:
    """The commit round trip fails after the broker committed (its answer lost to
    a broker failure or a timeout): the router takes the transaction for failed,
    forgets the batch's event ids and replaces its producer. The batch is not
    replayed (its offsets were committed with it), so the ids come back only from
    the audit log; when the agency re-sends the event it must be a duplicate,
    not shared a second time.

    The lost answer is made on the client side, as the router would meet it: the
    real commit goes through, then the call raises the timeout it would raise."""
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    router = running(kafka_bootstrap, s)
    producer = router.service._producer
    assert producer is not None
    committed_for_real = producer.commit_transaction
    lost: list[bool] = []

    def commit_whose_answer_is_lost(*args: Any, **kwargs: Any) -> None:
        committed_for_real(*args, **kwargs)
        if not lost:
            lost.append(True)
            raise KafkaTimeoutError("commit_transaction: no answer (the test lost it)")

    producer.commit_transaction = commit_whose_answer_is_lost  # type: ignore[method-assign]
    event = example("missing_episode")
    publish(kafka_bootstrap, topics, [event])
    wait_for("the lost commit", lambda: router.service.stats.aborted >= 1)
    wait_for(
        "the event in the feed (the commit did happen)",
        lambda: feed_event_ids(kafka_bootstrap, topics, "torbay-mash") == [event["event_id"]],
    )
    assert router.routed == []  # as far as the router knows, nothing committed

    publish(kafka_bootstrap, topics, [event])  # the agency re-sends it
    wait_for("the re-sent event routed", lambda: len(router.routed) == 1, timeout_s=30)
    router.stop()
    assert router.routed[0].duplicate and not router.routed[0].shared
    assert feed_event_ids(kafka_bootstrap, topics, "torbay-mash") == [event["event_id"]]
    leaves = read_leaves(kafka_bootstrap, topics)
    assert [lf.kind.value for lf in leaves].count("DUPLICATE") == 1
    shares = Counter(lf.recipient for lf in leaves if lf.kind.value == "SHARED")
    assert shares and set(shares.values()) == {1}, shares


def test_a_health_probe_that_hangs_up_early_leaves_no_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    server = HealthServer(RouterMetrics(), lambda: (True, {"pad": "x" * 200_000})).start()
    try:
        for _ in range(20):
            # Ask, then reset the connection before the answer is read (SO_LINGER 0).
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200  # still answering
    finally:
        server.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err, err
