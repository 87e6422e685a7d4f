"""The producer: idempotent, transactional, with our errors and types.

kafka-python 3.0.12 against Kafka 4.1 (checked by tests/test_kafka_harness.py;
pitfalls marked !):

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
* ! ``KafkaProducer.send`` spends more CPU on bookkeeping than on the record
  (validation, serializers, partitioner layers, a debug string, the
  transaction manager's lock): :meth:`Producer.send` appends keyed records to
  kafka-python's accumulator itself (:class:`~broker.kafka._kafka_python.KeyedAppender`);
  :meth:`Producer.send_all` also skips the future per record (checked per
  batch instead). Figures: docs/PERFORMANCE.md (``python -m bench router --only send``).
* ! kafka-python completes the future of a batch the broker refused with
  *success*, carrying a function that gives each record's error: a batch's
  future alone does not say it was written
  (:meth:`~broker.kafka._kafka_python.Sent.raise_if_failed`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import kafka
import kafka.errors as _kerr
from kafka.partitioner.default import DefaultPartitioner

from broker.kafka import _kafka_python
from broker.kafka import configuration as _configuration
from broker.kafka._kafka_python import KeyedAppender, producer_fenced, raise_if_record_failed
from broker.kafka._kafka_python import RetryPauses as RetryPauses  # Producer.retry_pauses
from broker.kafka._kafka_python import Sent as Sent  # what send_all returns
from broker.kafka._kafka_python import transactions_v2 as _tv2
from broker.kafka.configuration import CLIENT_METRICS, DEFAULT_TIMEOUT_S, _construct
from broker.kafka.exceptions import (
    KafkaError,
    KafkaTimeoutError,
    ProducerFencedError,
    translated,
)
from broker.kafka.murmur2 import murmur2
from broker.kafka.security import Credentials, resolve
from broker.kafka.structs import (
    Closeable,
    GroupMetadata,
    OffsetAndMetadata,
    RecordMetadata,
    TopicPartition,
    _kom,
    _ktp,
)


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
        raise_if_record_failed(self._raw)

    @property
    def done(self) -> bool:
        """The broker answered (or the producer gave up): :meth:`get` returns or
        raises without waiting."""
        return bool(self._raw.is_done)

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once :attr:`done`: at once if it is, else on the
        producer's network thread (keep it short; an event loop's
        ``call_soon_threadsafe`` is the way to wake a coroutine waiting for it)."""
        self._raw.add_both(lambda _result: callback())


