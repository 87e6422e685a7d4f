"""The consumer: manual commits, ``read_committed``, our errors and types.

kafka-python 3.0.12 against Kafka 4.1 (checked by tests/test_kafka_harness.py;
pitfalls marked !):

* ! After ``abort_transaction`` the consumer's in-memory position is still past
  the records of the aborted batch: without seeking back to the committed
  offsets (:meth:`Consumer.rewind_to_committed`) they are silently skipped.
* ! A pattern subscription only notices new topics at the next metadata refresh
  (``metadata_max_age_ms``, 5 min by default): :func:`make_consumer` lowers it to
  5 s when a pattern is given, so a newly onboarded agency is picked up.
* ! kafka-python 3.0.12 can lose a rebalance's assignment when ``poll`` times
  out mid-rejoin (see :func:`_kafka_python.patch_lost_rejoin`); importing this module
  patches it. Symptom: a group consumer that never receives records, with
  "No partition metadata for topic" or "Updated partition assignment: []"
  as its last word.
* ! kafka-python 3.0.12 keeps a partition's position when an eager rebalance
  assigns it to the same member again, even if another member routed it
  meanwhile (see :func:`_kafka_python.patch_eager_positions`); importing this
  module patches it.
* ! With a pattern subscription every ``poll`` first waits for a metadata
  refresh; a poll timeout shorter than that round trip means the consumer
  never rejoins (Consumer.poll enforces ``MIN_PATTERN_POLL_MS``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import kafka
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from broker.kafka import _kafka_python
from broker.kafka.configuration import CLIENT_METRICS, DEFAULT_TIMEOUT_S, _construct
from broker.kafka.exceptions import KafkaError, translated
from broker.kafka.security import Credentials, resolve
from broker.kafka.structs import (
    Closeable,
    GroupMetadata,
    OffsetAndMetadata,
    Record,
    TopicPartition,
    _kom,
    _ktp,
    _record,
)

MIN_PATTERN_POLL_MS = 100


_kafka_python.patch_lost_rejoin()
_kafka_python.patch_eager_positions()


class Consumer(Closeable):
    """A kafka-python consumer with manual commits, our errors and our types."""

    def __init__(self, raw: Any, *, group_id: str | None) -> None:
        self._raw = raw
        self.group_id = group_id
        self._pattern = False

    @property
    def raw(self) -> Any:
        """The kafka-python KafkaConsumer (escape hatch; prefer the methods here)."""
        return self._raw

    def subscribe(
        self, topics: Sequence[str] | None = None, *, pattern: str | None = None
    ) -> None:
        with translated("subscribe"):
            if pattern is not None:
                self._raw.subscribe(pattern=pattern)
            else:
                self._raw.subscribe(topics=list(topics or ()))
        self._pattern = pattern is not None

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        with translated("assign"):
            self._raw.assign([_ktp(tp) for tp in partitions])

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._raw.assignment()}

    def poll(
        self, timeout_ms: int = 1000, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        """Records fetched in one poll, per partition, in offset order (as kafka-python).

        With a pattern subscription the timeout is at least
        :data:`MIN_PATTERN_POLL_MS`: kafka-python refreshes metadata inside
        every such poll and gives up when the timeout expires first, so with
        tiny timeouts the consumer never rejoins and never sees new topics.
        """
        if self._pattern:
            timeout_ms = max(timeout_ms, MIN_PATTERN_POLL_MS)
        with translated("poll"):
            batches = self._raw.poll(timeout_ms=timeout_ms, max_records=max_records)
        if not batches:
            self._raise_if_unauthorized()
        return {
            TopicPartition(tp.topic, tp.partition): [_record(m) for m in msgs]
            for tp, msgs in batches.items()
            if msgs
        }

    def _raise_if_unauthorized(self) -> None:
        """Raise if the broker refused us one of our assigned topics.

        A consumer without a group (``assign``) whose topic the broker's ACLs
        hide polls nothing, forever (:func:`_kafka_python.unauthorized_topics`);
        the metadata it received says so: make it an error.
        """
        refused = _kafka_python.unauthorized_topics(self._raw)
        if not refused:
            return
        mine = {tp.topic for tp in self._raw.assignment()}
        mine |= set(self._raw.subscription() or ())
        denied = sorted(mine & refused)
        if denied:
            raise KafkaError(
                f"poll: TopicAuthorizationFailedError: not authorized to read {denied}"
            )

    def poll_records(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        """Like :meth:`poll`, flattened into one list."""
        return [r for recs in self.poll(timeout_ms, max_records).values() for r in recs]

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """Partition ids of ``topic`` from cluster metadata, or None if unknown."""
        with translated("partitions_for_topic"):
            parts = self._raw.partitions_for_topic(topic)
        return None if parts is None else {int(p) for p in parts}

    def collect(
        self, count: int, *, timeout_s: float = DEFAULT_TIMEOUT_S, poll_ms: int = 200
    ) -> list[Record]:
        """Poll until ``count`` records arrived or ``timeout_s`` passed; return what came."""
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            out.extend(self.poll_records(timeout_ms=poll_ms))
        return out

    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata] | None = None) -> None:
        """Commit ``offsets`` (default: the current positions) synchronously."""
        with translated("commit"):
            if offsets is None:
                self._raw.commit()
            else:
                self._raw.commit({_ktp(tp): _kom(om) for tp, om in offsets.items()})

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for ``tp`` (next to read), or None."""
        with translated("committed"):
            off = self._raw.committed(_ktp(tp))
        return None if off is None else int(off)

    def position(self, tp: TopicPartition) -> int:
        with translated("position"):
            return int(self._raw.position(_ktp(tp)))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        with translated("seek"):
            self._raw.seek(_ktp(tp), offset)

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        with translated("seek_to_beginning"):
            self._raw.seek_to_beginning(*[_ktp(tp) for tp in tps])

    def rewind_to_committed(self) -> None:
        """Move every assigned partition back to its committed offset (or the start).

        Needed after an aborted transaction: the consumer's position already
        moved past the batch that was not committed.
        """
        for tp in self.assignment():
            off = self.committed(tp)
            if off is None:
                self.seek_to_beginning(tp)
            else:
                self.seek(tp, off)

    def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        with translated("end_offsets"):
            res = self._raw.end_offsets([_ktp(tp) for tp in tps])
        return {TopicPartition(tp.topic, tp.partition): int(off) for tp, off in res.items()}

    def group_metadata(self) -> GroupMetadata:
        """Snapshot for :meth:`Producer.send_offsets_to_transaction` (KIP-447 fencing)."""
        return GroupMetadata(self._raw.group_metadata())

    def close(self, timeout_s: float | None = None) -> None:
        """Leave the group without committing (commits are always explicit here);
        ``timeout_s`` bounds the wait for the broker (default kafka-python's
        request timeout)."""
        with translated("close consumer"):
            self._raw.close(
                autocommit=False, timeout_ms=None if timeout_s is None else int(timeout_s * 1000)
            )


