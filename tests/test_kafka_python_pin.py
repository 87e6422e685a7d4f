"""kafka-python still behaves as broker.kafka._kafka_python assumes (no broker needed).

One test per workaround: each fails when the installed kafka-python no longer
has the internals or the behaviour its workaround was written for, so that a
version bump is a decision to re-check them, not a silent change. The broker
tests that show each symptom end to end are named in the module.
"""

from __future__ import annotations

import inspect
import re
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kafka
import kafka.errors as kerr
import pytest
from kafka.coordinator.base import BaseCoordinator
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.producer.future import FutureRecordMetadata
from kafka.producer.producer_batch import ProducerBatch
from kafka.producer.record_accumulator import RecordAccumulator
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.structs import TopicPartition

from broker.kafka import _kafka_python as kp
from broker.kafka import consumer as _consumer  # noqa: F401 - importing it patches the rejoin
from broker.kafka.exceptions import KafkaError, KafkaTimeoutError

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_kafka_python_is_the_pinned_one() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"kafka-python=={kp.PINNED_VERSION}" in deps
    assert kafka.__version__ == kp.PINNED_VERSION
    assert kp.PINNED


# -- the lost rejoin (tests/test_kafka_harness.py shows it on a broker) ---------------------
def test_a_join_task_left_in_flight_is_still_only_awaited_while_need_rejoin() -> None:
    source = inspect.getsource(BaseCoordinator.join_group_async._safeshare_original)
    assert "while self.need_rejoin():" in source
    assert "leave self._join_task in flight" in source  # kept across a poll timeout


def test_a_join_task_that_finished_unseen_is_completed_as_the_library_would() -> None:
    patched = BaseCoordinator.join_group_async
    assert getattr(patched, "_safeshare_patched", False)
    source = inspect.getsource(patched._safeshare_original)
    # The library throws a finished task away ...
    assert "if self._join_task is None or self._join_task.is_done:" in source
    # ... and after awaiting one does exactly what the patch does for it.
    success = "            self._join_task = None\n\n            with self._lock:"
    tail = source[source.index(success):]
    for line in ("self.rejoining = False", "self.rejoin_needed = False",
                 "self.state = MemberState.STABLE", "self._enable_heartbeat()",
                 "await self._on_join_complete_async(", "self._generation.generation_id,",
                 "self._generation.member_id,", "self._generation.protocol,",
                 "assignment_bytes)"):
        assert line in tail, line


def test_a_pending_join_task_means_the_rejoin_is_not_over() -> None:
    assert getattr(ConsumerCoordinator.need_rejoin, "_safeshare_patched", False)
    pending = SimpleNamespace(_join_task=object())
    assert ConsumerCoordinator.need_rejoin(pending) is True


# -- the keyed appender (tests/test_kafka_send_path.py on a broker) ------------------------
def _batch(tp: TopicPartition, batch_size: int = 1024) -> ProducerBatch:
    return ProducerBatch(tp, MemoryRecordsBuilder(2, 0, batch_size))


def test_the_accumulator_appends_as_the_appender_expects() -> None:
    acc = RecordAccumulator(batch_size=1024)
    assert not acc._closed and acc._appends_in_progress.get() == 0
    tp = TopicPartition("t", 0)
    future, full, new_batch, aborted = acc.append(tp, None, b"k", b"v", [])
    assert isinstance(future, FutureRecordMetadata) and new_batch and not full and not aborted
    queue = acc._batches[tp]
    with acc._tp_lock(tp):
        assert queue[-1].records.append(None, b"k", b"v", []) is not None
    # A record that does not fit the open batch is refused, not appended.
    assert queue[-1].records.append(None, b"k", b"x" * 4096, []) is None


# -- the future of a refused batch ---------------------------------------------------------
def test_a_refused_batch_completes_with_success_carrying_the_record_errors() -> None:
    batch = _batch(TopicPartition("t", 0))
    record_future = batch.try_append(None, b"k", b"v", [])
    refused = kerr.InvalidRecordError("record 0 refused")
    batch.complete_exceptionally(refused, lambda index: refused)
    future = batch.produce_future
    assert future.is_done and future.succeeded()  # the quirk kp.Sent works around
    assert future.value[2](0) is refused
    assert record_future.failed()  # while the record's own future failed

    sent = kp.Sent()
    sent.batches[id(batch)] = batch
    with pytest.raises(KafkaError, match="record 0 refused"):
        sent.raise_if_failed()


