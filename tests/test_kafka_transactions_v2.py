"""Transactions v2 (KIP-890) on a real broker: what a reader of the topics sees.

A transactional producer on a cluster with ``transaction.version`` 2 sends no
AddPartitionsToTxn or AddOffsetsToTxn and ends each transaction under a new
epoch (broker.kafka._kafka_python.transactions_v2). What must not change, with
v2 and with kafka-python's own v1: committed records are read once, aborted
ones never, the group's offsets move only with a commit, and a producer that
another with its transactional id replaced can no longer write.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from broker.kafka import configuration
from broker.kafka._kafka_python import transactions_v2
from broker.kafka.admin import Admin
from broker.kafka.cluster import Cluster
from broker.kafka.configuration import TopicSpec
from broker.kafka.consumer import make_consumer
from broker.kafka.exceptions import KafkaError, ProducerFencedError
from broker.kafka.producer import Producer, make_producer
from broker.kafka.structs import OffsetAndMetadata, TopicPartition
from broker.topics import Topics
from tests.helpers import collect_then_settle

pytestmark = pytest.mark.kafka

PARTITIONS = 3
EVENTS = 60

_REQUEST = re.compile(r"Request \d+: (\w+)Request\(version=(\d+)")


class _Requests(logging.Handler):
    """The requests kafka-python logs as it sends them (its debug line per request)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = _REQUEST.search(record.getMessage())
        if m:
            self.seen.append((m.group(1), int(m.group(2))))

    def versions(self, name: str) -> set[int]:
        return {v for n, v in self.seen if n == name}


@pytest.fixture
def requests() -> Iterator[_Requests]:
    handler = _Requests()
    logger = logging.getLogger("kafka.net.connection")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _cluster_version(bootstrap: str) -> int:
    with Admin(bootstrap) as admin:
        return transactions_v2.finalized_transaction_version(admin.raw)


def _producer(bootstrap: str, transactional_id: str) -> Producer:
    producer = make_producer(bootstrap, transactional_id=transactional_id, linger_ms=5000)
    producer.init_transactions()
    return producer


