"""The loop service: clocks started by the router, stopped by acknowledgements,
escalated when they fall due, exactly once.

One consumer group reads the router's clock starts and every subscriber's
acknowledgement topic (all keyed by event id, all with the same partition
count, range-assigned so partition *p* of each goes to one instance). Each
turn of the loop is one Kafka transaction holding the clock changelog
updates, the notices (escalations, referrers' status) and the consumer
offsets: a crash replays the turn, and an escalation is written once or not
at all. State is rebuilt from the changelog whenever partitions are assigned
and after any failed turn, so it never runs ahead of what committed.

Time is the injected clock: tests run a week of deadlines in seconds.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass

from broker.clock import Clock
from broker.codec import Codec
from broker.kafka.consumer import Consumer, catch_up, make_consumer
from broker.kafka.exceptions import KafkaError
from broker.kafka.producer import Producer, make_producer
from broker.kafka.security import Credentials
from broker.kafka.structs import OffsetAndMetadata, Record, TopicPartition
from broker.loop.core import LoopCore, Out, Source
from broker.loop.metrics import LoopMetrics
from broker.loop.rules import ClockPolicy
from broker.topics import Topics

log = logging.getLogger(__name__)

#: The longest a turn waits for input before it looks at the clock again, so
#: an escalation leaves well within a second of its deadline.
MAX_WAIT_MS = 200
REBUILD_TIMEOUT_S = 60.0
GAUGE_EVERY_S = 5.0
#: How long a turn waits for the broker to take its writes, commit or abort
#: before it gives up and repairs: a broker outage must not stall the loop.
WRITE_TIMEOUT_S = 10.0


@dataclass
class LoopStats:
    turns: int = 0
    acks: int = 0
    starts: int = 0
    escalations: int = 0
    aborted: int = 0
    rebuilds: int = 0


class LoopService:
    """Runs :class:`LoopCore` against Kafka, one transaction per turn."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topics: Topics,
        codec: Codec,
        policy: ClockPolicy,
        clock: Clock,
        instance_id: str = "loop-0",
        credentials: Credentials | None = None,
        referrer_sees: frozenset[str] | None = None,
        metrics: LoopMetrics | None = None,
    ) -> None:
        self.topics = topics
        self.clock = clock
        self.instance_id = instance_id
        self.stats = LoopStats()
        self.metrics = metrics or LoopMetrics()
        self._gauged_at = 0.0
        self.last_error: str | None = None
        kw = {} if referrer_sees is None else {"referrer_sees": referrer_sees}
        self.core = LoopCore(codec=codec, topics=topics, policy=policy, clock=clock, **kw)
        pattern = f"^({re.escape(topics.clock_starts)}|{topics.ack_pattern[1:-1]})$"
        self._consumer: Consumer = make_consumer(
            bootstrap, group_id=topics.loop_group, pattern=pattern,
            isolation_level="read_committed", assignors=("range",),
            client_id=f"safeshare-loop-{instance_id}", credentials=credentials,
        )
        self._changelog: Consumer = make_consumer(
            bootstrap, group_id=None, topics=None, isolation_level="read_committed",
            credentials=credentials,
        )
        self._bootstrap = bootstrap
        self._credentials = credentials
        self._producer: Producer = self._new_producer()
        self._producer_broken = False
        self._needs_repair = False
        self._in_transaction = False
        self._failures = 0
        self._owned: set[int] = set()
        self._stop = threading.Event()

    # -- running ------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self.run_once()

    def run_once(self, wait_ms: int | None = None) -> int:
        """One turn: read, decide, escalate, commit. Returns records written.

        A Kafka failure aborts the turn; the next turn first repairs (a new
        producer if the old one cannot abort, the committed offsets, state from
        the changelog) and backs off while the broker stays away.
        """
        now = self.clock.now_ms()
        if wait_ms is None:
            nxt = self.core.next_fire_ms()
            wait_ms = MAX_WAIT_MS if nxt is None else max(0, min(MAX_WAIT_MS, nxt - now))
        try:
            if self._needs_repair:
                self._repair()
            records = self._consumer.poll_records(timeout_ms=wait_ms)
            self._follow_assignment()
            written = self._turn(records)
        except KafkaError as exc:
            self._abandon(exc)
            self._stop.wait(min(5.0, 0.2 * 2 ** min(self._failures, 5)))
            return 0
        self.last_error = None
        self._failures = 0
        if time.monotonic() - self._gauged_at > GAUGE_EVERY_S:
            self._gauged_at = time.monotonic()
            self.metrics.clocks(list(self.core.open_clocks()), self.clock.now_ms())
        return written

    def _turn(self, records: list[Record]) -> int:
        # Starts before acknowledgements: an acknowledgement read in the same
        # poll as the start it meets must find its clock.
        ordered = sorted(records, key=lambda r: r.topic != self.topics.clock_starts)
        out: list[Out] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in ordered:
            src = Source(r.topic, r.partition, r.offset)
            if r.partition not in self._owned:
                continue  # a record polled just before its partition moved
            if r.topic == self.topics.clock_starts:
                out += self.core.on_start(src, r.value)
                self.stats.starts += 1
            else:
                out += self.core.on_ack(src, r.value)
                self.stats.acks += 1
                self.metrics.acks.inc()
            offsets[TopicPartition(r.topic, r.partition)] = OffsetAndMetadata(r.offset + 1)
        escalations = self.core.tick(self.clock.now_ms())
        for p, esc in escalations:
            out += self.core.escalation_records(p, esc)
        out += self.core.take_leaves()
        if not out and not offsets:
            return 0
        producer = self._producer
        producer.begin_transaction()
        self._in_transaction = True
        for o in out:
            producer.send(o.topic, value=o.value, key=o.key, partition=o.partition)
        if offsets:
            producer.send_offsets_to_transaction(offsets, self._consumer.group_metadata())
        producer.flush(WRITE_TIMEOUT_S)
        producer.commit_transaction(WRITE_TIMEOUT_S)
        self._in_transaction = False
        self.stats.turns += 1
        self.stats.escalations += len(escalations)
        for _, esc in escalations:
            self.metrics.escalations.labels(esc.state.kind, str(esc.tier)).inc()
            log.info("loop: escalated %s tier %d to %s (overdue %d s)",
                     esc.state.clock_id, esc.tier, esc.recipient, esc.overdue_by_ms // 1000)
        return len(out)

    def _abandon(self, exc: BaseException) -> None:
        """A failed turn: abort it; the next turn repairs before it reads."""
        self.stats.aborted += 1
        self._failures += 1
        self.last_error = str(exc)
        self.metrics.aborted.inc()
        self.core.drop_leaves()
        log.warning("loop %s: turn failed (%s); aborting and replaying from the last commit",
                    self.instance_id, exc)
        if self._in_transaction:
            self._in_transaction = False
            try:
                self._producer.abort_transaction(WRITE_TIMEOUT_S)
            except KafkaError as abort_exc:
                log.warning("loop %s: abort failed (%s); a new producer will fence it",
                            self.instance_id, abort_exc)
                self._producer_broken = True
        self._needs_repair = True

    def _repair(self) -> None:
        if self._producer_broken:
            _close_quietly(self._producer)
            self._producer = self._new_producer()  # init_transactions fences the old one
            self._producer_broken = False
        self._consumer.rewind_to_committed()
        self._rebuild(set(self._owned))
        self._needs_repair = False
        log.info("loop %s: repaired after %d failed turn(s)", self.instance_id, self._failures)

    def _new_producer(self) -> Producer:
        producer = make_producer(
            self._bootstrap, transactional_id=self.topics.loop_transactional_id(self.instance_id),
            client_id=f"safeshare-loop-{self.instance_id}", linger_ms=1,
            credentials=self._credentials,
        )
        try:
            producer.init_transactions()
        except BaseException:
            _close_quietly(producer)
            raise
        return producer

    # -- state ---------------------------------------------------------------------
    def _follow_assignment(self) -> None:
        owned = {tp.partition for tp in self._consumer.assignment()
                 if tp.topic == self.topics.clock_starts}
        if owned == self._owned:
            return
        for p in self._owned - owned:
            self.core.reset(p)
        gained = owned - self._owned
        self._owned = owned
        # A partition taken over is read from its committed offset, and the
        # changelog holds exactly what those offsets committed with.
        self._rebuild(gained)

    def _rebuild(self, partitions: set[int]) -> None:
        """State of ``partitions`` from the changelog alone (read_committed)."""
        if not partitions:
            return
        self.stats.rebuilds += 1
        tps = [TopicPartition(self.topics.clocks, p) for p in sorted(partitions)]
        for p in partitions:
            self.core.reset(p)
        self._changelog.assign(tps)
        self._changelog.seek_to_beginning(*tps)
        started = time.monotonic()
        behind = catch_up(self._changelog, tps,
                          lambda r: self.core.restore(r.partition, r.value),
                          timeout_s=REBUILD_TIMEOUT_S)
        if behind:
            raise KafkaError(f"clock changelog not read to its end in time: {behind}")
        log.info("loop %s: rebuilt partitions %s from the changelog in %.1f s (%d open clocks)",
                 self.instance_id, sorted(partitions), time.monotonic() - started,
                 sum(1 for _ in self.core.open_clocks()))

    def health(self) -> tuple[bool, dict[str, object]]:
        """For /healthz: ready once it owns partitions and its last turn committed."""
        ok = self.last_error is None
        return ok, {"partitions": sorted(self._owned), "turns": self.stats.turns,
                    "escalations": self.stats.escalations, "aborted": self.stats.aborted,
                    "last_error": self.last_error}

    # -- reading -------------------------------------------------------------------
    def open_by_kind(self) -> Counter[str]:
        return Counter(c.kind for c in self.core.open_clocks())

    def overdue_by_kind(self, now_ms: int) -> Counter[str]:
        return Counter(c.kind for c in self.core.open_clocks() if c.due_ms <= now_ms)

    def close(self) -> None:
        for c in (self._consumer, self._changelog, self._producer):
            _close_quietly(c)


def _close_quietly(client: Consumer | Producer) -> None:
    try:
        client.close()
    except Exception as exc:  # closing must not hide the reason we stopped
        log.debug("loop: close failed: %s", exc)
