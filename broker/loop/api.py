"""The loop's public Python API: acknowledge a share, read the clocks.

A subscriber acknowledges what it received::

    from broker.api import Acknowledger
    with Acknowledger(bootstrap="localhost:9092", subscriber="torbay-mash") as ack:
        ack.acknowledge(event_id, "TRIAGE", actor="sw-1042", rag="RED")

Anyone entitled to read the clock changelog sees what is due and overdue::

    from broker.api import DeadlineBook
    book = DeadlineBook.read(bootstrap="localhost:9092")
    for clock in book.overdue(now_ms): ...

The ``safeshare ack`` and ``safeshare deadlines`` commands are built on these.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from broker.clock import Clock, SystemClock
from broker.codec import Codec
from broker.codec.exceptions import EncodingError
from broker.kafka.consumer import catch_up, make_consumer
from broker.kafka.producer import make_producer
from broker.kafka.security import Credentials
from broker.kafka.structs import Closeable, TopicPartition
from broker.loop.clocks import ClockState, Status
from broker.loop.core import ACKNOWLEDGEMENT, CLOCK_RECORD, EARLY_ACK, ack_problem, state_of
from broker.topics import DEFAULT, Topics


@dataclass(frozen=True)
class AckReceipt:
    ack_id: str
    topic: str
    partition: int
    offset: int


class Acknowledger(Closeable):
    """Writes one subscriber's acknowledgements to its own topic."""

    def __init__(
        self,
        *,
        bootstrap: str,
        subscriber: str,
        topics: Topics = DEFAULT,
        codec: Codec | None = None,
        clock: Clock | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.topic = topics.acks(subscriber)
        self.codec = codec or Codec.default()
        self.clock = clock or SystemClock()
        self._producer = make_producer(bootstrap, credentials=credentials)

    def acknowledge(
        self,
        event_id: str,
        kind: str,
        *,
        actor: str,
        rag: str | None = None,
        outcome: str | None = None,
        note: str | None = None,
        at_ms: int | None = None,
        ack_id: str | None = None,
    ) -> AckReceipt:
        """Validate and write one acknowledgement; raises EncodingError naming the field."""
        record: dict[str, Any] = {
            "ack_id": ack_id or str(uuid.uuid4()),
            "event_id": event_id,
            "subscriber": self.subscriber,
            "actor": actor,
            "kind": kind,
            "rag": rag,
            "outcome": outcome,
            "note": note,
            "acknowledged_at": self.clock.now_ms() if at_ms is None else at_ms,
        }
        problem = ack_problem(record) if kind in {"TRIAGE", "DECISION", "OUTCOME"} else None
        if problem is not None:
            raise EncodingError(problem)
        data = self.codec.encode(record, ACKNOWLEDGEMENT)
        meta = self._producer.send(self.topic, data, key=event_id.encode()).get()
        return AckReceipt(record["ack_id"], meta.topic, meta.partition, meta.offset)

    @property
    def broken(self) -> bool:
        """The producer will write nothing more after a record the broker refused
        for good (:attr:`broker.kafka.producer.Producer.broken`): make a new Acknowledger."""
        return self._producer.broken

    def close(self) -> None:
        self._producer.close()


@dataclass
class DeadlineBook:
    """Every clock in the changelog: its current state and its history."""

    history: dict[str, list[ClockState]] = field(default_factory=dict)

    @classmethod
    def read(
        cls,
        *,
        bootstrap: str,
        topics: Topics = DEFAULT,
        codec: Codec | None = None,
        credentials: Credentials | None = None,
        timeout_s: float = 30.0,
    ) -> DeadlineBook:
        codec = codec or Codec.default()
        book = cls()
        consumer = make_consumer(bootstrap, group_id=None, topics=None, credentials=credentials)
        try:
            parts = consumer.partitions_for_topic(topics.clocks) or set()
            tps = [TopicPartition(topics.clocks, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            catch_up(consumer, tps, lambda r: book.add(codec.decode(r.value, CLOCK_RECORD))
                     if r.value else None, timeout_s=timeout_s)
        finally:
            consumer.close()
        return book

    def add(self, record: dict[str, Any]) -> None:
        state, _ = state_of(record)
        if state.kind.startswith(EARLY_ACK):
            return  # an acknowledgement waiting for its clock, not a clock
        self.history.setdefault(state.clock_id, []).append(state)

    def current(self) -> Iterable[ClockState]:
        return (h[-1] for h in self.history.values())

    def open(self) -> list[ClockState]:
        return sorted((c for c in self.current() if c.status is Status.OPEN),
                      key=lambda c: c.due_ms)

    def due(self, now_ms: int, within_ms: int) -> list[ClockState]:
        """Open clocks falling due in the next ``within_ms`` (not yet overdue)."""
        return [c for c in self.open() if now_ms < c.due_ms <= now_ms + within_ms]

    def overdue(self, now_ms: int) -> list[ClockState]:
        return [c for c in self.open() if c.due_ms <= now_ms]

    def for_event(self, event_id: str) -> list[list[ClockState]]:
        return [h for h in self.history.values() if h[-1].event_id == event_id]
