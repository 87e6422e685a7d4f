"""Thin, typed wrappers around kafka-python: the only Kafka clients Safeshare uses.

No other package imports kafka-python. Keeping it here gives one place to fix
defaults, one place where kafka-python's exceptions become ours
(:mod:`broker.kafka.exceptions`), and typed values (:class:`TopicPartition`,
:class:`OffsetAndMetadata`, :class:`Record`) instead of kafka-python's untyped
namedtuples.

Exactly-once consume-transform-produce (the router's loop)::

    producer = make_producer(bootstrap, transactional_id=topics.router_transactional_id("r1"))
    producer.init_transactions()            # once; fences an older instance with this id
    consumer = make_consumer(bootstrap, group_id=topics.router_group, pattern=topics.ingest_pattern)
    while running:
        records = consumer.poll_records(timeout_ms=500)
        if not records:
            continue
        try:
            with producer.transaction():
                for r in records:
                    producer.send(feed_topic, value, key=r.key)
                producer.send_offsets_to_transaction(
                    offsets_after(records), consumer.group_metadata())
        except TransactionAbortedError:
            consumer.rewind_to_committed()  # replay the batch
        # ProducerFencedError: another instance took over; stop.

Findings with kafka-python 3.0.12 against Kafka 4.1.1 (checked by
tests/test_kafka_harness.py; pitfalls marked !):

* Transactions work: ``init_transactions``, ``begin_transaction``, ``send``,
  ``send_offsets_to_transaction(offsets, group_metadata)``, ``commit_transaction``
  / ``abort_transaction``. A ``read_committed`` consumer never sees aborted
  records; a ``read_uncommitted`` one does.
* ``send_offsets_to_transaction(offsets, group_metadata)``: ``offsets`` is
  ``{kafka TopicPartition: kafka OffsetAndMetadata(offset, metadata, leader_epoch)}``
  and the offset is the *next* one to read (last processed + 1).
  ``group_metadata`` is ``consumer.group_metadata()`` (a ConsumerGroupMetadata
  with generation and member id, so the broker fences a consumer that was
  kicked out of the group, KIP-447); a bare group-id string is still accepted
  but loses that fencing. The wrappers here convert our typed values.
* ! kafka-python 3.x defaults to ``enable_idempotence=True`` and ``acks=all``;
  ``OffsetAndMetadata`` has three fields (``leader_epoch`` came in 2.x), so
  two-argument construction from old examples fails.
* ! A fenced producer's later calls raise a plain ``KafkaError`` ("... in an
  error state: ProducerFencedError"); :class:`Producer` re-raises them as
  :class:`ProducerFencedError`, so a caller does not retry and fence its successor.
* ! After ``abort_transaction`` the consumer's in-memory position is still past
  the records of the aborted batch: without seeking back to the committed
  offsets (:meth:`Consumer.rewind_to_committed`) they are silently skipped.
* ! There is no ``NoBrokersAvailable`` any more: a client that cannot reach its
  bootstrap servers raises ``KafkaTimeoutError("Unable to bootstrap ...")``
  from its constructor after ``bootstrap_timeout_ms`` (default 30 s).
* ! ``create_topics`` returns before the new topic has a leader everywhere;
  :meth:`Admin.ensure_topics` waits for leaders (``wait_for_topics``), or the
  first produce may fail with UnknownTopicOrPartition.
* ! A pattern subscription only notices new topics at the next metadata refresh
  (``metadata_max_age_ms``, 5 min by default): :func:`make_consumer` lowers it to
  5 s when a pattern is given, so a newly onboarded agency is picked up.
* ! kafka-python 3.0.12 can lose a rebalance's assignment when ``poll`` times
  out mid-rejoin (see :func:`_patch_lost_rejoin`); importing this module
  patches it. Symptom: a group consumer that never receives records, with
  "No partition metadata for topic" or "Updated partition assignment: []"
  as its last word.
* ! With a pattern subscription every ``poll`` first waits for a metadata
  refresh; a poll timeout shorter than that round trip means the consumer
  never rejoins (Consumer.poll enforces ``MIN_PATTERN_POLL_MS``).
* ! ``KafkaProducer.send`` spends twice the CPU of the record itself on
  bookkeeping (validation, serializers, partitioner layers, a debug string,
  the transaction manager's lock): :meth:`Producer.send` appends keyed records
  to kafka-python's accumulator itself (:class:`KeyedAppender`), ~0.6x the CPU;
  :meth:`Producer.send_all` also skips the future per record (checked per
  batch instead), ~0.3x (``python -m bench router --only send``).
* ! kafka-python completes the future of a batch the broker refused with
  *success*, carrying a function that gives each record's error: a batch's
  future alone does not say it was written (:meth:`Sent.raise_if_failed`).
* ! ``auto.create.topics.enable=false`` on our broker: producing to a topic
  that does not exist blocks for ``max_block_ms`` and then times out.
  Create topics first (:meth:`Admin.ensure_topics`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple, Self

import kafka
import kafka.errors as _kerr
import kafka.structs as _kstructs
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ConfigResource,
    ConfigResourceType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
    UserScramCredentialUpsertion,
)
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.partitioner.default import DefaultPartitioner, murmur2

from broker.kafka.exceptions import (
    KafkaError,
    KafkaTimeoutError,
    ProducerFencedError,
    TopicError,
    translate,
    translated,
)
from broker.kafka.security import SCRAM_ITERATIONS, SCRAM_MECHANISM, Credentials, resolve
from broker.topics import Topics

DEFAULT_TIMEOUT_S = 30.0
MIN_PATTERN_POLL_MS = 100


def _patch_lost_rejoin() -> None:
    """Work around a kafka-python 3.0.x bug that leaves a consumer with no partitions.

    ``join_group_async`` keeps an in-flight JoinGroup/SyncGroup task across
    polls and only re-awaits it ``while need_rejoin()``. For a rejoin that
    ConsumerCoordinator itself decided on (subscription changed, e.g. a
    pattern matched a new topic; or partition metadata arrived after the
    first join), ``need_rejoin()`` turns False as soon as the leader computed
    the new assignment, inside the task. If ``poll(timeout_ms)`` expired while
    the task was in flight, the next poll skips the loop, the task's
    assignment is never installed, and the consumer sits on its old (often
    empty) assignment until something else triggers a rebalance. Reproduced
    here with poll timeouts of a few ms on every try, and once with 200 ms.

    The fix: a pending join task means the rejoin is not over. If the task
    already finished unseen, the library sends a fresh JoinGroup (one extra
    rebalance round) instead of using the stale result, which is correct.
    """
    from kafka.coordinator.consumer import ConsumerCoordinator

    original = ConsumerCoordinator.need_rejoin
    if getattr(original, "_safeshare_patched", False):
        return

    def need_rejoin(self: Any) -> bool:
        if getattr(self, "_join_task", None) is not None:
            return True
        return bool(original(self))

    need_rejoin._safeshare_patched = True  # type: ignore[attr-defined]
    ConsumerCoordinator.need_rejoin = need_rejoin


_patch_lost_rejoin()


class AuthFailureRecorder:
    """A kafka-python ``kafka_client`` factory that notices refused logins.

    ! When a broker refuses a client's login, kafka-python 3.0.12 keeps
    retrying until ``bootstrap_timeout_ms`` and then raises only
    ``KafkaTimeoutError("Unable to bootstrap ...")``, exactly as if the
    broker were down; the SASL error is only logged. This factory builds the
    library's own client, but hooks each connection's setup future so the
    error is kept and a wrong password says so. Best effort: the broker
    answers a bad SCRAM proof and closes the connection, and kafka-python
    sometimes notices only the close. It touches kafka-python internals
    (pinned version); if they move, it degrades to the plain client and the
    old message.
    """

    def __init__(self) -> None:
        self.failure: BaseException | None = None

    def _saw(self, exc: BaseException) -> None:
        if isinstance(exc, _kerr.SaslAuthenticationFailedError):
            self.failure = exc

    def __call__(self, **configs: Any) -> Any:
        from kafka.net.compat import KafkaNetClient

        try:
            from kafka.net.manager import KafkaConnectionManager
            from kafka.net.selector import NetworkSelector

            net = NetworkSelector(**configs)
            manager = KafkaConnectionManager(net, **configs)
        except Exception:  # noqa: BLE001 - internals moved: no diagnosis, same client
            return KafkaNetClient(**configs)
        original = manager.get_connection

        def get_connection(*args: Any, **kwargs: Any) -> Any:
            conn = original(*args, **kwargs)
            with suppress(AttributeError):
                conn.init_future.add_errback(self._saw)
            return conn

        manager.get_connection = get_connection
        return KafkaNetClient(net=net, manager=manager, **configs)

    def auth_failure(self) -> BaseException | None:
        return self.failure


def _construct(what: str, cls: Any, cfg: dict[str, Any]) -> Any:
    """``cls(**cfg)`` with our errors; a refused login is reported as such."""
    recorder = AuthFailureRecorder()
    cfg = {"kafka_client": recorder, **cfg}
    try:
        with translated(what):
            return cls(**cfg)
    except KafkaError:
        auth = recorder.auth_failure()
        if auth is None:
            raise
        raise KafkaError(f"{what}: the broker refused the login: {auth}") from auth


# -- values -------------------------------------------------------------------------
class TopicPartition(NamedTuple):
    topic: str
    partition: int


class OffsetAndMetadata(NamedTuple):
    """A committed position: ``offset`` is the next record to read."""

    offset: int
    metadata: str = ""
    leader_epoch: int = -1


@dataclass(frozen=True)
class Record:
    """One consumed record (kafka-python's ConsumerRecord, typed and trimmed)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = -1
    """Milliseconds since the epoch (CreateTime unless the topic says LogAppendTime)."""

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True)
class RecordMetadata:
    """Where a produced record landed."""

    topic: str
    partition: int
    offset: int