class Producer(Closeable):
    """A kafka-python producer with our errors, our types and a transaction helper."""

    def __init__(self, raw: Any, *, transactional: bool) -> None:
        self._raw = raw
        self.transactional = transactional
        self._appender = KeyedAppender.for_producer(raw)
        self.interrupt: threading.Event | None = None
        """When set (a process stopping), waits for the broker end at once."""
        self.retry_pauses: RetryPauses | None = None
        """Pauses before transactional retries (:func:`quick_transactional_retries`)."""
        self.transactions_v2 = False
        """Transactions v2 (KIP-890) in use (:mod:`~broker.kafka._kafka_python.transactions_v2`)."""

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
        return producer_fenced(self._raw)

    @property
    def broken(self) -> bool:
        """Every later record will fail as one did (kafka-python's idempotent
        producer after a record refused for good): replace this producer."""
        return _kafka_python.producer_broken(self._raw)

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
            # event, and two context managers a record cost it.
            with self._translated(f"send to {topic}"):
                raise
        return SendFuture(fut)

    def send_now(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> SendFuture | None:
        """:meth:`send` of a keyed record if it can be done without waiting, else
        None (then :meth:`send`, which may wait for the topic's metadata, from a
        thread that may block). For an event loop: never blocks."""
        appender = self._appender
        if appender is None:
            return None
        try:
            fut = appender(topic, value, key, list(headers) if headers else [])
        except Exception:
            with self._translated(f"send to {topic}"):
                raise
        return None if fut is None else SendFuture(fut)

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
        """Block until every record sent so far is acknowledged (``timeout`` in
        seconds; no longer once :attr:`interrupt` is set)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._translated("flush"):
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                slice_s = WAIT_SLICE_S if left is None else min(left, WAIT_SLICE_S)
                try:
                    self._raw.flush(timeout=slice_s)
                    return
                except _kerr.KafkaTimeoutError:
                    if left is not None and left <= slice_s:
                        raise KafkaTimeoutError(
                            f"flush: records not acknowledged by the broker in {timeout:.0f} s"
                        ) from None
                    self._raise_if_interrupted("flush")

    def _raise_if_interrupted(self, what: str) -> None:
        if self.interrupt is not None and self.interrupt.is_set():
            raise KafkaTimeoutError(f"{what}: abandoned, as the process is stopping")

    def _await(self, result: Any, what: str, timeout: float | None) -> None:
        """Wait for a transactional request's result (kafka-python's waits have no
        bound): at most ``timeout`` seconds, and no longer once :attr:`interrupt`
        is set. Either way KafkaTimeoutError, and the transaction's outcome is
        unknown to this producer, which must then be closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._translated(what):
            while not result.wait(timeout_ms=WAIT_SLICE_S * 1000):
                self._raise_if_interrupted(what)
                if deadline is not None and time.monotonic() > deadline:
                    raise KafkaTimeoutError(f"{what}: no answer from the broker in {timeout:.0f} s")

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
    ) -> Callable[..., None]:
        """:meth:`send_offsets_to_transaction` without waiting: returns the wait
        (which takes a timeout in seconds, as :meth:`commit_transaction`).

        The offsets of a batch are known as soon as it is polled, so a router can
        have them on their way (two round trips to the coordinators) while it
        routes the batch, and wait before the commit
        (:func:`_kafka_python.start_sending_offsets`).
        """
        with self._translated("send_offsets_to_transaction"):
            result = _kafka_python.start_sending_offsets(
                self._raw, {_ktp(tp): _kom(om) for tp, om in offsets.items()}, group_metadata.raw
            )
        if result is None:  # another kafka-python version: the blocking method
            self.send_offsets_to_transaction(offsets, group_metadata)
            return lambda timeout=None: None

        def wait(timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
            self._await(result, "send_offsets_to_transaction", timeout)

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

    def commit_transaction(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        """Commit, waiting at most ``timeout`` seconds (see :meth:`_await`): after a
        timeout the transaction may have committed or not."""
        with self._ending("commit_transaction"):
            self._end(True, timeout)

    def abort_transaction(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        """Abort, waiting at most ``timeout`` seconds (see :meth:`_await`): after a
        timeout the broker aborts the transaction when the transactional id is
        next initialised, or after the transaction timeout."""
        with self._ending("abort_transaction"):
            self._end(False, timeout)

    def _end(self, commit: bool, timeout: float | None) -> None:
        raw = self._raw
        result = _kafka_python.start_ending(raw, commit)
        if result is None:  # another kafka-python version: its own unbounded wait
            if commit:
                raw.commit_transaction()
            else:
                raw.abort_transaction()
            return
        self._await(result, "commit_transaction" if commit else "abort_transaction", timeout)

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
        """Close, waiting at most ``timeout`` seconds for records still pending;
        they are dropped after that (an abandoned transaction's)."""
        raw = self._raw
        with translated("close producer"):
            try:
                raw.close(timeout=timeout)
            except _kerr.KafkaTimeoutError:
                _kafka_python.force_close(raw)


class KeyHashCachingPartitioner(DefaultPartitioner):  # type: ignore[misc]
    """kafka-python's default partitioner with the key hashes remembered.

    Keyed records go where Kafka's Java clients put them (murmur2 of the key,
    positive, modulo the partition count), so one child's records stay on one
    partition whichever client wrote them. The hash is broker.kafka.murmur2's (the
    Java one, twice as fast as kafka-python's); a router sends each child's key
    again and again (a copy per subscriber, event after event), so it is kept in
    a bounded map. Records without a key are placed as by the default.
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


#: Waits for the broker are done in slices this long, checking for an interrupt.
WAIT_SLICE_S = 0.1

#: First pause before a transactional request is retried; doubled per retry
#: of the same request up to the producer's ``retry_backoff_ms``. 5 ms is what
#: the Java client was measured with (issue 18: p99 307 -> 36 ms at 1,000/s).
TXN_RETRY_BACKOFF_MS = 5.0


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
        "metrics_enabled": CLIENT_METRICS,
    }
    if transactional_id is not None:
        cfg["transactional_id"] = transactional_id
    cfg.update(resolve(credentials).client_config())
    cfg.update(overrides)
    v2 = transactional_id is not None and _cluster_has_transactions_v2(cfg)
    raw = _construct("create producer", kafka.KafkaProducer, cfg)
    producer = Producer(raw, transactional=transactional_id is not None)
    if transactional_id is not None:
        producer.transactions_v2 = v2 and _tv2.use_transactions_v2(raw)
        # TXN_RETRY_BACKOFF_MS read here, at the call: bench router sets it per run.
        producer.retry_pauses = _kafka_python.quick_transactional_retries(
            raw, TXN_RETRY_BACKOFF_MS
        )
    return producer


def _cluster_has_transactions_v2(cfg: Mapping[str, Any]) -> bool:
    """Whether a transactional producer with ``cfg`` should use transactions v2:
    :data:`~broker.kafka.configuration.TRANSACTIONS_V2` and the cluster's finalized
    ``transaction.version`` (asked once per producer, about 10 ms: the Java
    client reads it from each connection's ApiVersions answer, which
    kafka-python does not keep)."""
    if not (_configuration.TRANSACTIONS_V2 and _kafka_python.PINNED):
        return False
    what = "create producer: read the cluster's transaction.version"
    allowed = kafka.KafkaAdminClient.DEFAULT_CONFIG
    admin = _construct(what, kafka.KafkaAdminClient, {k: v for k, v in cfg.items() if k in allowed})
    try:
        with translated(what):
            return _tv2.finalized_transaction_version(admin) >= _tv2.TRANSACTION_VERSION_V2
    finally:
        with suppress(Exception):
            admin.close()