def test_an_unflushed_batch_is_not_taken_for_written() -> None:
    sent = kp.Sent()
    batch = _batch(TopicPartition("t", 1))
    sent.batches[id(batch)] = batch
    with pytest.raises(KafkaTimeoutError, match=r"t\[1\] is not acknowledged"):
        sent.raise_if_failed()
    batch.complete(5, -1)
    sent.raise_if_failed()


# -- state kafka-python keeps but does not expose ------------------------------------------
def test_a_fenced_producer_is_known_by_its_transaction_managers_last_error() -> None:
    from kafka.producer.transaction_manager import TransactionManager

    manager = TransactionManager(transactional_id="x")
    assert manager.last_error is None
    manager._last_error = kerr.ProducerFencedError()
    assert kp.producer_fenced(SimpleNamespace(_transaction_manager=manager))
    assert not kp.producer_fenced(SimpleNamespace(_transaction_manager=TransactionManager()))


def test_an_idempotent_producer_is_broken_by_a_record_refused_for_good() -> None:
    from kafka.producer.transaction_manager import TransactionManager

    manager = TransactionManager()  # idempotent, not transactional
    assert not kp.producer_broken(SimpleNamespace(_transaction_manager=manager))
    # The defect worked around: a refused record is fatal to the whole producer.
    assert manager.classify_batch_error(kerr.MessageSizeTooLargeError, None) == (
        manager.ERROR_CLASS_FATAL)
    manager.transition_to_fatal_error(kerr.MessageSizeTooLargeError())
    assert kp.producer_broken(SimpleNamespace(_transaction_manager=manager))
    assert not kp.producer_broken(SimpleNamespace(_transaction_manager=None))


def test_offsets_are_sent_through_the_transaction_manager_without_blocking() -> None:
    from kafka.producer.transaction_manager import TransactionManager

    params = list(inspect.signature(TransactionManager.send_offsets_to_transaction).parameters)
    assert params == ["self", "offsets", "group_metadata"]
    assert "self._enqueue_request(handler)" in inspect.getsource(
        TransactionManager.send_offsets_to_transaction)
    assert "heapq.heappop(self._pending_requests)" in inspect.getsource(
        TransactionManager.next_request_handler)  # the sender takes it off this queue
    calls: list[Any] = []
    pending: list[str] = []

    def enqueue(offsets: Any, group: Any) -> str:
        calls.append((offsets, group))
        pending.append("request")
        return "r"

    manager = SimpleNamespace(send_offsets_to_transaction=enqueue, _pending_requests=pending)
    # The sender thread takes the request as soon as it is woken: no wait after that.
    raw = SimpleNamespace(_transaction_manager=manager, _sender=SimpleNamespace(
        wakeup=lambda: calls.append("wakeup") or pending.clear()))
    assert kp.start_sending_offsets(raw, {"tp": 1}, "group") == "r"
    assert calls == [({"tp": 1}, "group"), "wakeup"]
    # A sender that does not take it (no coordinator yet, broker away): the
    # hand-over gives up after HANDOVER_S, the request stays queued.
    raw._sender = SimpleNamespace(wakeup=lambda: None)
    started = time.monotonic()
    assert kp.start_sending_offsets(raw, {"tp": 2}, "group") == "r"
    assert pending == ["request"] and time.monotonic() - started < kp.HANDOVER_S + 0.5


def test_refused_topics_are_in_the_cluster_metadata() -> None:
    from kafka.cluster import ClusterMetadata

    cluster = ClusterMetadata()
    assert cluster.unauthorized_topics == set()
    cluster.unauthorized_topics.add("secret")
    assert kp.unauthorized_topics(SimpleNamespace(_client=SimpleNamespace(cluster=cluster))) == {
        "secret"
    }


def test_the_login_recorder_can_build_the_librarys_own_client() -> None:
    from kafka.net.compat import KafkaNetClient
    from kafka.net.manager import KafkaConnectionManager

    assert {"net", "manager"} <= set(inspect.signature(KafkaNetClient.__init__).parameters)
    assert callable(KafkaConnectionManager.get_connection)
    source = inspect.getsource(KafkaConnectionManager)
    assert re.search(r"Unable to bootstrap from", source)  # still the only bootstrap error