class GroupMetadata:
    """Opaque consumer-group snapshot for :meth:`Producer.send_offsets_to_transaction`."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    @property
    def group_id(self) -> str | None:
        gid = getattr(self.raw, "group_id", None)
        return None if gid is None else str(gid)

    @property
    def generation(self) -> int:
        """The group generation the snapshot was taken in (-1 if not joined)."""
        return int(getattr(self.raw, "generation_id", -1))

    def __repr__(self) -> str:
        return f"GroupMetadata({self.raw!r})"


@dataclass(frozen=True)
class TopicSpec:
    """A topic as Safeshare wants it: name, partitions and topic-level configs.

    ``replication_factor=-1`` means "the broker's default.replication.factor",
    so the same specs work on the one-node test broker and a real cluster.
    """

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = -1


@dataclass(frozen=True)
class TopicDescription:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


ACL_RESOURCE_TYPES = frozenset({"TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID"})
ACL_PATTERNS = frozenset({"LITERAL", "PREFIXED"})
ACL_OPERATIONS = frozenset({
    "ALL", "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "CLUSTER_ACTION",
    "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE",
})
CLUSTER_RESOURCE = "kafka-cluster"
"""The one name of Kafka's CLUSTER resource."""


@dataclass(frozen=True, order=True)
class AclBinding:
    """One Kafka ACL: ``permission`` for ``principal`` to ``operation`` on a resource.

    ``pattern`` ``PREFIXED`` matches every resource whose name starts with
    ``resource_name`` (KIP-290). Hashable and ordered, so sets of bindings
    can be diffed and printed in a stable order.
    """

    principal: str
    """``User:<name>``."""
    resource_type: str
    """``TOPIC``, ``GROUP``, ``CLUSTER`` or ``TRANSACTIONAL_ID``."""
    resource_name: str
    operation: str
    pattern: str = "LITERAL"
    permission: str = "ALLOW"
    host: str = "*"

    def __post_init__(self) -> None:
        if not self.principal.startswith("User:") or len(self.principal) <= len("User:"):
            raise ValueError(f"ACL principal must be User:<name>, not {self.principal!r}")
        if self.resource_type not in ACL_RESOURCE_TYPES:
            raise ValueError(f"unknown ACL resource type {self.resource_type!r}")
        if self.pattern not in ACL_PATTERNS:
            raise ValueError(f"unknown ACL pattern type {self.pattern!r}")
        if self.operation not in ACL_OPERATIONS:
            raise ValueError(f"unknown ACL operation {self.operation!r}")
        if self.permission not in {"ALLOW", "DENY"}:
            raise ValueError(f"ACL permission must be ALLOW or DENY, not {self.permission!r}")
        if not self.resource_name:
            raise ValueError("ACL resource name must not be empty")

    def __str__(self) -> str:
        name = self.resource_name + ("*" if self.pattern == "PREFIXED" else "")
        host = "" if self.host == "*" else f" from {self.host}"
        return (
            f"{self.permission} {self.principal} {self.operation} "
            f"{self.resource_type} {name}{host}"
        )


