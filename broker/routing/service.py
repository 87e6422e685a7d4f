"""The router service: consume, decide, and write feeds + audit + offsets in one transaction.

Exactly once, fail closed (DESIGN.md): the router reads ingest topics with
``read_committed`` as one consumer group, and for each polled batch writes every
subscriber copy, every quarantine record, the batch's audit leaves and the
consumer offsets in a single Kafka transaction. A share and its audit record
commit together or not at all; if anything in the batch cannot be written the
transaction is aborted and the process stops, so the batch is replayed by the
next router to own the partitions (nothing shared without its audit record).

Consent records are read by a second consumer that is *assigned* (not
subscribed) to the compacted consent topic and always starts from the
beginning, so every router instance holds the full, current consent state; it
is caught up before each ingest batch so consent is checked at routing time.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from broker.audit.exceptions import AuditError
from broker.audit.leaf import decode_batch
from broker.kafka.clients import (
    Consumer,
    OffsetAndMetadata,
    Record,
    TopicPartition,
    make_consumer,
    make_producer,
)
from broker.routing.core import Inbound, Routed, RoutingCore
from broker.routing.metrics import HealthServer, RouterMetrics
from broker.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class RouterStats:
    consumed: int = 0
    shared: int = 0
    withheld: int = 0
    quarantined: int = 0
    duplicates: int = 0
    transactions: int = 0
    last_commit_ms: int = 0
    per_agency: dict[str, int] = field(default_factory=dict)


AuditEncoder = Callable[[list[dict[str, Any]]], list[bytes]]


class RouterService:
    """Runs :class:`RoutingCore` against Kafka, transactionally."""

    def __init__(
        self,
        *,
        bootstrap: str,
        core: RoutingCore,
        topics: Topics,
        instance_id: str,
        audit_encoder: AuditEncoder,
        max_batch: int = 500,
        poll_timeout_ms: int = 200,
        on_batch: Callable[[list[Routed]], None] | None = None,
        metrics: RouterMetrics | None = None,
        metrics_host: str | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.core = core
        self.topics = topics
        self.stats = RouterStats()
        self.metrics = metrics or RouterMetrics()
        self._last_poll = time.monotonic()
        self._health: HealthServer | None = None
        self.metrics_port: int | None = None
        if metrics_port is not None:
            self._health = HealthServer(
                self.metrics, self.health, host=metrics_host or "127.0.0.1", port=metrics_port
            ).start()
            self.metrics_port = self._health.port
        self._audit_encoder = audit_encoder
        self._max_batch = max_batch
        self._poll_timeout_ms = poll_timeout_ms
        self._on_batch = on_batch
        self._stop = threading.Event()
        # Ingest topics, and the consent topic (whose bad records the group
        # quarantines exactly once; consent *state* comes from self._consent).
        pattern = (
            "^("
            + re.escape(topics.ingest_prefix)
            + r"[a-z0-9][a-z0-9_-]*"
            + "|"
            + re.escape(topics.consent)
            + ")$"
        )
        self._consumer = make_consumer(
            bootstrap,
            group_id=topics.router_group,
            pattern=pattern,
            isolation_level="read_committed",
            max_poll_records=max_batch,
            # New topics (a new agency) are picked up without a restart.
            metadata_max_age_ms=5000,
        )
        self._consent = make_consumer(
            bootstrap, group_id=None, topics=None, isolation_level="read_committed"
        )
        # Follows the audit topic so every instance knows every routed event id.
        self._audit = make_consumer(
            bootstrap, group_id=None, topics=None, isolation_level="read_committed"
        )
        self._producer = make_producer(
            bootstrap, transactional_id=topics.router_transactional_id(instance_id)
        )
        self._producer.init_transactions()

    # -- state followed by every instance -------------------------------------
    def _catch_up_consent(self) -> None:
        """Fold every committed consent record into the consent state."""
        if not _follow_from_start(self._consent, self.topics.consent):
            return
        for r in _catch_up(self._consent, "consent"):
            if not self.core.apply_consent(_inbound(r)):
                log.debug(
                    "consent record %s unusable (quarantined by the group)", _inbound(r).where
                )

    def _catch_up_audit(self) -> None:
        """Learn every event id committed to the audit log (by any instance)."""
        if not _follow_from_start(self._audit, self.topics.audit):
            return
        seen = self.core.seen_event_ids
        for r in _catch_up(self._audit, "audit"):
            try:
                leaves = decode_batch(r.value or b"")
            except AuditError:
                log.error(
                    "audit record %s[%d]@%d is not a leaf batch", r.topic, r.partition, r.offset
                )
                continue
            for leaf in leaves:
                seen.add_from_leaf(leaf)

    # -- health ----------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while the loop polls; reports when it last committed."""
        since_poll = time.monotonic() - self._last_poll
        ok = not self._stop.is_set() and since_poll < 30
        return ok, {
            "consuming": since_poll < 30,
            "seconds_since_poll": round(since_poll, 3),
            "last_commit_ms": self.stats.last_commit_ms,
            "transactions": self.stats.transactions,
        }

    # -- main loop -----------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(
        self, *, idle_exit_s: float | None = None, max_events: int | None = None
    ) -> RouterStats:
        """Route until :meth:`stop`, or until idle for ``idle_exit_s``, or ``max_events``."""
        last_activity = time.monotonic()
        try:
            while not self._stop.is_set():
                self._catch_up_consent()
                self._catch_up_audit()
                batches = self._consumer.poll(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_batch
                )
                self._last_poll = time.monotonic()
                if not batches:
                    if idle_exit_s is not None and time.monotonic() - last_activity > idle_exit_s:
                        break
                    continue
                last_activity = time.monotonic()
                self._process(batches)
                if max_events is not None and self.stats.consumed >= max_events:
                    break
        finally:
            self.close()
        return self.stats

    def _process(self, batches: dict[TopicPartition, list[Record]]) -> None:
        producer = self._producer
        started = time.monotonic()
        producer.begin_transaction()
        try:
            routed_all: list[Routed] = []
            leaves: list[dict[str, Any]] = []
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for tp, records in batches.items():
                for r in records:
                    routed = self.core.handle(_inbound(r))
                    for out in routed.outputs:
                        producer.send(out.topic, out.value, key=out.key)
                    leaves.extend(routed.leaves)
                    routed_all.append(routed)
                offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
            for payload in self._audit_encoder(leaves):
                producer.send(self.topics.audit, payload)
            producer.send_offsets_to_transaction(offsets, self._consumer.group_metadata())
            producer.commit_transaction()
        except BaseException:
            self.metrics.txn_aborted.inc()
            log.exception("transaction failed; aborting and stopping (batch will be replayed)")
            try:
                producer.abort_transaction()
            except Exception:  # noqa: BLE001 - already failing; the abort is best effort
                log.exception("abort failed")
            raise
        self.metrics.txn_duration.observe(time.monotonic() - started)
        self.metrics.audit_leaves.inc(len(leaves))
        self._account(routed_all)
        if self._on_batch is not None:
            self._on_batch(routed_all)

    def _account(self, routed_all: list[Routed]) -> None:
        s, m = self.stats, self.metrics
        s.transactions += 1
        s.last_commit_ms = now = self.core.clock.now_ms()
        m.last_commit.set(now / 1000)
        for r in routed_all:
            m.consumed.labels(r.agency or "unknown").inc()
            for sub in r.shared:
                m.shared.labels(sub).inc()
            for sub, reason in r.withheld:
                m.withheld.labels(sub, reason).inc()
            if r.quarantined is not None:
                m.quarantined.labels(r.quarantined).inc()
            if r.duplicate:
                m.duplicates.inc()
            if r.shared and r.reported_at_ms is not None:
                m.latency.observe(max(0.0, (now - r.reported_at_ms) / 1000))
            s.consumed += 1
            s.shared += len(r.shared)
            s.withheld += len(r.withheld)
            s.quarantined += r.quarantined is not None
            s.duplicates += r.duplicate
            if r.agency:
                s.per_agency[r.agency] = s.per_agency.get(r.agency, 0) + 1

    def close(self) -> None:
        if self._health is not None:
            self._health.close()
            self._health = None
        closers = (
            self._consumer.close,
            self._consent.close,
            self._audit.close,
            self._producer.close,
        )
        for closer in closers:
            try:
                closer()
            except Exception:  # noqa: BLE001
                log.exception("close failed")


def _inbound(r: Record) -> Inbound:
    return Inbound(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)


CATCH_UP_DEADLINE_S = 10.0


def _catch_up(consumer: Consumer, what: str) -> Iterator[Record]:
    """Every record up to the (last stable) end offsets at the time of the call.

    Bounded in time: an open transaction of another producer holds the last
    stable offset back, and the loop must not wait for it forever.
    """
    tps = list(consumer.assignment())
    end = consumer.end_offsets(tps)
    deadline = time.monotonic() + CATCH_UP_DEADLINE_S
    while any(consumer.position(tp) < end[tp] for tp in tps):
        if time.monotonic() > deadline:
            log.warning(
                "%s catch-up incomplete after %.0f s; continuing", what, CATCH_UP_DEADLINE_S
            )
            return
        yield from consumer.poll_records(timeout_ms=100)


def _follow_from_start(consumer: Consumer, topic: str) -> bool:
    """Assign every partition of ``topic`` from its beginning, once; False if it is unknown."""
    if consumer.assignment():
        return True
    parts = consumer.partitions_for_topic(topic) or set()
    if not parts:
        return False
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return True