def test_a_transaction_is_ended_through_the_transaction_manager() -> None:
    from kafka.producer.sender import Sender
    from kafka.producer.transaction_manager import TransactionManager

    assert callable(TransactionManager.begin_commit) and callable(TransactionManager.begin_abort)
    assert callable(Sender.wakeup) and callable(Sender.force_close)
    calls: list[str] = []
    manager = SimpleNamespace(begin_commit=lambda: calls.append("commit") or "r",
                              begin_abort=lambda: calls.append("abort") or "r")
    raw = SimpleNamespace(_transaction_manager=manager,
                          _sender=SimpleNamespace(wakeup=lambda: calls.append("wakeup")))
    assert kp.start_ending(raw, True) == "r" and kp.start_ending(raw, False) == "r"
    assert calls == ["commit", "wakeup", "abort", "wakeup"]


def test_a_retried_transactional_request_sleeps_only_where_the_pause_replaces_it() -> None:
    """quick_transactional_retries replaces the sender's fixed sleep before a
    handler marked ``is_retry``: that sleep, the flag and the dequeue must be there."""
    from kafka.producer import sender
    from kafka.producer.transaction_manager import TransactionManager, TxnRequestHandler

    source = inspect.getsource(sender.Sender)
    assert "if next_request_handler.is_retry:" in source
    assert "time.sleep(self.config['retry_backoff_ms'] / 1000)" in source
    assert callable(TransactionManager.next_request_handler)
    assert isinstance(inspect.getattr_static(TxnRequestHandler, "is_retry"), property)
    handler = SimpleNamespace(is_retry=True, _is_retry=True)
    manager = SimpleNamespace(is_transactional=lambda: True,
                              next_request_handler=lambda incomplete: handler)
    raw = SimpleNamespace(_transaction_manager=manager,
                          _sender=SimpleNamespace(config={"retry_backoff_ms": 100}))
    pauses = kp.quick_transactional_retries(raw, 1.0)
    assert pauses is not None
    assert raw._transaction_manager.next_request_handler(False) is handler
    assert handler._is_retry is False and pauses.count == 1 and pauses.seconds < 0.01


# -- a static member leaves when closed (tests/test_router_crashloop.py on a broker) --------
def test_a_static_member_sends_leave_group_only_when_taken_for_a_dynamic_one() -> None:
    """Every deliberate leave (close, unsubscribe, the poll timeout) asks is_dynamic_member."""
    from kafka.consumer.group import KafkaConsumer

    leave = inspect.getsource(BaseCoordinator.maybe_leave_group_async)
    assert "self.is_dynamic_member()" in leave
    assert "group_instance_id=self.group_instance_id" in leave  # LeaveGroup v3+ names it
    assert "self.maybe_leave_group(" in inspect.getsource(BaseCoordinator.close)
    assert "await self.maybe_leave_group_async()" in inspect.getsource(
        BaseCoordinator._heartbeat_loop
    )
    assert "self._coordinator = ConsumerCoordinator(" in inspect.getsource(KafkaConsumer.__init__)

    static = SimpleNamespace(group_instance_id="r1", is_dynamic_member=lambda: False)
    assert kp.leave_group_when_stopping(SimpleNamespace(_coordinator=static))
    assert static.is_dynamic_member()
    dynamic = SimpleNamespace(group_instance_id=None, is_dynamic_member=lambda: True)
    assert not kp.leave_group_when_stopping(SimpleNamespace(_coordinator=dynamic))