def _kacl(b: AclBinding) -> Any:
    return ACL(
        principal=b.principal,
        host=b.host,
        operation=ACLOperation[b.operation],
        permission_type=ACLPermissionType[b.permission],
        resource_pattern=ResourcePattern(
            ResourceType[b.resource_type], b.resource_name, ACLResourcePatternType[b.pattern]
        ),
    )


def _binding(raw: Any) -> AclBinding | None:
    """Our value for a kafka-python ACL; None for kinds Safeshare never writes."""
    rp = raw.resource_pattern
    try:
        return AclBinding(
            principal=raw.principal,
            resource_type=rp.resource_type.name,
            resource_name=rp.resource_name,
            operation=raw.operation.name,
            pattern=rp.pattern_type.name,
            permission=raw.permission_type.name,
            host=raw.host,
        )
    except (ValueError, KeyError):
        return None


def _ktp(tp: TopicPartition | tuple[str, int]) -> Any:
    return _kstructs.TopicPartition(tp[0], tp[1])


def _kom(om: OffsetAndMetadata | int) -> Any:
    if isinstance(om, int):
        return _kstructs.OffsetAndMetadata(om, "", -1)
    return _kstructs.OffsetAndMetadata(om.offset, om.metadata, om.leader_epoch)


def _record(raw: Any) -> Record:
    headers = tuple((str(k), bytes(v) if v is not None else b"") for k, v in (raw.headers or ()))
    return Record(
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key=raw.key,
        value=raw.value,
        headers=headers,
        timestamp=raw.timestamp if raw.timestamp is not None else -1,
    )


def offsets_after(records: Iterable[Record]) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets to commit after processing ``records``: last offset + 1 per partition."""
    out: dict[TopicPartition, OffsetAndMetadata] = {}
    for r in records:
        cur = out.get(r.tp)
        if cur is None or r.offset + 1 > cur.offset:
            out[r.tp] = OffsetAndMetadata(r.offset + 1)
    return out


# -- producer -----------------------------------------------------------------------
class SendFuture:
    """The pending result of :meth:`Producer.send`."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def get(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> RecordMetadata:
        """Block until the broker acknowledged the record (``timeout`` in seconds)."""
        with translated("send"):
            md = self._raw.get(timeout=timeout)
        return RecordMetadata(md.topic, md.partition, md.offset)

    def raise_if_failed(self) -> None:
        """After a flush: return if the broker acknowledged the record, else raise
        why not (as :meth:`get` would; a record still pending raises a timeout).
        Cheaper than :meth:`get` for the many records of a transaction."""
        raw = self._raw
        if raw.is_done and not raw.failed():
            return
        self.get(timeout=0)


