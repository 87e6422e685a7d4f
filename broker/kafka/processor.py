"""A changelog-backed transactional processor: the Kafka half of an exactly-once service.

One consumer group reads the input (read_committed); each turn's output (the
service's changelog records and whatever it publishes) and the consumer
offsets go in one Kafka transaction, so a crash replays the turn and its
output is written once or not at all. State lives in a changelog topic and is
read back from its beginning (:meth:`replay`) whenever partitions are assigned
and after any failed turn, so it never runs ahead of what committed.

A failed turn (:meth:`fail`) is aborted; the next turn first repairs
(:meth:`repair`: a new producer, which fences the old, if the old one could
not abort; the consumer back to its committed offsets) and the service then
rebuilds its state. Used by the loop (broker/loop/service.py) and the pattern
detector (broker/patterns/service.py); what a turn decides is theirs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from broker.kafka.consumer import Consumer, catch_up, make_consumer
from broker.kafka.exceptions import KafkaError
from broker.kafka.producer import Producer, make_producer
from broker.kafka.security import Credentials
from broker.kafka.structs import OffsetAndMetadata, Record, TopicPartition

log = logging.getLogger(__name__)

#: How long a turn waits for the broker to take its writes, commit or abort
#: before it gives up and repairs: a broker outage must not stall the service.
WRITE_TIMEOUT_S = 10.0

#: One output record: (topic, key, value, partition or None for the key's).
Write = tuple[str, bytes | None, bytes | None, int | None]


class ChangelogProcessor:
    """Input consumer, changelog reader and transactional producer of one instance."""

    def __init__(
        self,
        bootstrap: str,
        *,
        name: str,
        group_id: str,
        transactional_id: str,
        client_id: str,
        topics: Sequence[str] | None = None,
        pattern: str | None = None,
        credentials: Credentials | None = None,
        group_instance_id: str | None = None,
    ) -> None:
        """``group_instance_id``: a static member (KIP-345, see make_consumer): an
        instance restarted after a crash takes its partitions back at once, instead
        of waiting for the group to give up on its dead predecessor."""
        self.name = name
        self.last_error: str | None = None
        self.aborted = 0
        self.failures = 0  # failed turns in a row
        self._bootstrap = bootstrap
        self._credentials = credentials
        self._transactional_id = transactional_id
        self._client_id = client_id
        self.consumer: Consumer = make_consumer(
            bootstrap, group_id=group_id, topics=list(topics) if topics else None,
            pattern=pattern, isolation_level="read_committed", assignors=("range",),
            client_id=client_id, credentials=credentials, group_instance_id=group_instance_id,
        )
        self._changelog: Consumer = make_consumer(
            bootstrap, group_id=None, topics=None, isolation_level="read_committed",
            credentials=credentials,
        )
        self._producer: Producer = self._new_producer()
        self._producer_broken = False
        self._in_transaction = False
        self.needs_repair = False

    # -- a turn ---------------------------------------------------------------------
    def poll(self, wait_ms: int) -> list[Record]:
        return self.consumer.poll_records(timeout_ms=wait_ms)

    def partitions(self, topic: str) -> frozenset[int]:
        """The partitions of ``topic`` this instance is assigned now."""
        return frozenset(tp.partition for tp in self.consumer.assignment() if tp.topic == topic)

    def caught_up(self, topic: str) -> bool:
        """Whether every assigned partition of ``topic`` has been read to its end as last
        fetched (a partition not fetched yet, or with a transaction still open, is not)."""
        raw = self.consumer.raw
        parts = [tp for tp in raw.assignment() if tp.topic == topic]
        try:
            for tp in parts:
                high = raw.highwater(tp)
                if high is None or raw.position(tp, timeout_ms=0) < high:
                    return False
        except Exception:  # noqa: BLE001 - a position not known yet is not caught up
            return False
        return bool(parts)

    def write(self, out: Iterable[Write],
              offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """One transaction: every record of ``out`` and the consumer ``offsets``."""
        producer = self._producer
        producer.begin_transaction()
        self._in_transaction = True
        for topic, key, value, partition in out:
            producer.send(topic, value=value, key=key, partition=partition)
        if offsets:
            producer.send_offsets_to_transaction(dict(offsets), self.consumer.group_metadata())
        producer.flush(WRITE_TIMEOUT_S)
        producer.commit_transaction(WRITE_TIMEOUT_S)
        self._in_transaction = False

    def succeeded(self) -> None:
        self.last_error = None
        self.failures = 0

    def fail(self, exc: BaseException) -> float:
        """A failed turn: abort it; the next turn repairs. Returns how long to back off."""
        self.aborted += 1
        self.failures += 1
        self.last_error = str(exc)
        log.warning("%s: turn failed (%s); aborting and replaying from the last commit",
                    self.name, exc)
        if self._in_transaction:
            self._in_transaction = False
            try:
                self._producer.abort_transaction(WRITE_TIMEOUT_S)
            except KafkaError as abort_exc:
                log.warning("%s: abort failed (%s); a new producer will fence it",
                            self.name, abort_exc)
                self._producer_broken = True
        self.needs_repair = True
        return float(min(5.0, 0.2 * 2 ** min(self.failures, 5)))

    def repair(self) -> None:
        """Before the turn after a failure: a new producer if needed, offsets rewound.

        The caller rebuilds its state from the changelog next.
        """
        if self._producer_broken:
            _close_quietly(self._producer, self.name)
            self._producer = self._new_producer()  # init_transactions fences the old one
            self._producer_broken = False
        self.consumer.rewind_to_committed()
        self.needs_repair = False
        log.info("%s: repaired after %d failed turn(s)", self.name, self.failures)

    # -- state ----------------------------------------------------------------------
    def replay(self, tps: Sequence[TopicPartition], apply: Callable[[Record], None],
               timeout_s: float) -> float:
        """Every committed changelog record of ``tps`` from the beginning, in order.

        Returns the seconds it took; raises :class:`KafkaError` if the end was not reached.
        """
        self._changelog.assign(tps)
        self._changelog.seek_to_beginning(*tps)
        started = time.monotonic()
        behind = catch_up(self._changelog, list(tps), apply, timeout_s=timeout_s)
        if behind:
            raise KafkaError(f"{self.name}: changelog not read to its end in time: {behind}")
        return time.monotonic() - started

    def close(self) -> None:
        for c in (self.consumer, self._changelog, self._producer):
            _close_quietly(c, self.name)

    def _new_producer(self) -> Producer:
        producer = make_producer(
            self._bootstrap, transactional_id=self._transactional_id,
            client_id=self._client_id, linger_ms=1, credentials=self._credentials,
        )
        try:
            producer.init_transactions()
        except BaseException:
            _close_quietly(producer, self.name)
            raise
        return producer


def _close_quietly(client: Consumer | Producer, name: str) -> None:
    try:
        client.close()
    except Exception as exc:  # closing must not hide the reason we stopped
        log.debug("%s: close failed: %s", name, exc)