# -- eager rebalances keep positions (tests/test_router_crashloop.py on a broker) ----------
def test_an_eager_join_keeps_positions_unless_the_assignment_is_cleared_first() -> None:
    from kafka.consumer.subscription_state import SubscriptionState
    from kafka.coordinator.assignors.abstract import RebalanceProtocol

    source = inspect.getsource(SubscriptionState._apply_assignment)
    assert "if tp not in self.assignment" in source  # kept partitions keep their state
    complete = inspect.getsource(ConsumerCoordinator._on_join_complete_async)
    assert getattr(ConsumerCoordinator._on_join_complete_async, "_safeshare_patched", False)
    assert "original(self, *args, **kwargs)" in complete
    cells = ConsumerCoordinator._on_join_complete_async.__closure__ or ()
    original = next(
        inspect.getsource(c.cell_contents) for c in cells
        if getattr(c.cell_contents, "__name__", "") == "_on_join_complete_async"
    )
    assert "self._subscription.assign_from_subscribed(assignment.partitions())" in original
    assert "if self._rebalance_protocol == RebalanceProtocol.COOPERATIVE:" in original

    state = SubscriptionState()
    state.subscribe(topics=["t"])
    tp = TopicPartition("t", 0)
    state.assign_from_subscribed([tp])
    state.seek(tp, 85)
    state.assign_from_subscribed([tp])
    assert state.assignment[tp].position.offset == 85  # the library keeps it ...
    state.assignment.clear()
    state.assign_from_subscribed([tp])
    assert not state.assignment[tp].has_valid_position  # ... unless cleared: committed refetched
    assert RebalanceProtocol.EAGER != RebalanceProtocol.COOPERATIVE


# -- transactions v2 (tests/test_kafka_transactions_v2.py on a broker) ----------------------
def test_the_library_still_drives_transactions_v1_only() -> None:
    """When kafka-python drives KIP-890 itself, transactions_v2 is to be retired."""
    from kafka.producer import sender
    from kafka.producer.transaction_manager import EndTxnHandler, TxnOffsetCommitHandler

    assert "max_version=3" in inspect.getsource(EndTxnHandler.__init__)
    assert "max_version=3" in inspect.getsource(TxnOffsetCommitHandler._build_request)
    assert "max_version = 9" in inspect.getsource(sender.Sender._produce_request)
    assert "producer_id" not in inspect.getsource(EndTxnHandler.handle_response)


def test_the_protocol_has_the_v2_request_versions() -> None:
    from kafka.protocol.producer import (
        EndTxnRequest,
        EndTxnResponse,
        ProduceRequest,
        TxnOffsetCommitRequest,
    )

    from broker.kafka._kafka_python import transactions_v2 as tv2

    assert ProduceRequest.max_version >= tv2.PRODUCE_VERSION
    assert EndTxnRequest.max_version >= tv2.END_TXN_VERSION
    assert TxnOffsetCommitRequest.max_version >= tv2.TXN_OFFSET_COMMIT_VERSION
    fields = {f["name"]: f["versions"] for f in EndTxnResponse.json["fields"]}
    assert fields["ProducerId"] == fields["ProducerEpoch"] == "5+"
    request = EndTxnRequest(transactional_id="t", producer_id=1, producer_epoch=0,
                            committed=True, max_version=3)
    request._min_version = request._max_version = 5  # how transactions_v2 pins a version
    assert (request._min_version, request._max_version) == (5, 5)


def test_the_transaction_manager_has_what_v2_replaces_and_sets() -> None:
    from kafka.producer.sender import Sender
    from kafka.producer.transaction_manager import TransactionManager

    manager = TransactionManager(transactional_id="t", api_version=(4, 1))
    for name in ("_partitions_in_transaction", "_transaction_started",
                 "_pending_txn_offset_commits", "_sequence_numbers", "_last_acked_offset",
                 "_new_partitions_in_transaction", "producer_id_and_epoch", "_lock",
                 "_current_state"):
        assert hasattr(manager, name), name
    for name in ("_begin_completing_transaction", "_fail_if_not_ready_for_send",
                 "_ensure_transactional", "_maybe_fail_with_error", "_enqueue_request",
                 "_add_partitions_to_transaction_handler", "classify_batch_error",
                 "maybe_add_partition_to_transaction", "send_offsets_to_transaction"):
        assert callable(getattr(manager, name)), name
    assert "EndTxnHandler(self, committed)" in inspect.getsource(
        TransactionManager._begin_completing_transaction)
    # Each is looked up on the instance where it is called, so the per-producer
    # replacement is the one used.
    assert "self._transaction_manager.maybe_add_partition_to_transaction(tp)" in (
        inspect.getsource(kafka.KafkaProducer))
    assert "self._produce_request(" in inspect.getsource(Sender)
    assert "classify_batch_error(" in inspect.getsource(Sender)
    assert "self._transaction_manager.bump_producer_id_and_epoch()" in inspect.getsource(Sender)
    error = kerr.InvalidProducerEpochError
    assert manager.classify_batch_error(error, None) == manager.ERROR_CLASS_NEEDS_EPOCH_BUMP