class Closeable:
    """A client that ``with`` closes on the way out, whether the block raised or not.

    Producer, Consumer and Admin each hold sockets (and a producer its pending
    records) that only ``close`` gives back; the ``with`` plumbing is written
    once here.
    """

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class KeyedAppender:
    """kafka-python's ``send`` for a keyed record, without its per-record bookkeeping.

    A router sends two to three records per event, and ``KafkaProducer.send``
    spends more on checks than on the record: header and type validation, two
    serializer calls, a metadata lookup and the partitioner through three
    layers, a size estimate, a ``str(self)`` for a debug line nobody reads, a new
    TopicPartition, and the transaction manager's lock and state checks for a
    partition already in the transaction. This does what is left, in the same
    order and through the same objects: the partition as the Java clients pick
    it (murmur2 of the key modulo the partition count), the partition added to
    the open transaction once, the record appended to kafka-python's own record
    accumulator (whose batch builder still checks the key and value types), and
    the sender woken when a batch fills or begins. The records, batches,
    futures and produce requests are kafka-python's, byte for byte.

    Measured against ``KafkaProducer.send`` for 1 KB records to 3 feeds in
    transactions (``python -m bench router --only send``).

    Tied to kafka-python 3.0.12 internals (pinned in pyproject.toml):
    :meth:`for_producer` returns None when they are not there, and the caller
    uses ``send``. It also declines a record (returns None) when the topic's
    metadata is not yet known or the record may be near ``max_request_size``:
    ``send`` waits for the one and raises the right error for the other.
    """

    __slots__ = ("_raw", "_partitions_for", "_hash", "_append", "_wakeup", "_manager",
                 "_tps", "_added", "_max_bytes", "_acc")

    #: Bytes a record may take beyond key, value and headers (varints, attributes).
    RECORD_OVERHEAD = 64

    def __init__(self, raw: Any, partitioner: KeyHashCachingPartitioner) -> None:
        self._raw = raw
        self._partitions_for = raw._metadata.partitions_for_topic
        self._hash = partitioner.key_hash
        self._append = raw._accumulator.append
        self._wakeup = raw._sender.wakeup
        manager = raw._transaction_manager
        self._manager = manager if manager is not None and manager.is_transactional() else None
        self._tps: dict[tuple[str, int], Any] = {}
        self._added: set[Any] = set()
        self._max_bytes = int(raw.config["max_request_size"]) - self.RECORD_OVERHEAD
        self._acc = raw._accumulator

    @classmethod
    def for_producer(cls, raw: Any) -> KeyedAppender | None:
        """An appender for ``raw`` (a KafkaProducer), or None if this client
        version or configuration does not have what it relies on."""
        partitioner = getattr(raw, "config", {}).get("partitioner")
        if not isinstance(partitioner, KeyHashCachingPartitioner):
            return None
        if not all(hasattr(raw, a) for a in ("_metadata", "_accumulator", "_sender",
                                                "_transaction_manager")):
            return None
        if kafka.__version__ != "3.0.12":
            return None
        return cls(raw, partitioner)

    def forget_partitions(self) -> None:
        """Forget which partitions are in the transaction, at its begin and end: the
        next record to each goes through the transaction manager again, which adds
        the partition to the new transaction, or raises as ``send`` would when no
        transaction is open."""
        self._added.clear()

    def __call__(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> Any:
        """Append a record; its kafka-python future, or None to use ``send`` instead."""
        partitions = self._partitions_for(topic)
        size = len(value) + len(key)
        for h_key, h_value in headers:
            size += len(h_key) * 4 + len(h_value)  # UTF-8: at most 4 bytes a character
        if not partitions or size > self._max_bytes:
            return None
        return self._append_record(self._partition(topic, key, partitions), key, value, headers)

    def _partition(self, topic: str, key: bytes, partitions: set[int]) -> Any:
        """The record's partition as the Java clients pick it, added to the open
        transaction the first time the transaction writes to it."""
        p = self._hash(key) % len(partitions)  # Kafka's partition ids are 0..n-1
        tp = self._tps.get((topic, p))
        if tp is None:
            tp = self._tps[(topic, p)] = _kstructs.TopicPartition(topic, p)
        manager = self._manager
        if manager is not None and tp not in self._added:
            manager.maybe_add_partition_to_transaction(tp)  # raises in a failed state
            self._added.add(tp)
        return tp

    def _append_record(
        self, tp: Any, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Any:
        """kafka-python's append (a new batch if need be, the sender woken for it)."""
        future, batch_full, new_batch, _ = self._append(tp, None, key, value, headers)
        if batch_full or new_batch:
            self._wakeup()
        return future

    def append_all(
        self, records: Iterable[tuple[str, bytes | None, bytes | None]], sent: Sent,
        send: Callable[..., Any],
    ) -> None:
        """Append ``(topic, key, value)`` records, noting in ``sent`` what to check.

        A record that fits the partition's open batch is appended to it under
        the partition's lock, as ``RecordAccumulator.append`` does, but without
        a ``FutureRecordMetadata``: its batch is noted instead, and the batch's
        own future says after the flush whether the broker wrote it. kafka-python
        makes a future per record and its sender completes each with callbacks;
        a router needs neither the offsets nor the callbacks, only to know that
        everything was written before it commits. A record that needs a new
        batch goes through kafka-python's append (which makes the batch and
        wakes the sender), one this appender declines through ``send``; both
        give a record future, checked as well.
        """
        acc = self._acc
        if acc._closed:
            raise _kerr.IllegalStateError("RecordAccumulator is closed")
        partitions_for, partition = self._partitions_for, self._partition
        max_bytes = self._max_bytes
        queues, tp_lock = acc._batches, acc._tp_lock
        batches, futures = sent.batches, sent.futures
        no_headers: list[tuple[str, bytes]] = []
        # While this runs an append is in progress (kafka-python's abort of a
        # force-closed producer waits for appends to finish).
        acc._appends_in_progress.increment()
        try:
            for topic, key, value in records:
                partitions = partitions_for(topic)
                if (key is None or value is None or not partitions
                        or len(value) + len(key) > max_bytes):
                    futures.append(send(topic, value=value, key=key))
                    continue
                tp = partition(topic, key, partitions)
                queue = queues.get(tp)
                if queue:
                    with tp_lock(tp):
                        if queue:
                            batch = queue[-1]
                            if batch.records.append(None, key, value, no_headers) is not None:
                                batches[id(batch)] = batch
                                continue
                futures.append(self._append_record(tp, key, value, no_headers))
        finally:
            acc._appends_in_progress.decrement()


class Sent:
    """What :meth:`Producer.send_all` sent: after a flush, :meth:`raise_if_failed`
    says whether the broker wrote every record.

    Records appended to an open batch are checked through their batch (one
    check for hundreds of records), the others through their own futures.
    """

    __slots__ = ("batches", "futures")

    def __init__(self) -> None:
        self.batches: dict[int, Any] = {}
        """Batches records were appended to, by id (kafka-python ProducerBatch)."""
        self.futures: list[Any] = []
        """Futures of records that began a batch or went through ``send``."""

    def raise_if_failed(self) -> None:
        """Return if every record was acknowledged; else raise why not, as
        :meth:`SendFuture.raise_if_failed` does for one record (a record still
        pending raises too)."""
        for batch in self.batches.values():
            future = batch.produce_future
            if not future.is_done:
                raise KafkaTimeoutError(
                    f"send: the batch to {batch.topic_partition.topic}"
                    f"[{batch.topic_partition.partition}] is not acknowledged (not flushed?)"
                )
            if future.failed():
                raise translate(future.exception)
            # ! kafka-python completes a batch the broker refused with *success*,
            # its value carrying a function that gives each record's error
            # (FutureRecordMetadata._produce_success); the batch failed if it is set.
            record_error = future.value[2]
            if record_error is not None:
                raise translate(record_error(0))
        for raw in self.futures:
            SendFuture(raw).raise_if_failed()


class Producer(Closeable):
    """A kafka-python producer with our errors, our types and a transaction helper."""

    def __init__(self, raw: Any, *, transactional: bool) -> None:
        self._raw = raw
        self.transactional = transactional
        self._appender = KeyedAppender.for_producer(raw)

    @property
    def raw(self) -> Any:
        """The kafka-python KafkaProducer (escape hatch; prefer the methods here)."""
        return self._raw

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """:func:`translated`, and a fenced producer's errors as :class:`ProducerFencedError`.

        Once fenced, kafka-python's transactional calls raise a plain KafkaError
        ("Cannot execute transactional method because we are in an error state:
        ProducerFencedError"); taken for a transient error, it would lead a
        caller to replace the producer and fence its own successor in turn.
        """
        try:
            with translated(what):
                yield
        except KafkaError as exc:
            if isinstance(exc, ProducerFencedError) or not self._fenced():
                raise
            raise ProducerFencedError(str(exc)) from exc

    def _fenced(self) -> bool:
        manager = getattr(self._raw, "_transaction_manager", None)
        last = getattr(manager, "last_error", None)
        fenced = (_kerr.ProducerFencedError, _kerr.InvalidProducerEpochError)
        return isinstance(last, fenced) or (isinstance(last, type) and issubclass(last, fenced))

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> SendFuture:
        try:
            fut = None
            appender = self._appender
            if (appender is not None and key is not None and value is not None
                    and partition is None and timestamp_ms is None):
                fut = appender(topic, value, key, list(headers) if headers else [])
            if fut is None:
                fut = self._raw.send(
                    topic, value=value, key=key, headers=list(headers) if headers else None,
                    partition=partition, timestamp_ms=timestamp_ms,
                )
        except Exception:
            # Translated only when it fails: a router sends several records per
            # event, and two context managers a record were measurable.
            with self._translated(f"send to {topic}"):
                raise
        return SendFuture(fut)

    def send_all(self, records: Iterable[tuple[str, bytes | None, bytes | None]]) -> Sent:
        """Send ``(topic, key, value)`` records whose offsets the caller does not
        need: after :meth:`flush`, ``raise_if_failed()`` on the result says
        whether all were written. Records go where :meth:`send` puts them; the
        cheaper bookkeeping is for a router's many copies (:meth:`KeyedAppender.append_all`)."""
        appender = self._appender
        sent = Sent()
        try:
            if appender is None:
                for topic, key, value in records:
                    sent.futures.append(self._raw.send(topic, value=value, key=key))
            else:
                appender.append_all(records, sent, self._raw.send)
        except Exception:
            with self._translated("send"):
                raise
        return sent

    def flush(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        """Block until every record sent so far is acknowledged (``timeout`` in seconds)."""
        with self._translated("flush"):
            self._raw.flush(timeout=timeout)

    def init_transactions(self) -> None:
        """Register the transactional id; fences (and aborts) any older producer with it."""
        with translated("init_transactions"):
            self._raw.init_transactions()

    def begin_transaction(self) -> None:
        with self._translated("begin_transaction"):
            self._raw.begin_transaction()
        if self._appender is not None:
            self._appender.forget_partitions()

    def send_offsets_to_transaction(
        self,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        group_metadata: GroupMetadata,
    ) -> None:
        """Commit consumer offsets as part of the current transaction."""
        with self._translated("send_offsets_to_transaction"):
            self._raw.send_offsets_to_transaction(
                {_ktp(tp): _kom(om) for tp, om in offsets.items()}, group_metadata.raw
            )

    def start_sending_offsets(
        self,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        group_metadata: GroupMetadata,
    ) -> Callable[[], None]:
        """:meth:`send_offsets_to_transaction` without waiting: returns the wait.

        The offsets of a batch are known as soon as it is polled, so a router can
        have them on their way (two round trips to the coordinators) while it
        routes the batch, and wait before the commit. kafka-python's own method
        enqueues the request and blocks on its result; this enqueues it the same
        way (the client's transaction manager orders it before the commit) and
        hands the blocking part back.
        """
        raw = self._raw
        manager = getattr(raw, "_transaction_manager", None)
        sender = getattr(raw, "_sender", None)
        if manager is None or sender is None:  # pragma: no cover - another client version
            self.send_offsets_to_transaction(offsets, group_metadata)
            return lambda: None
        with self._translated("send_offsets_to_transaction"):
            result = manager.send_offsets_to_transaction(
                {_ktp(tp): _kom(om) for tp, om in offsets.items()}, group_metadata.raw
            )
            sender.wakeup()

        def wait() -> None:
            with self._translated("send_offsets_to_transaction"):
                result.wait()

        return wait

    @contextmanager
    def _ending(self, what: str) -> Iterator[None]:
        """A commit or an abort: translated, and the transaction's partitions
        forgotten by the appender whether it ended or failed."""
        try:
            with self._translated(what):
                yield
        finally:
            if self._appender is not None:
                self._appender.forget_partitions()

    def commit_transaction(self) -> None:
        with self._ending("commit_transaction"):
            self._raw.commit_transaction()

    def abort_transaction(self) -> None:
        with self._ending("abort_transaction"):
            self._raw.abort_transaction()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``begin``; commit if the block succeeds, abort if it raises (then re-raise).

        A fenced producer is not aborted (it no longer may); the error propagates
        and the caller must close this producer.
        """
        self.begin_transaction()
        try:
            yield
        except BaseException as exc:
            if not isinstance(exc, ProducerFencedError | _kerr.ProducerFencedError):
                with suppress(KafkaError):  # the original error says more
                    self.abort_transaction()
            raise
        self.commit_transaction()

    def close(self, timeout: float | None = 10.0) -> None:
        with translated("close producer"):
            self._raw.close(timeout=timeout)


class KeyHashCachingPartitioner(DefaultPartitioner):  # type: ignore[misc]
    """kafka-python's default partitioner with the key hashes remembered.

    Keyed records go where Kafka's Java clients put them (murmur2 of the key,
    positive, modulo the partition count), so one child's records stay on one
    partition whichever client wrote them. kafka-python computes murmur2 in pure
    Python for every record (~15 µs); a router sends each child's key again and
    again (a copy per subscriber, event after event), so the hash is kept in a
    bounded map. Records without a key are placed as by the default.
    """

    def __init__(self, max_keys: int = 1 << 16) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def key_hash(self, key: bytes) -> int:
        """murmur2 of ``key``, made positive as the Java clients do (remembered)."""
        h = self._hashes.get(key)
        if h is None:
            h = murmur2(key) & 0x7FFFFFFF
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            self._hashes[key] = h
        return h

    def partition(  # type: ignore[no-untyped-def]
        self, topic, key, serialized_key, value, serialized_value, cluster
    ):
        if serialized_key is None:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        h = self.key_hash(serialized_key)
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        return sorted(partitions)[h % len(partitions)]


def make_producer(
    bootstrap: str,
    *,
    transactional_id: str | None = None,
    credentials: Credentials | None = None,
    **overrides: Any,
) -> Producer:
    """A producer with Safeshare's defaults: idempotent, ``acks=all``.

    With ``transactional_id`` the producer is transactional; call
    :meth:`Producer.init_transactions` once before the first transaction.
    ``credentials``: who the producer is (default: the environment's, see
    :mod:`broker.kafka.security`). ``overrides`` are kafka-python
    KafkaProducer settings.
    """
    cfg: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "safeshare-producer",
        "acks": "all",
        "enable_idempotence": True,
        "max_block_ms": int(DEFAULT_TIMEOUT_S * 1000),
        "bootstrap_timeout_ms": int(DEFAULT_TIMEOUT_S * 1000),
        "partitioner": KeyHashCachingPartitioner(),
    }
    if transactional_id is not None:
        cfg["transactional_id"] = transactional_id
    cfg.update(resolve(credentials).client_config())
    cfg.update(overrides)
    raw = _construct("create producer", kafka.KafkaProducer, cfg)
    return Producer(raw, transactional=transactional_id is not None)


# -- consumer -----------------------------------------------------------------------
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

        ! kafka-python raises TopicAuthorizationFailedError for a group
        subscription, but a consumer without a group (``assign``) whose
        topic the broker's ACLs hide just polls nothing, forever; the refusal
        is only logged. The metadata it received says so: make it an error.
        """
        cluster = getattr(getattr(self._raw, "_client", None), "cluster", None)
        refused = getattr(cluster, "unauthorized_topics", None)
        if not refused:
            return
        mine = {tp.topic for tp in self._raw.assignment()}
        mine |= set(self._raw.subscription() or ())
        denied = sorted(mine & set(refused))
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

    def close(self) -> None:
        """Leave the group without committing (commits are always explicit here)."""
        with translated("close consumer"):
            self._raw.close(autocommit=False)


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
    **overrides: Any,
) -> Consumer:
    """A consumer with manual commits, ``auto_offset_reset=earliest``, ``read_committed``.

    Subscribes to ``topics`` or to the regex ``pattern`` (not both); with
    neither, call :meth:`Consumer.subscribe` or :meth:`Consumer.assign` later.
    ``group_id=None`` reads without a group (no commits), e.g. an auditor
    replaying a topic. ``credentials``: who the consumer is (default: the
    environment's). ``assignors``: partition assignment strategies in order of
    preference, of :data:`ASSIGNORS` (default kafka-python's: range, then
    roundrobin). ``overrides`` are kafka-python KafkaConsumer settings.
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
    }
    if pattern is not None:
        cfg["metadata_max_age_ms"] = 5000
    cfg.update(resolve(credentials).client_config())
    cfg.update(overrides)
    raw = _construct("create consumer", kafka.KafkaConsumer, cfg)
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


# -- admin ----------------------------------------------------------------------------
_TOPIC_EXISTS = _kerr.TopicAlreadyExistsError.errno
_UNKNOWN_TOPIC = _kerr.UnknownTopicOrPartitionError.errno


class Admin(Closeable):
    """Topic administration (idempotent creation with configs, description,
    deletion), ACLs and SCRAM users.

    ``credentials``: who the admin client is (default: the environment's).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: Credentials | None = None,
        **overrides: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        cfg: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": "safeshare-admin",
            "bootstrap_timeout_ms": int(timeout_s * 1000),
            "request_timeout_ms": int(timeout_s * 1000),
        }
        cfg.update(resolve(credentials).client_config())
        cfg.update(overrides)
        self._raw = _construct("create admin client", kafka.KafkaAdminClient, cfg)

    @property
    def raw(self) -> Any:
        return self._raw

    def list_topics(self) -> set[str]:
        with translated("list topics"):
            return set(self._raw.list_topics())

    def ensure_topics(self, specs: Iterable[TopicSpec]) -> dict[str, str]:
        """Create missing topics and bring existing ones' configs to the spec.

        Returns ``{name: "created" | "exists" | "updated"}``. Idempotent: a topic
        that already exists is fine; if one of the spec's configs differs (say
        someone created the audit topic with the default 7-day retention) it is
        set to the spec's value, because a wrong retention silently loses audit
        records. The partition count of an existing topic is never changed:
        adding partitions would move subjects to other partitions and break
        per-subject ordering.
        """
        specs = list(specs)
        if not specs:
            return {}
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate topic names in specs: {names}")
        request = {
            s.name: {
                "num_partitions": s.partitions,
                "replication_factor": s.replication_factor,
                "configs": dict(s.config),
            }
            for s in specs
        }
        timeout_ms = int(self.timeout_s * 1000)
        with translated("create topics"):
            res = self._raw.create_topics(request, timeout_ms=timeout_ms, raise_errors=False)
        status: dict[str, str] = {}
        errors: list[str] = []
        for t in res["topics"]:
            code = t.get("error_code", 0)
            if code == 0:
                status[t["name"]] = "created"
            elif code == _TOPIC_EXISTS:
                status[t["name"]] = "exists"
            else:
                err = _kerr.for_code(code).__name__
                errors.append(f"{t['name']}: {err} {t.get('error_message') or ''}".strip())
        if errors:
            raise TopicError("could not create topics: " + "; ".join(errors))
        existing = [s for s in specs if status.get(s.name) == "exists" and s.config]
        if existing:
            current = self.describe([s.name for s in existing])
            for s in existing:
                drift = {
                    k: v for k, v in s.config.items() if current[s.name].config.get(k) != str(v)
                }
                if drift:
                    self.alter_topic_config(s.name, drift)
                    status[s.name] = "updated"
        with translated("wait for topic leaders"):
            self._raw.wait_for_topics(names, timeout_ms=timeout_ms)
        return status

    def alter_topic_config(self, name: str, config: Mapping[str, str]) -> None:
        """Set topic-level configs (incrementally: other keys keep their values)."""
        resource = ConfigResource(ConfigResourceType.TOPIC, name, dict(config))
        with translated(f"alter config of {name}"):
            self._raw.alter_configs([resource], incremental=True)

    def describe(self, names: Iterable[str]) -> dict[str, TopicDescription]:
        """Partitions, replication factor and every topic-level config value.

        Raises TopicError if a topic does not exist.
        """
        names = list(names)
        if not names:
            return {}
        with translated("describe topics"):
            meta = self._raw.describe_topics(names)
        by_name = {t["name"]: t for t in meta}
        missing = [
            n for n in names
            if n not in by_name or by_name[n].get("error_code", 0) != 0
        ]
        if missing:
            raise TopicError(f"no such topics: {missing}")
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        with translated("describe topic configs"):
            cfgs = self._raw.describe_configs(resources, config_filter="all")
        out: dict[str, TopicDescription] = {}
        for n in names:
            parts = by_name[n].get("partitions") or []
            rf = max((len(p.get("replica_nodes") or []) for p in parts), default=0)
            raw_cfg = cfgs.get("topic", {}).get(n, {})
            config = {
                k: str(v.get("value")) for k, v in raw_cfg.items() if v.get("value") is not None
            }
            out[n] = TopicDescription(n, len(parts), rf, config)
        return out

    def delete_topics(self, names: Iterable[str]) -> list[str]:
        """Delete topics; ones that do not exist are ignored. Returns those deleted."""
        names = list(names)
        if not names:
            return []
        with translated("delete topics"):
            res = self._raw.delete_topics(
                names, timeout_ms=int(self.timeout_s * 1000), raise_errors=False
            )
        deleted: list[str] = []
        errors: list[str] = []
        for t in res["topics"]:
            code = t.get("error_code", 0)
            if code == 0:
                deleted.append(t["name"])
            elif code != _UNKNOWN_TOPIC:
                errors.append(f"{t['name']}: {_kerr.for_code(code).__name__}")
        if errors:
            raise TopicError("could not delete topics: " + "; ".join(errors))
        return deleted

    # -- ACLs (the cluster must run an authorizer) ------------------------------------
    def describe_acls(self) -> set[AclBinding]:
        """Every ACL the cluster holds (of the kinds :class:`AclBinding` can express)."""
        flt = ACLFilter(
            principal=None, host=None, operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(
                ResourceType.ANY, None, ACLResourcePatternType.ANY
            ),
        )
        with translated("describe ACLs"):
            raw, _ = self._raw.describe_acls(flt)
        return {b for b in (_binding(a) for a in raw) if b is not None}

    def create_acls(self, bindings: Iterable[AclBinding]) -> None:
        """Create ACLs (creating one that exists is a no-op in Kafka)."""
        bindings = sorted(set(bindings))
        if not bindings:
            return
        with translated("create ACLs"):
            res = self._raw.create_acls([_kacl(b) for b in bindings])
        if res["failed"]:
            raise KafkaError(
                "could not create ACLs: " + "; ".join(str(e) for e in res["failed"])
            )

    def delete_acls(self, bindings: Iterable[AclBinding]) -> int:
        """Delete exactly these ACLs (each filter matches one binding); how many went."""
        bindings = sorted(set(bindings))
        if not bindings:
            return 0
        filters = [
            ACLFilter(
                principal=b.principal, host=b.host, operation=ACLOperation[b.operation],
                permission_type=ACLPermissionType[b.permission],
                resource_pattern=ResourcePatternFilter(
                    ResourceType[b.resource_type], b.resource_name,
                    ACLResourcePatternType[b.pattern],
                ),
            )
            for b in bindings
        ]
        with translated("delete ACLs"):
            res = self._raw.delete_acls(filters)
        errors = [f"{flt}: {err.__name__}" for flt, _, err in res if err is not _kerr.NoError]
        if errors:
            raise KafkaError("could not delete ACLs: " + "; ".join(errors))
        return sum(len(matched) for _, matched, _ in res)

    # -- SCRAM users ---------------------------------------------------------------------
    def upsert_scram_users(
        self,
        passwords: Mapping[str, str],
        *,
        mechanism: str = SCRAM_MECHANISM,
        iterations: int = SCRAM_ITERATIONS,
    ) -> None:
        """Create or reset SCRAM credentials (the broker stores only salted keys)."""
        if not passwords:
            return
        ups = [
            UserScramCredentialUpsertion(user, mechanism, pw, iterations=iterations)
            for user, pw in sorted(passwords.items())
        ]
        with translated("alter SCRAM credentials"):
            res = self._raw.alter_user_scram_credentials(ups)
        errors = [f"{user}: {msg}" for user, msg in res.items() if msg]
        if errors:
            raise KafkaError("could not set SCRAM credentials: " + "; ".join(errors))

    def scram_users(self) -> set[str]:
        """Users that hold SCRAM credentials."""
        with translated("describe SCRAM credentials"):
            res = self._raw.describe_user_scram_credentials()
        return {user for user, info in res.items() if not info.get("error")}

    def close(self) -> None:
        self._raw.close()


# -- Safeshare's topics -----------------------------------------------------------------
NEVER = "-1"

AUDIT_CONFIG: Mapping[str, str] = {
    # The audit log is the evidence: never compacted, never expired.
    "cleanup.policy": "delete",
    "retention.ms": NEVER,
    "retention.bytes": NEVER,
}
CONSENT_CONFIG: Mapping[str, str] = {
    # Latest consent record per subject+purpose is what counts.
    "cleanup.policy": "compact",
}


def standard_topic_specs(
    topics: Topics,
    agencies: Iterable[str],
    subscribers: Iterable[str],
    *,
    partitions: int = 3,
    audit_shards: int = 1,
) -> list[TopicSpec]:
    """Every topic a Safeshare deployment (namespace ``topics``) needs (DESIGN.md).

    ``partitions``: for keyed topics (ingest, consent, feeds, quarantine); more
    partitions let more router processes share the load. ``audit_shards``:
    one audit partition per Merkle log shard.
    """
    specs = [TopicSpec(topics.ingest(a), partitions) for a in agencies]
    specs.append(TopicSpec(topics.consent, partitions, CONSENT_CONFIG))
    specs += [TopicSpec(topics.feed(s), partitions) for s in subscribers]
    specs.append(TopicSpec(topics.quarantine, partitions))
    specs.append(TopicSpec(topics.audit, audit_shards, AUDIT_CONFIG))
    specs.append(TopicSpec(topics.audit_checkpoints, 1, AUDIT_CONFIG))
    return specs
