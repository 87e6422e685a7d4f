"""The pattern detector as a service: its feed in, alerts out, exactly once.

The project's own transactional state (broker/kafka/processor.py, shared with
broker/loop): one consumer group reads the detector's feed (read_committed);
each turn is one Kafka transaction holding the state changelog records, the
alert events on the detector's ingest topic, and the consumer offsets. A crash replays the turn:
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
from broker.kafka.exceptions import KafkaError
from broker.kafka.processor import ChangelogProcessor
from broker.kafka.security import Credentials
from broker.kafka.structs import OffsetAndMetadata, Record, TopicPartition
from broker.patterns.core import AGENCY, PatternsCore
from broker.patterns.detectors import Threshold
from broker.signing.events import AgencySigner
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
        signer: AgencySigner | None = None,
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
            signer=signer,
        )
        self._kafka = ChangelogProcessor(
            bootstrap, name=f"patterns {instance_id}", group_id=f"{topics.namespace}.patterns",
            topics=[self.feed], transactional_id=f"{topics.namespace}.patterns.{instance_id}",
            client_id=f"safeshare-patterns-{instance_id}", credentials=credentials,
            # Static member: a detector restarted after a crash (same instance id)
            # resumes at once; as a dynamic member it waited ~90 s for the group
            # to drop its killed predecessors (tests/test_patterns_faults.py).
            group_instance_id=instance_id,
        )
        self._owned: frozenset[int] = frozenset()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self.run_once()

    def run_once(self, wait_ms: int = MAX_WAIT_MS) -> int:
        """One turn: read, detect, publish, commit. Returns records written.

        A Kafka failure aborts the turn; the next turn repairs (a new producer if
        the old one cannot abort, the committed offsets, state from the changelog).
        """
        kafka = self._kafka
        try:
            if kafka.needs_repair:
                kafka.repair()
                self._rebuild()
            records = kafka.poll(wait_ms)
            self._follow_assignment()
            written = self._turn(records)
        except KafkaError as exc:
            self.stats.aborted += 1
            self.last_error = str(exc)
            self._stop.wait(kafka.fail(exc))
            return 0
        self.last_error = None
        kafka.succeeded()
        return written

    def _turn(self, records: list[Record]) -> int:
        out = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in records:
            if r.partition not in self._owned:
                continue
            out += self.core.on_feed(r.value)
            offsets[TopicPartition(r.topic, r.partition)] = OffsetAndMetadata(r.offset + 1)
        if self._kafka.caught_up(self.feed):
            # Overdue interviews only once every feed partition is read to its end: an
            # interview still unread in a partition behind the others must count.
            out += self.core.end_turn()
        if not out and not offsets:
            return 0
        alerts = sum(1 for o in out if o.topic != self.state)
        # The changelog has one partition; alerts go to the partition of their child.
        self._kafka.write(((o.topic, o.key, o.value, 0 if o.topic == self.state else None)
                           for o in out), offsets)
        self.stats.turns += 1
        self.stats.records += len(records)
        self.stats.alerts += alerts
        if alerts:
            log.info("patterns %s: published %d alert version(s)", self.instance_id, alerts)
        return len(out)

    def _follow_assignment(self) -> None:
        owned = self._kafka.partitions(self.feed)
        if owned == self._owned:
            return
        self._owned = owned
        if owned:
            self._rebuild()

    def _rebuild(self) -> None:
        """All state from the changelog (read_committed): it is one whole."""
        self.stats.rebuilds += 1
        self.core.reset()
        took = self._kafka.replay([TopicPartition(self.state, 0)],
                                  lambda r: self.core.restore(r.key, r.value), REBUILD_TIMEOUT_S)
        log.info("patterns %s: rebuilt from the changelog in %.1f s (%d observations, %d alerts)",
                 self.instance_id, took, self.core.detectors.size(),
                 len(self.core.detectors.alerts))

    def caught_up(self) -> bool:
        """Whether it owns its feed and has read every partition to its end."""
        return bool(self._owned) and self._kafka.caught_up(self.feed)

    def health(self) -> tuple[bool, dict[str, object]]:
        return self.last_error is None, {"partitions": sorted(self._owned),
                                         "turns": self.stats.turns, "alerts": self.stats.alerts,
                                         "last_error": self.last_error}

    def close(self) -> None:
        self._kafka.close()