def test_a_transactional_producer_uses_v2_exactly_when_the_cluster_has_it(
    kafka_bootstrap: str, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _cluster_version(kafka_bootstrap) >= transactions_v2.TRANSACTION_VERSION_V2
    with make_producer(kafka_bootstrap, transactional_id=f"{topics.namespace}.v2-a") as p:
        assert p.transactions_v2 is expected
    with make_producer(kafka_bootstrap) as plain:  # no transactions, nothing to choose
        assert plain.transactions_v2 is False
    monkeypatch.setattr(configuration, "TRANSACTIONS_V2", False)
    with make_producer(kafka_bootstrap, transactional_id=f"{topics.namespace}.v2-b") as p:
        assert p.transactions_v2 is False


def test_the_project_broker_has_transactions_v2(kafka_cluster: Cluster) -> None:
    """Kafka 4.x formats a new cluster with transaction.version 2: the broker
    ``make run`` and the tests start has it (an external cluster may not)."""
    version = _cluster_version(kafka_cluster.bootstrap)
    if kafka_cluster.kind == "local":
        assert version >= transactions_v2.TRANSACTION_VERSION_V2
    else:
        assert version >= 0


@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1"])
def test_consume_transform_produce_commits_records_and_offsets_once(
    kafka_bootstrap: str, admin: Admin, topics: Topics, requests: _Requests,
    monkeypatch: pytest.MonkeyPatch, v2: bool,
) -> None:
    monkeypatch.setattr(configuration, "TRANSACTIONS_V2", v2)
    mode = "v2" if v2 else "v1"
    src, dst = topics.feed(f"ctp-src-{mode}"), topics.feed(f"ctp-dst-{mode}")
    admin.ensure_topics([TopicSpec(src, PARTITIONS), TopicSpec(dst, PARTITIONS)])
    with make_producer(kafka_bootstrap) as loader:
        for i in range(EVENTS):
            loader.send(src, f"e{i}".encode(), key=f"k{i}".encode())
        loader.flush()
    group = f"{topics.namespace}.ctp-{mode}"
    producer = _producer(kafka_bootstrap, f"{topics.namespace}.ctp-{mode}")
    uses_v2 = producer.transactions_v2
    epochs = []
    aborted = 0
    with make_consumer(kafka_bootstrap, group_id=group, topics=[src]) as consumer:
        done = 0
        while done < EVENTS:
            batches = consumer.poll(timeout_ms=500, max_records=7)
            if not batches:
                continue
            producer.begin_transaction()
            offsets = {tp: OffsetAndMetadata(rs[-1].offset + 1, "", -1)
                       for tp, rs in batches.items()}
            wait = producer.start_sending_offsets(offsets, consumer.group_metadata())
            for records in batches.values():
                for r in records:
                    producer.send(dst, (r.value or b"").upper(), key=r.key)
            producer.flush()
            wait()
            if not aborted:
                # The first batch is written, then aborted: read it again and
                # commit it the second time.
                producer.abort_transaction()
                aborted = sum(len(rs) for rs in batches.values())
                for tp, rs in batches.items():
                    consumer.seek(tp, rs[0].offset)
                continue
            producer.commit_transaction()
            epochs.append(producer.raw._transaction_manager.producer_id_and_epoch.epoch)
            done += sum(len(rs) for rs in batches.values())
    producer.close()

    with make_consumer(kafka_bootstrap, group_id=None, topics=[dst]) as reader:
        got = collect_then_settle(reader, EVENTS)
    assert sorted(r.value for r in got) == sorted(f"E{i}".encode() for i in range(EVENTS))
    assert aborted > 0
    committed = admin.group_offsets(group)
    assert sum(committed.values()) == EVENTS
    assert set(committed) == {TopicPartition(src, p) for p in range(PARTITIONS)}

    if uses_v2:
        assert requests.versions("AddPartitionsToTxn") == set()
        assert requests.versions("AddOffsetsToTxn") == set()
        assert requests.versions("EndTxn") == {transactions_v2.END_TXN_VERSION}
        assert requests.versions("TxnOffsetCommit") == {transactions_v2.TXN_OFFSET_COMMIT_VERSION}
        # Every transaction (the abort included) ends under a new epoch.
        assert epochs == sorted(set(epochs)) and len(epochs) >= 2
    else:
        assert requests.versions("AddPartitionsToTxn")
        assert requests.versions("AddOffsetsToTxn")
        assert max(requests.versions("EndTxn")) < transactions_v2.END_TXN_VERSION
        assert max(requests.versions("Produce")) < transactions_v2.PRODUCE_VERSION


def test_a_replaced_producer_can_no_longer_write(
    kafka_bootstrap: str, admin: Admin, topics: Topics
) -> None:
    dst = topics.feed("v2-zombie")
    admin.ensure_topics([TopicSpec(dst, PARTITIONS)])
    txn_id = f"{topics.namespace}.v2-zombie"
    old = _producer(kafka_bootstrap, txn_id)
    old.begin_transaction()
    old.send(dst, b"old-committed", key=b"a")
    old.commit_transaction()
    old.begin_transaction()
    old.send(dst, b"old-open", key=b"b")
    old.flush()
    new = _producer(kafka_bootstrap, txn_id)  # fences the old one, aborts its open transaction
    new.begin_transaction()
    new.send(dst, b"new-committed", key=b"c")
    new.commit_transaction()
    with pytest.raises(KafkaError) as refused:
        old.send(dst, b"old-late", key=b"d")
        old.flush()
        old.commit_transaction()
    assert isinstance(refused.value, ProducerFencedError)
    old.close(timeout=5)
    # The old producer's failure did not disturb the new one (under v2 it must
    # not try to bump the epoch itself: transactions_v2.classify_batch_error).
    new.begin_transaction()
    new.send(dst, b"new-after", key=b"e")
    new.commit_transaction()
    new.close()
    with make_consumer(kafka_bootstrap, group_id=None, topics=[dst]) as reader:
        got = collect_then_settle(reader, 3)
    assert sorted(r.value for r in got) == [b"new-after", b"new-committed", b"old-committed"]
