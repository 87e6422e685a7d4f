"""The pattern detector as a service: its feed in, alerts out, exactly once.

The project's own transactional state (as broker/loop): one consumer group
reads the detector's feed (read_committed); each turn is one Kafka
transaction holding the state changelog records, the alert events on the
detector's ingest topic, and the consumer offsets. A crash replays the turn:
an alert is published once or not at all, and a replayed alert version has the
same event id. State is rebuilt from the changelog on assignment and after
any failed turn, so it never runs ahead of what committed.

Shared places and people join children across every feed partition, so the
state is one whole: ONE active instance holds every partition (a second
instance is a standby that takes over through the group when the first
dies), and the changelog has one partition. docs/DESIGN.md "Patterns".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.codec import Codec
from broker.kafka.configuration import CHANGELOG_CONFIG, TopicSpec
from broker.kafka.consumer import Consumer, catch_up, make_consumer
from broker.kafka.exceptions import KafkaError
from broker.kafka.producer import Producer, make_producer
from broker.kafka.security import Credentials
from broker.kafka.structs import OffsetAndMetadata, Record, TopicPartition
from broker.patterns.core import AGENCY, PatternsCore
from broker.patterns.detectors import Threshold
from broker.topics import Topics

log = logging.getLogger(__name__)

MAX_WAIT_MS = 100
REBUILD_TIMEOUT_S = 120.0


def state_topic(topics: Topics) -> str:
    return f"{topics.namespace}.patterns.state"


def topic_specs(topics: Topics) -> list[TopicSpec]:
    """The detector's own topics (its feed and ingest topics are the router's)."""
    return [TopicSpec(state_topic(topics), 1, CHANGELOG_CONFIG)]


@dataclass
class PatternStats:
    turns: int = 0
    records: int = 0
    alerts: int = 0
    aborted: int = 0
    rebuilds: int = 0


class PatternService:
    """Runs :class:`PatternsCore` against Kafka, one transaction per turn."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topics: Topics,
        codec: Codec,
        thresholds: dict[str, Threshold],
        now_ms: Callable[[], int] | None = None,
        instance_id: str = "patterns-0",
        credentials: Credentials | None = None,
    ) -> None:
        self.topics = topics
        self.instance_id = instance_id
        self.stats = PatternStats()
        self.last_error: str | None = None
        self.feed = topics.feed(AGENCY)
        self.state = state_topic(topics)
        self.core = PatternsCore(
            codec=codec, ingest_topic=topics.ingest(AGENCY), state_topic=self.state,
            thresholds=thresholds, now_ms=now_ms or (lambda: time.time_ns() // 1_000_000),
        )
        self._consumer: Consumer = make_consumer(
            bootstrap, group_id=f"{topics.namespace}.patterns", topics=[self.feed],
            isolation_level="read_committed", assignors=("range",),
            client_id=f"safeshare-patterns-{instance_id}", credentials=credentials,
        )
        self._changelog: Consumer = make_consumer(
            bootstrap, group_id=None, topics=None, isolation_level="read_committed",
            credentials=credentials,
        )
        self._producer: Producer = make_producer(
            bootstrap, transactional_id=f"{topics.namespace}.patterns.{instance_id}",
            client_id=f"safeshare-patterns-{instance_id}", linger_ms=1, credentials=credentials,
        )
        self._producer.init_transactions()
        self._owned: frozenset[int] = frozenset()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self.run_once()

    def run_once(self, wait_ms: int = MAX_WAIT_MS) -> int:
        """One turn: read, detect, publish, commit. Returns records written."""
        records = self._consumer.poll_records(timeout_ms=wait_ms)
        try:
            self._follow_assignment()
            written = self._turn(records)
            self.last_error = None
            return written
        except KafkaError as exc:
            self.last_error = str(exc)
            self._abandon(exc)
            return 0

    def _turn(self, records: list[Record]) -> int:
        out = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in records:
            if r.partition not in self._owned:
                continue
            out += self.core.on_feed(r.value)
            offsets[TopicPartition(r.topic, r.partition)] = OffsetAndMetadata(r.offset + 1)
        if not offsets:
            return 0
        out += self.core.end_turn()
        producer = self._producer
        producer.begin_transaction()
        alerts = 0
        for o in out:
            if o.topic == self.state:
                producer.send(o.topic, value=o.value, key=o.key, partition=0)
            else:
                alerts += 1
                producer.send(o.topic, value=o.value, key=o.key)
        producer.send_offsets_to_transaction(offsets, self._consumer.group_metadata())
        producer.flush()
        producer.commit_transaction()
        self.stats.turns += 1
        self.stats.records += len(records)
        self.stats.alerts += alerts
        if alerts:
            log.info("patterns %s: published %d alert version(s)", self.instance_id, alerts)
        return len(out)

    def _abandon(self, exc: BaseException) -> None:
        self.stats.aborted += 1
        log.warning("patterns %s: turn failed (%s); aborting and replaying from the last commit",
                    self.instance_id, exc)
        try:
            self._producer.abort_transaction()
        except KafkaError as abort_exc:
            log.warning("patterns %s: abort failed (%s)", self.instance_id, abort_exc)
        self._consumer.rewind_to_committed()
        self._rebuild()

    def _follow_assignment(self) -> None:
        owned = frozenset(tp.partition for tp in self._consumer.assignment()
                          if tp.topic == self.feed)
        if owned == self._owned:
            return
        self._owned = owned
        if owned:
            self._rebuild()

    def _rebuild(self) -> None:
        """All state from the changelog (read_committed): it is one whole."""
        self.stats.rebuilds += 1
        self.core.reset()
        tp = TopicPartition(self.state, 0)
        self._changelog.assign([tp])
        self._changelog.seek_to_beginning(tp)
        started = time.monotonic()
        behind = catch_up(self._changelog, [tp], lambda r: self.core.restore(r.key, r.value),
                          timeout_s=REBUILD_TIMEOUT_S)
        if behind:
            raise KafkaError(f"patterns changelog not read to its end in time: {behind}")
        log.info("patterns %s: rebuilt from the changelog in %.1f s (%d observations, %d alerts)",
                 self.instance_id, time.monotonic() - started, self.core.detectors.size(),
                 len(self.core.detectors.alerts))

    def health(self) -> tuple[bool, dict[str, object]]:
        return self.last_error is None, {"partitions": sorted(self._owned),
                                         "turns": self.stats.turns, "alerts": self.stats.alerts,
                                         "last_error": self.last_error}

    def close(self) -> None:
        for c in (self._consumer, self._changelog, self._producer):
            try:
                c.close()
            except Exception as exc:  # closing must not hide the reason we stopped
                log.debug("patterns: close failed: %s", exc)