def _v2_manager() -> tuple[Any, Any]:
    """A transaction manager in a transaction, made v2 as a producer's would be."""
    from kafka.producer.transaction_manager import (
        ProducerIdAndEpoch,
        TransactionManager,
        TransactionState,
    )

    from broker.kafka._kafka_python import transactions_v2 as tv2

    manager = TransactionManager(transactional_id="t", api_version=(4, 1))
    raw = SimpleNamespace(_transaction_manager=manager,
                          _sender=SimpleNamespace(_produce_request=lambda *a: None))
    assert tv2.use_transactions_v2(raw)
    manager.set_producer_id_and_epoch(ProducerIdAndEpoch(7, 3))
    manager._current_state = TransactionState.READY
    manager.begin_transaction()
    return manager, TransactionState


def _queued(manager: Any) -> Any:
    return manager._pending_requests[-1][2]


def test_v2_a_partition_joins_the_transaction_without_a_request() -> None:
    manager, _ = _v2_manager()
    tp = TopicPartition("t", 0)
    manager.maybe_add_partition_to_transaction(tp)
    assert manager.is_send_to_partition_allowed(tp)
    assert not manager.has_partitions_to_add() and manager._pending_requests == []


def test_v2_ending_a_transaction_takes_the_epoch_the_coordinator_returns() -> None:
    manager, state = _v2_manager()
    manager._sequence_numbers[TopicPartition("t", 0)] = 12
    manager.maybe_add_partition_to_transaction(TopicPartition("t", 0))
    result = manager.begin_commit()
    handler = _queued(manager)
    assert (handler.request._min_version, handler.request._max_version) == (5, 5)
    with manager._lock:
        handler.handle_response(SimpleNamespace(error_code=0, producer_id=7, producer_epoch=4))
    assert result.is_done and result.succeeded
    now = manager.producer_id_and_epoch
    assert (now.producer_id, now.epoch) == (7, 4)
    assert manager._sequence_numbers.get(TopicPartition("t", 0), 0) == 0
    assert manager._current_state == state.READY


def test_v2_transaction_abortable_aborts_a_commit_and_fails_an_abort() -> None:
    abortable = kerr.TransactionAbortableError.errno
    manager, state = _v2_manager()
    manager.maybe_add_partition_to_transaction(TopicPartition("t", 0))
    manager.begin_commit()
    with manager._lock:
        _queued(manager).handle_response(
            SimpleNamespace(error_code=abortable, producer_id=-1, producer_epoch=-1))
    assert manager._current_state == state.ABORTABLE_ERROR
    manager.begin_abort()
    with manager._lock:
        _queued(manager).handle_response(
            SimpleNamespace(error_code=abortable, producer_id=-1, producer_epoch=-1))
    assert manager._current_state == state.FATAL_ERROR


def test_v2_offsets_go_straight_to_the_group_and_abort_on_transaction_abortable() -> None:
    from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata

    manager, state = _v2_manager()
    tp = TopicPartition("t", 0)
    result = manager.send_offsets_to_transaction(
        {tp: OffsetAndMetadata(5, "", -1)}, ConsumerGroupMetadata(group_id="g"))
    handler = _queued(manager)
    assert type(handler).__name__ == "_TxnOffsetCommitV2"
    assert (handler.request._min_version, handler.request._max_version) == (5, 5)
    with manager._lock:
        handler.handle_response(SimpleNamespace(
            topics=[("t", [(0, kerr.TransactionAbortableError.errno)])]))
    assert result.is_done and manager._current_state == state.ABORTABLE_ERROR


def test_v2_a_refused_batch_aborts_instead_of_bumping_the_epoch_from_the_client() -> None:
    manager, _ = _v2_manager()
    for error in (kerr.InvalidProducerEpochError, kerr.OutOfOrderSequenceNumberError):
        assert manager.classify_batch_error(error, None) == manager.ERROR_CLASS_ABORTABLE
    assert manager.classify_batch_error(kerr.ProducerFencedError, None) == (
        manager.ERROR_CLASS_FATAL)

