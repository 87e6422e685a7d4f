"""Transactions v2 (KIP-890 part 2) for kafka-python 3.0.12's transactional producer.

! kafka-python 3.0.12 drives transactions v1 only: before a transaction's first
record to a partition it sends AddPartitionsToTxn, and before its offsets
AddOffsetsToTxn, each a round trip to the transaction coordinator that every
Produce and TxnOffsetCommit waits for. A transaction is then five round trips
in a row (docs/PERFORMANCE.md, 13th session). A cluster whose finalized
``transaction.version`` is 2 or more (Kafka 4.0+ formats new clusters so) lets
Produce v12 and TxnOffsetCommit v5 add their partitions themselves, and ends
each transaction with EndTxn v5, which bumps the producer epoch and returns it:
every transaction runs under an epoch of its own, so a zombie's late write is
fenced by the very next transaction.

:func:`use_transactions_v2` does for one producer what the Java client 4.x
does when ``isTransactionV2Enabled()`` (``TransactionManager.maybeAddPartition``,
``sendOffsetsToTransaction``, ``EndTxnHandler.handleResponse``,
``Sender.sendProduceRequest``): partitions join the transaction locally, the
offsets go straight to the group coordinator as TxnOffsetCommit v5, Produce is
sent as v12, and the epoch EndTxn v5 returns replaces the old one with every
partition's sequence back at 0. Requests, handlers and error handling are
otherwise kafka-python's own. kafka-python has no issue open for it; another
client's port of the same change is https://github.com/IBM/sarama/pull/3595.

Behind :data:`~broker.kafka._kafka_python.PINNED`; tests/test_kafka_python_pin.py
checks the internals it uses, tests/test_kafka_transactions_v2.py shows it on a
broker (commit, abort, offsets, fencing).
"""

from __future__ import annotations

import logging
from typing import Any

import kafka.errors as _kerr

try:
    import kafka.producer.transaction_manager as _tm
except ImportError:  # another kafka-python layout (PINNED is False there)
    _tm = None

from broker.kafka._kafka_python import PINNED

log = logging.getLogger(__name__)

#: The finalized ``transaction.version`` from which the cluster accepts these requests.
TRANSACTION_VERSION_V2 = 2
#: Produce v12 is v11 for a cluster on transactions v2. v13 names topics by id,
#: which kafka-python 3.0.12 does not track, so it is never sent.
PRODUCE_VERSION = 12
#: TxnOffsetCommit v5: the group coordinator adds the offsets partition itself.
TXN_OFFSET_COMMIT_VERSION = 5
#: EndTxn v5: the coordinator bumps the epoch and answers with it.
END_TXN_VERSION = 5


def finalized_transaction_version(admin: Any) -> int:
    """The cluster's finalized ``transaction.version`` (0 when it has none), read
    with ``admin`` (a KafkaAdminClient) from an ApiVersions answer: no ACL needed."""
    finalized = admin.describe_features().get("transaction.version", {}).get("finalized")
    return int(finalized[1]) if finalized else 0


def _pin(request: Any, version: int) -> Any:
    """Send ``request`` as ``version`` only. A broker without it refuses the
    request (IncompatibleBrokerVersion) rather than have it go as v1, which the
    coordinator would refuse."""
    request._min_version = request._max_version = version
    return request


if PINNED:  # subclasses of kafka-python 3.0.12's handlers; none under another version

    class _TxnOffsetCommitV2(_tm.TxnOffsetCommitHandler):  # type: ignore[misc]
        """TxnOffsetCommit v5, sent without AddOffsetsToTxn before it."""

        def _build_request(self) -> Any:
            return _pin(super()._build_request(), TXN_OFFSET_COMMIT_VERSION)

        def handle_response(self, response: Any) -> None:
            # TRANSACTION_ABORTABLE (KIP-890: the implicit add failed, e.g. the
            # coordinator is aborting the transaction): abort, as the Java client
            # does; kafka-python takes the unknown code for fatal.
            codes = {code for _topic, partitions in response.topics for _p, code in partitions}
            if _kerr.TransactionAbortableError.errno in codes:
                self.abortable_error(_kerr.TransactionAbortableError())
                return
            super().handle_response(response)


    class _EndTxnV2(_tm.EndTxnHandler):  # type: ignore[misc]
        """EndTxn v5: the epoch it answers with replaces the producer's."""

        def __init__(self, transaction_manager: Any, committed: bool) -> None:
            super().__init__(transaction_manager, committed)
            self.committed = committed
            _pin(self.request, END_TXN_VERSION)

        def handle_response(self, response: Any) -> None:
            # Called with the manager's lock held. The next transaction's batches
            # are drained after this (no record is appended between begin_commit
            # and the end), so each is stamped with the new epoch.
            manager = self.transaction_manager
            if response.error_code == 0 and response.producer_id != -1:
                manager.producer_id_and_epoch = _tm.ProducerIdAndEpoch(
                    response.producer_id, response.producer_epoch)
                manager._sequence_numbers.clear()
                manager._last_acked_offset.clear()
                log.debug("transaction ended; producer id %s, epoch %s",
                          response.producer_id, response.producer_epoch)
            elif response.error_code == _kerr.TransactionAbortableError.errno:
                # As the Java client: a commit is aborted instead; an abort that
                # meets it again would loop, so it is fatal.
                if self.committed:
                    self.abortable_error(_kerr.TransactionAbortableError())
                else:
                    self.fatal_error(_kerr.KafkaError("Failed to abort transaction: "
                                                      "TRANSACTION_ABORTABLE"))
                return
            super().handle_response(response)


