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
from broker.kafka.exceptions import KafkaError
from broker.kafka.processor import ChangelogProcessor
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
        self._kafka = ChangelogProcessor(
            bootstrap, name=f"loop {instance_id}", group_id=topics.loop_group, pattern=pattern,
            transactional_id=topics.loop_transactional_id(instance_id),
            client_id=f"safeshare-loop-{instance_id}", credentials=credentials,
        )
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
        kafka = self._kafka
        try:
            if kafka.needs_repair:
                kafka.repair()
                self._rebuild(set(self._owned))
            records = kafka.poll(wait_ms)
            self._follow_assignment()
            written = self._turn(records)
        except KafkaError as exc:
            self.stats.aborted += 1
            self.metrics.aborted.inc()
            self.core.drop_leaves()
            self.last_error = str(exc)
            self._stop.wait(kafka.fail(exc))
            return 0
        self.last_error = None
        kafka.succeeded()
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
        self._kafka.write(((o.topic, o.key, o.value, o.partition) for o in out), offsets)
        self.stats.turns += 1
        self.stats.escalations += len(escalations)
        for _, esc in escalations:
            self.metrics.escalations.labels(esc.state.kind, str(esc.tier)).inc()
            log.info("loop: escalated %s tier %d to %s (overdue %d s)",
                     esc.state.clock_id, esc.tier, esc.recipient, esc.overdue_by_ms // 1000)
        return len(out)

    # -- state ---------------------------------------------------------------------
    def _follow_assignment(self) -> None:
        owned = set(self._kafka.partitions(self.topics.clock_starts))
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
        took = self._kafka.replay(tps, lambda r: self.core.restore(r.partition, r.value),
                                  REBUILD_TIMEOUT_S)
        log.info("loop %s: rebuilt partitions %s from the changelog in %.1f s (%d open clocks)",
                 self.instance_id, sorted(partitions), took,
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
        self._kafka.close()
