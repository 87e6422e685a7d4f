"""kafka-python's internals, reached into here and nowhere else, behind one version gate.

Each piece works around kafka-python 3.0.12 (pinned in pyproject.toml), with
the upstream issue or pull request it concerns. :data:`PINNED` is the gate:
with any other version each falls back to kafka-python's public path (slower,
or with the old symptom) rather than touch internals that may have moved, and
tests/test_kafka_python_pin.py fails until the pieces are checked again.

- :func:`patch_lost_rejoin`: a group consumer that loses its assignment.
- :func:`patch_eager_positions`: a rejoining consumer that re-reads from a
  stale position partitions another member has routed meanwhile.
- :class:`AuthFailureRecorder`: a refused login that reads as "broker down".
- :class:`KeyedAppender` and :class:`Sent`: ``send`` without its per-record
  bookkeeping, and the layout of a refused batch's future; :mod:`.records`: a
  record appended to an open batch without the builder's per-record checks.
- :mod:`.transactions_v2`: transactions v2 (KIP-890), which kafka-python lacks.
- :func:`producer_fenced`, :func:`producer_broken`, :func:`start_sending_offsets`,
  :func:`start_ending`, :func:`force_close`, :func:`unauthorized_topics`: state kafka-python keeps
  but does not expose, and waits it does not bound.
- :func:`leave_group_when_stopping`: a static member (KIP-345) that stops on
  its own hands its partitions over at once, not after the session timeout.
- :func:`quick_transactional_retries`: the sender's fixed 100 ms sleep before
  a transactional retry (CONCURRENT_TRANSACTIONS between back-to-back
  transactions), as the Java client's exponential back-off (KIP-580).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

import kafka
import kafka.errors as _kerr
import kafka.structs as _kstructs

from broker.kafka._kafka_python.records import append_record
from broker.kafka.exceptions import KafkaTimeoutError, translate, translated

PINNED_VERSION = "3.0.12"
#: True when the installed kafka-python is the version these pieces were written for.
PINNED = kafka.__version__ == PINNED_VERSION


def patch_lost_rejoin() -> None:
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

    ! The same cache has a second defect: a task that *finished* while no
    poll was waiting for it is thrown away (``is_done`` makes the loop send a
    fresh JoinGroup) although its SyncGroup answer is the current
    assignment. When every poll's timeout is shorter than a JoinGroup and
    SyncGroup round (a router polling every few ms on a busy broker), each
    round finishes unseen and starts the next: seen as 125 generations in
    60 s for a lone router, which routed nothing.

    The fix: a pending join task means the rejoin is not over, and a task
    that succeeded unseen is completed as the library's loop completes one
    (state STABLE, heartbeat on, ``_on_join_complete_async`` with its
    assignment) before the loop runs. A task that failed unseen still makes
    the library send a fresh JoinGroup (its error's side effects, such as a
    reset member id, were applied when it failed). The in-flight task came
    with https://github.com/dpkp/kafka-python/pull/2955 (join_group as
    ``async def``); guarded by tests/test_kafka_harness.py and
    tests/test_router_service.py (a lone router's first events).
    """
    if not PINNED:
        return
    from kafka.coordinator.base import BaseCoordinator
    from kafka.coordinator.consumer import ConsumerCoordinator
    from kafka.structs import MemberState

    original = ConsumerCoordinator.need_rejoin
    if getattr(original, "_safeshare_patched", False):
        return

    def need_rejoin(self: Any) -> bool:
        if getattr(self, "_join_task", None) is not None:
            return True
        return bool(original(self))

    need_rejoin._safeshare_patched = True  # type: ignore[attr-defined]
    ConsumerCoordinator.need_rejoin = need_rejoin

    original_join = BaseCoordinator.join_group_async

    async def join_group_async(self: Any, timeout_ms: Any = None) -> Any:
        task = self._join_task
        if task is not None and task.is_done and task.succeeded():
            # What join_group_async does after awaiting a successful task.
            self._join_task = None
            with self._lock:
                self.rejoining = False
                self.rejoin_needed = False
                self.state = MemberState.STABLE
                self._enable_heartbeat()
            generation = self._generation
            await self._on_join_complete_async(
                generation.generation_id, generation.member_id, generation.protocol, task.value
            )
        return await original_join(self, timeout_ms=timeout_ms)

    join_group_async._safeshare_patched = True  # type: ignore[attr-defined]
    join_group_async._safeshare_original = original_join  # type: ignore[attr-defined]
    BaseCoordinator.join_group_async = join_group_async