#: Partition assignment strategies by their protocol name. ``range`` (kafka-python's
#: first choice) assigns each topic's partitions separately, always starting from
#: the same member: with many topics of few partitions (one ingest topic per
#: agency), members beyond a topic's partition count get nothing at all.
#: ``roundrobin`` deals every subscribed partition out in turn.
ASSIGNORS: Mapping[str, Any] = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
}


def make_consumer(
    bootstrap: str,
    *,
    group_id: str | None,
    topics: Sequence[str] | None = None,
    pattern: str | None = None,
    isolation_level: str = "read_committed",
    credentials: Credentials | None = None,
    assignors: Sequence[str] | None = None,
    group_instance_id: str | None = None,
    **overrides: Any,
) -> Consumer:
    """A consumer with manual commits, ``auto_offset_reset=earliest``, ``read_committed``.

    Subscribes to ``topics`` or to the regex ``pattern`` (not both); with
    neither, call :meth:`Consumer.subscribe` or :meth:`Consumer.assign` later.
    ``group_id=None`` reads without a group (no commits), e.g. an auditor
    replaying a topic. ``credentials``: who the consumer is (default: the
    environment's). ``assignors``: partition assignment strategies in order of
    preference, of :data:`ASSIGNORS` (default kafka-python's: range, then
    roundrobin). ``group_instance_id``: a static member (KIP-345), unique in the
    group and the same across restarts: restarting after a crash takes its
    partitions back without a rebalance (the others carry on); they wait for it
    up to the session timeout. It still leaves the group at once when it stops
    on its own (:func:`_kafka_python.leave_group_when_stopping`). ``overrides``
    are kafka-python KafkaConsumer settings.
    """
    if topics is not None and pattern is not None:
        raise ValueError("give topics or pattern, not both")
    if assignors is not None:
        unknown = [a for a in assignors if a not in ASSIGNORS]
        if unknown or not assignors:
            raise ValueError(f"unknown partition assignors {unknown}; use {sorted(ASSIGNORS)}")
        overrides["partition_assignment_strategy"] = tuple(ASSIGNORS[a] for a in assignors)
    cfg: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "safeshare-consumer",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": isolation_level,
        "bootstrap_timeout_ms": int(DEFAULT_TIMEOUT_S * 1000),
        "metrics_enabled": CLIENT_METRICS,
    }
    if pattern is not None:
        cfg["metadata_max_age_ms"] = 5000
    if group_instance_id is not None:
        cfg["group_instance_id"] = group_instance_id
    cfg.update(resolve(credentials).client_config())
    cfg.update(overrides)
    raw = _construct("create consumer", kafka.KafkaConsumer, cfg)
    _kafka_python.leave_group_when_stopping(raw)
    consumer = Consumer(raw, group_id=group_id)
    if topics is not None or pattern is not None:
        try:
            consumer.subscribe(topics, pattern=pattern)
        except BaseException:
            raw.close(autocommit=False)
            raise
    return consumer


def catch_up(
    consumer: Consumer,
    partitions: Iterable[TopicPartition],
    handle: Callable[[Record], object],
    *,
    timeout_s: float,
    poll_ms: int = 100,
) -> dict[TopicPartition, tuple[int, int]]:
    """Read ``partitions`` to their end offsets as they are now, passing each record to ``handle``.

    For state rebuilt from a topic before work starts (the audit tree, consent,
    seen event ids): the end is measured once, at the call, so records written
    meanwhile are left to the next poll rather than chased. With
    ``read_committed`` the end offset is the last stable offset (KIP-98), so
    records of a transaction still open are not waited for.

    Bounded by ``timeout_s``: returns ``{partition: (position, end offset)}``
    for the partitions that did not reach their end in time, ``{}`` when all
    did. Whether falling short is an error is the caller's to say (the audit
    reader refuses a partial tree; the router carries on and catches up later).
    Records from ``poll`` are handed on in order, whichever partition they
    come from; every partition must be assigned to ``consumer``.
    """
    tps = list(partitions)
    end = consumer.end_offsets(tps)
    deadline = time.monotonic() + timeout_s
    while True:
        behind = {tp: (pos, end[tp]) for tp in tps if (pos := consumer.position(tp)) < end[tp]}
        if not behind or time.monotonic() > deadline:
            return behind
        for r in consumer.poll_records(timeout_ms=poll_ms):
            handle(r)