def use_transactions_v2(raw: Any) -> bool:
    """Make ``raw`` (a transactional KafkaProducer, before its first transaction)
    use transactions v2. The caller has checked the cluster
    (:func:`finalized_transaction_version`). False (nothing changed) under
    another kafka-python version or for a producer without transactions."""
    manager: Any = getattr(raw, "_transaction_manager", None)
    sender: Any = getattr(raw, "_sender", None)
    if not PINNED or manager is None or sender is None or not manager.is_transactional():
        return False

    def maybe_add_partition_to_transaction(tp: Any) -> None:
        with manager._lock:
            manager._fail_if_not_ready_for_send()
            manager._partitions_in_transaction.add(tp)
            manager._transaction_started = True

    def send_offsets_to_transaction(offsets: Any, group_metadata: Any) -> Any:
        if isinstance(group_metadata, str):  # as the library's: a bare group id
            group_metadata = _tm.ConsumerGroupMetadata(group_id=group_metadata)
        with manager._lock:
            manager._ensure_transactional()
            manager._maybe_fail_with_error()
            if manager._current_state != _tm.TransactionState.IN_TRANSACTION:
                raise _kerr.KafkaError(
                    "Cannot send offsets to transaction because the"
                    " producer is not in an active transaction"
                )
            pending = manager._pending_txn_offset_commits
            pending.update(offsets)
            handler = _TxnOffsetCommitV2(
                manager, group_metadata, pending, _tm.TransactionalRequestResult()
            )
            manager._enqueue_request(handler)
            manager._transaction_started = True
            return handler.result

    def begin_completing_transaction(committed: bool) -> Any:
        # The library's also sends AddPartitionsToTxn for partitions not yet
        # added; under v2 none are ever waiting to be.
        handler = _EndTxnV2(manager, committed)
        manager._enqueue_request(handler)
        return handler.result

    classify = manager.classify_batch_error

    def classify_batch_error(error: Any, batch: Any, log_start_offset: int = -1) -> Any:
        # ! kafka-python answers a refused batch's INVALID_PRODUCER_EPOCH,
        # UNKNOWN_PRODUCER_ID or OUT_OF_ORDER_SEQUENCE with a client-side epoch
        # bump (KIP-360: InitProducerId with its own id and epoch). Under v2 the
        # Java client never does (needToTriggerEpochBumpFromClient): the
        # transaction is aborted instead, and the abort's EndTxn bumps the
        # epoch, or finds the producer fenced. Here a zombie's first late
        # Produce is what meets INVALID_PRODUCER_EPOCH (no AddPartitionsToTxn
        # is refused before it), and its bump must not reach the coordinator.
        outcome = classify(error, batch, log_start_offset)
        if outcome == manager.ERROR_CLASS_NEEDS_EPOCH_BUMP:
            return manager.ERROR_CLASS_ABORTABLE
        return outcome

    build_produce_request = sender._produce_request

    def produce_request(node_id: int, acks: int, timeout: int, batches: Any) -> Any:
        return _pin(build_produce_request(node_id, acks, timeout, batches), PRODUCE_VERSION)

    manager.maybe_add_partition_to_transaction = maybe_add_partition_to_transaction
    manager.send_offsets_to_transaction = send_offsets_to_transaction
    manager._begin_completing_transaction = begin_completing_transaction
    manager.classify_batch_error = classify_batch_error
    sender._produce_request = produce_request
    return True