def patch_eager_positions() -> None:
    """Work around kafka-python 3.0.12 keeping positions across an eager rebalance.

    ! Under the EAGER protocol (range, roundrobin) every member gives up all
    its partitions when it rejoins; the Java client clears its assignment
    then (``onJoinPrepare``), so each partition assigned afterwards starts
    from the group's committed offset. kafka-python 3.0.12 keeps the
    ``TopicPartitionState`` (and its position) of every partition assigned
    to it again (``SubscriptionState._apply_assignment``). If this member
    was out of the group meanwhile (removed, or its generation went stale)
    and another member routed and committed the partition, it carries on
    from its old position and re-reads what was already routed: seen on a
    broker with a router crash-looping (tests/test_router_crashloop.py; the
    router's duplicate check caught every replayed event). The fix: under
    EAGER, the assignment is cleared as a join completes, so every assigned
    partition's position is fetched from the committed offsets
    (``require_stable``, KIP-447), as in the Java client.
    """
    if not PINNED:
        return
    from kafka.coordinator.assignors.abstract import RebalanceProtocol
    from kafka.coordinator.consumer import ConsumerCoordinator

    original = ConsumerCoordinator._on_join_complete_async
    if getattr(original, "_safeshare_patched", False):
        return

    async def _on_join_complete_async(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self._rebalance_protocol == RebalanceProtocol.EAGER:
            self._subscription.assignment.clear()
        return await original(self, *args, **kwargs)

    _on_join_complete_async._safeshare_patched = True  # type: ignore[attr-defined]
    ConsumerCoordinator._on_join_complete_async = _on_join_complete_async


class AuthFailureRecorder:
    """A kafka-python ``kafka_client`` factory that notices refused logins.

    ! When a broker refuses a client's login, kafka-python 3.0.12 keeps
    retrying until ``bootstrap_timeout_ms`` and then raises only
    ``KafkaTimeoutError("Unable to bootstrap ...")``, exactly as if the
    broker were down; the SASL error is only logged. This factory builds the
    library's own client, but hooks each connection's setup future so the
    error is kept and a wrong password says so. Best effort: the broker
    answers a bad SCRAM proof and closes the connection, and kafka-python
    sometimes notices only the close. The connection manager keeps such errors
    since https://github.com/dpkp/kafka-python/pull/2994, but bootstrap still
    reports only the timeout. Under another kafka-python version
    :func:`client_factory` gives None: the plain client and the old message.
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


def client_factory() -> AuthFailureRecorder | None:
    """The ``kafka_client`` factory for a new client, or None under another version."""
    return AuthFailureRecorder() if PINNED else None


def producer_fenced(raw: Any) -> bool:
    """Whether ``raw`` (a KafkaProducer) was fenced: its later calls raise a plain
    KafkaError ("... in an error state: ProducerFencedError"), the cause only in
    the transaction manager's ``last_error`` (no upstream issue; the Java client
    raises ProducerFencedException again). False under another version."""
    if not PINNED:
        return False
    last = getattr(getattr(raw, "_transaction_manager", None), "last_error", None)
    fenced = (_kerr.ProducerFencedError, _kerr.InvalidProducerEpochError)
    return isinstance(last, fenced) or (isinstance(last, type) and issubclass(last, fenced))


def producer_broken(raw: Any) -> bool:
    """Whether ``raw`` (a KafkaProducer) will send nothing more: kafka-python's
    idempotent producer moves to a fatal state after any record the broker
    refuses for good (MESSAGE_TOO_LARGE, TOPIC_AUTHORIZATION_FAILED, ...), and
    fails every later record with that error until it is replaced; its
    ``classify_batch_error`` says it "just fails the batch" but returns FATAL
    (the Java client goes on sending). False under another version."""
    if not PINNED:
        return False
    manager = getattr(raw, "_transaction_manager", None)
    return manager is not None and bool(manager.has_fatal_error())


def start_sending_offsets(raw: Any, offsets: dict[Any, Any], group: Any) -> Any | None:
    """Enqueue ``send_offsets_to_transaction`` as ``KafkaProducer`` does, without
    blocking on it: the pending result (its ``wait()`` blocks), or None under
    another version (then the caller uses the blocking method). The Java client
    blocks too (KIP-447); kafka-python's transaction manager orders the request
    before the commit, so waiting later is safe.

    ! Then waits, at most :data:`HANDOVER_S`, until the sender thread has taken
    the request off its queue. Woken, that thread still needs the GIL, which a
    caller about to route a batch holds for milliseconds: the request left
    3.3 ms after it was queued, and its answer held back the Produce (median
    transaction, ``bench router --only cycle``). Handed over, it leaves after
    0.5 ms and is answered while the batch is routed.
    """
    manager = getattr(raw, "_transaction_manager", None)
    sender = getattr(raw, "_sender", None)
    if not PINNED or manager is None or sender is None:
        return None
    result = manager.send_offsets_to_transaction(offsets, group)
    sender.wakeup()
    deadline = time.monotonic() + HANDOVER_S
    while manager._pending_requests and time.monotonic() < deadline:
        time.sleep(HANDOVER_POLL_S)  # lets the sender thread have the GIL
    return result


#: How long :func:`start_sending_offsets` waits for the sender to take the
#: offsets (0: not at all). Bounded: with no coordinator known (the first
#: transaction) or the broker away, it waits this long and goes on.
HANDOVER_S = 0.002
HANDOVER_POLL_S = 0.00005


def start_ending(raw: Any, commit: bool) -> Any | None:
    """Begin ``raw``'s commit (or abort) as ``KafkaProducer.commit_transaction``
    does, without its unbounded wait: the pending result (``wait(timeout_ms)``),
    or None under another version. Same requests, same order; only the caller's
    wait is bounded (kafka-python's own waits have no timeout)."""
    manager = getattr(raw, "_transaction_manager", None)
    sender = getattr(raw, "_sender", None)
    if not PINNED or manager is None or sender is None:
        return None
    result = manager.begin_commit() if commit else manager.begin_abort()
    sender.wakeup()
    return result


def force_close(raw: Any) -> None:
    """Close ``raw`` (a KafkaProducer) whose ``close`` timed out.

    ! kafka-python's close flushes first and raises when that times out, leaving
    the producer open (and closing it again, with a traceback, when it is
    garbage-collected). Under another version nothing is forced.
    """
    if not PINNED:
        return
    sender = getattr(raw, "_sender", None)
    if sender is not None and sender.is_alive():
        sender.force_close()
        sender.join(1.0)
    raw._closed = True


def leave_group_when_stopping(raw: Any) -> bool:
    """Make ``raw`` (a KafkaConsumer with ``group_instance_id``) leave its group
    whenever it stops on its own: ``close``, ``unsubscribe``, or its poll loop
    stalled past ``max_poll_interval_ms``.

    ! kafka-python, like the Java client, sends no LeaveGroup for a static
    member (KIP-345; "TODO: handle static member case" at the poll timeout):
    its partitions stay with it until the session timeout, so a router stopped
    on purpose, a one-shot ``safeshare route`` or a stalled router leaves them
    unread that long. Taken for a dynamic member when leaving, it sends
    LeaveGroup v3+ naming its ``group_instance_id``, which removes the static
    member at once. A crash sends nothing: its partitions wait for its restart
    (no rebalance), up to the session timeout. False (nothing done) for a
    dynamic member or under another version.
    """
    coordinator = getattr(raw, "_coordinator", None)
    if not PINNED or coordinator is None or coordinator.group_instance_id is None:
        return False
    coordinator.is_dynamic_member = lambda: True
    return True


def unauthorized_topics(raw: Any) -> set[str]:
    """Topics the broker refused ``raw`` (a KafkaConsumer) in its last metadata.

    ! kafka-python raises TopicAuthorizationFailedError for a group subscription,
    but a consumer without a group (``assign``) whose topic the broker's ACLs
    hide just polls nothing, forever; the refusal is only logged (as in the Java
    client before https://issues.apache.org/jira/browse/KAFKA-3727). Empty under
    another version.
    """
    if not PINNED:
        return set()
    cluster = getattr(getattr(raw, "_client", None), "cluster", None)
    return set(getattr(cluster, "unauthorized_topics", None) or ())


def raise_if_record_failed(raw: Any) -> None:
    """After a flush: return if a record's future (kafka-python's) says it was
    written, else raise why not (a record still pending raises a timeout)."""
    if raw.is_done and not raw.failed():
        return
    with translated("send"):
        raw.get(timeout=0)


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

    Upstream: ``KafkaProducer.send``'s cost per record,
    https://github.com/dpkp/kafka-python/issues/1877 (closed without a change).
    Under another kafka-python version :meth:`for_producer` returns None and the
    caller uses ``send``. It also declines a record (returns None) when the topic's
    metadata is not yet known or the record may be near ``max_request_size``:
    ``send`` waits for the one and raises the right error for the other.
    """

    __slots__ = ("_raw", "_partitions_for", "_hash", "_append", "_wakeup", "_manager",
                 "_tps", "_added", "_max_bytes", "_acc")

    #: Bytes a record may take beyond key, value and headers (varints, attributes).
    RECORD_OVERHEAD = 64

    def __init__(self, raw: Any, key_hash: Callable[[bytes], int]) -> None:
        self._raw = raw
        self._partitions_for = raw._metadata.partitions_for_topic
        self._hash = key_hash
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
        if not PINNED:
            return None
        # The partitioner must place keyed records as this appender does
        # (broker.kafka.producer.KeyHashCachingPartitioner has key_hash).
        key_hash = getattr(getattr(raw, "config", {}).get("partitioner"), "key_hash", None)
        if key_hash is None:
            return None
        return cls(raw, key_hash)

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
        the partition's lock, as ``RecordAccumulator.append`` does (the bytes of
        kafka-python's builder, written by :mod:`.records`), but without a
        ``FutureRecordMetadata``: its batch is noted instead, and the batch's
        own future says after the flush whether the broker wrote it. kafka-python
        makes a future per record and its sender completes each with callbacks;
        a router needs neither the offsets nor the callbacks, only to know that
        everything was written before it commits. A record that needs a new
        batch goes through kafka-python's append (which makes the batch; the
        sender is woken once, after the last record), one this appender
        declines through ``send``; both give a record future, checked as well.
        """
        acc = self._acc
        if acc._closed:
            raise _kerr.IllegalStateError("RecordAccumulator is closed")
        partitions_for, partition = self._partitions_for, self._partition
        max_bytes = self._max_bytes
        queues, tp_lock = acc._batches, acc._tp_lock
        batches, futures = sent.batches, sent.futures
        no_headers: list[tuple[str, bytes]] = []
        append, wake = self._append, False
        now_ms = int(time.time() * 1000)  # the records' CreateTime: sent together
        known: dict[str, Any] = {}
        # While this runs an append is in progress (kafka-python's abort of a
        # force-closed producer waits for appends to finish).
        acc._appends_in_progress.increment()
        try:
            for topic, key, value in records:
                partitions = known.get(topic)  # the metadata's set, once per topic and call
                if partitions is None:
                    partitions = known[topic] = partitions_for(topic)
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
                            if append_record(batch.records, now_ms, key, value):
                                batches[id(batch)] = batch
                                continue
                # A new batch: kafka-python's append; the sender is woken once at
                # the end, not per new batch (each wake-up is a system call,
                # and the partitions of the whole run then go to the coordinator
                # in one AddPartitionsToTxn instead of several in turn).
                future, full, new, _ = append(tp, now_ms, key, value, no_headers)
                futures.append(future)
                wake = wake or full or new
        finally:
            acc._appends_in_progress.decrement()
            if wake:
                self._wakeup()


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
            # (FutureRecordMetadata._produce_success, since
            # https://github.com/dpkp/kafka-python/pull/2661); failed if it is set.
            record_error = future.value[2]
            if record_error is not None:
                raise translate(record_error(0))
        for raw in self.futures:
            raise_if_record_failed(raw)


class RetryPauses:
    """How often, and for how long, a producer paused before retrying a
    transactional request (``python -m bench router --only cycle``)."""

    __slots__ = ("count", "seconds")

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0


def quick_transactional_retries(raw: Any, first_ms: float) -> RetryPauses | None:
    """Retry a producer's transactional requests after a short, growing pause.

    ! When one transaction follows straight on another, the broker answers the
    next AddOffsetsToTxn / AddPartitionsToTxn with CONCURRENT_TRANSACTIONS
    until the previous commit's markers are written (a few ms). kafka-python
    3.0.12's sender then sleeps the whole ``retry_backoff_ms`` (100 ms by
    default) before the retry, holding back every produce request meanwhile,
    and ignores the 20 ms its own AddPartitions handler asks for (the Java
    client sleeps the handler's back-off). Here the pause before a retried
    transactional request starts at ``first_ms`` (the producer module's
    ``TXN_RETRY_BACKOFF_MS``) and doubles with each retry of that request
    up to ``retry_backoff_ms``, as the Java client's exponential
    ``retry.backoff.ms`` / ``retry.backoff.max.ms`` (KIP-580). Produce
    retries, metadata and coordinator look-ups keep ``retry_backoff_ms``.

    Tied to kafka-python 3.0.12 internals: None (nothing changed) when they
    are not there; else the pauses, counted.
    """
    manager = getattr(raw, "_transaction_manager", None)
    sender = getattr(raw, "_sender", None)
    if (not PINNED or manager is None or sender is None
            or not manager.is_transactional()):
        return None
    cap_s = float(sender.config["retry_backoff_ms"]) / 1000
    first_s = min(first_ms / 1000, cap_s)
    dequeue = manager.next_request_handler
    pauses = RetryPauses()

    def next_request_handler(has_incomplete_batches: bool) -> Any:
        handler = dequeue(has_incomplete_batches)
        if handler is not None and handler.is_retry:
            # The sender sleeps retry_backoff_ms before a handler marked as a
            # retry: this pause replaces that sleep.
            retries = getattr(handler, "_safeshare_retries", 0)
            handler._safeshare_retries = retries + 1
            pause = min(cap_s, first_s * 2 ** min(retries, 16))
            time.sleep(pause)
            handler._is_retry = False
            pauses.count += 1
            pauses.seconds += pause
        return handler

    manager.next_request_handler = next_request_handler
    return pauses
