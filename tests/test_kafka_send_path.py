"""``Producer.send``'s own path for keyed records (KeyedAppender), on a real broker.

A keyed record skips ``KafkaProducer.send``'s bookkeeping and is appended to
kafka-python's record accumulator directly. What a reader sees must not change:
the same partition as the Java clients and ``KafkaProducer.send`` pick, the same
key, value and headers, transactions that commit and abort as before (each
partition added to every transaction that writes to it), and kafka-python's
errors where it would raise them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from broker.kafka._kafka_python import KeyedAppender
from broker.kafka.admin import Admin
from broker.kafka.configuration import TopicSpec
from broker.kafka.consumer import make_consumer
from broker.kafka.exceptions import KafkaError
from broker.kafka.producer import make_producer
from broker.kafka.structs import Record, TopicPartition
from broker.topics import Topics
from tests.helpers import collect_then_settle

pytestmark = pytest.mark.kafka

PARTITIONS = 6


@pytest.fixture
def names(admin: Admin, topics: Topics) -> list[str]:
    out = [topics.feed(f"send-path-{i}") for i in range(2)]
    admin.ensure_topics([TopicSpec(n, PARTITIONS) for n in out])
    return out


def _read(bootstrap: str, names: list[str], expected: int) -> list[Record]:
    """Every record a read_committed reader has of ``names`` (waits for ``expected``,
    then a moment more for any extra)."""
    with make_consumer(bootstrap, group_id=None, topics=names) as consumer:
        return collect_then_settle(consumer, expected)


def _spy_on_kafka_send(producer: object) -> list[bytes]:
    """The values of the records that went through kafka-python's ``KafkaProducer.send``."""
    calls: list[bytes] = []
    raw = producer.raw  # type: ignore[attr-defined]
    real = raw.send

    def send(*args: object, **kwargs: object) -> object:
        calls.append(bytes(kwargs.get("value", args[1] if len(args) > 1 else b"")))  # type: ignore[arg-type]
        return real(*args, **kwargs)

    raw.send = send
    return calls


@pytest.fixture
def txn_producer(kafka_bootstrap: str, topics: Topics) -> Iterator[object]:
    producer = make_producer(
        kafka_bootstrap, transactional_id=f"{topics.namespace}.send-path",
        linger_ms=5000, batch_size=256 * 1024,
    )
    producer.init_transactions()
    yield producer
    producer.close()


def test_keyed_records_take_the_short_path_and_land_where_kafka_python_puts_them(
    kafka_bootstrap: str, names: list[str], txn_producer: object
) -> None:
    producer = txn_producer
    assert producer._appender is not None  # type: ignore[attr-defined]
    kafka_sends = _spy_on_kafka_send(producer)
    keys = [os.urandom(16) for _ in range(40)] + [b"child-pseudonym-1"] * 5
    headers = [("safeshare-test", b"\x00\x01"), ("h\u00e9", b"")]

    # Two committed transactions over the same partitions: each must add them
    # to its own transaction (the broker refuses a record otherwise), and an
    # aborted one in between must leave nothing behind.
    for i, txn in enumerate(("commit", "abort", "commit")):
        producer.begin_transaction()  # type: ignore[attr-defined]
        for key in keys:
            for name in names:
                producer.send(name, b"ours-" + txn.encode() + key, key=key,  # type: ignore[attr-defined]
                              headers=headers if i == 0 else None)
                producer.raw.send(name, b"kafka-" + txn.encode() + key, key=key)  # type: ignore[attr-defined]
        producer.flush()  # type: ignore[attr-defined]
        if txn == "commit":
            producer.commit_transaction()  # type: ignore[attr-defined]
        else:
            producer.abort_transaction()  # type: ignore[attr-defined]

    sent_per_txn = len(keys) * len(names)
    # Ours went through kafka-python's send only while a topic's metadata was
    # unknown (the first record to each topic: send waits for it).
    ours_there = [v for v in kafka_sends if v.startswith(b"ours-")]
    assert len(ours_there) <= len(names)
    assert len(kafka_sends) - len(ours_there) == 3 * sent_per_txn

    got = _read(kafka_bootstrap, names, 2 * 2 * sent_per_txn)
    assert len(got) == 2 * 2 * sent_per_txn
    assert not [r for r in got if b"abort" in (r.value or b"")]
    where: dict[tuple[str, bytes], set[tuple[str, int]]] = {}
    for r in got:
        value = r.value or b""
        path = "ours" if value.startswith(b"ours-") else "kafka"
        where.setdefault((r.tp.topic, r.key or b""), set()).add((path, r.tp.partition))
        assert value.endswith(r.key or b"no key")
    # One child, one partition per topic, whichever path sent the record.
    for (topic, key), placed in where.items():
        assert len({p for _, p in placed}) == 1, (topic, key, placed)
        assert {path for path, _ in placed} == {"ours", "kafka"}
    ours_first = [r for r in got if (r.value or b"").startswith(b"ours-commit")]
    with_headers = [r for r in ours_first if r.headers]
    assert len(with_headers) == sent_per_txn
    assert all(list(r.headers) == headers for r in with_headers)


def test_a_non_transactional_producer_takes_the_short_path_too(
    kafka_bootstrap: str, names: list[str]
) -> None:
    with make_producer(kafka_bootstrap) as producer:
        assert producer._appender is not None
        kafka_sends = _spy_on_kafka_send(producer)
        futures = [producer.send(names[0], b"v%d" % i, key=b"k%d" % i) for i in range(20)]
        producer.flush()
        placed = [f.get() for f in futures]
    assert kafka_sends == [b"v0"]  # the first waited in send for the topic's metadata
    assert {m.topic for m in placed} == {names[0]}
    got = _read(kafka_bootstrap, names, 20)
    assert sorted(r.value for r in got) == sorted(b"v%d" % i for i in range(20))
    by_key = {r.key: r.tp for r in got}
    assert all(by_key[b"k%d" % i] == TopicPartition(names[0], m.partition)
               for i, m in enumerate(placed))


def test_records_it_declines_go_through_kafka_python(
    kafka_bootstrap: str, names: list[str]
) -> None:
    # Too near max_request_size: kafka-python's send raises its own error, named.
    with make_producer(kafka_bootstrap, max_request_size=4_000) as producer:
        kafka_sends = _spy_on_kafka_send(producer)
        with pytest.raises(KafkaError, match="larger than the maximum request size"):
            producer.send(names[0], b"x" * 5_000, key=b"k")
        assert len(kafka_sends) == 1
        # Without a key, with an explicit partition or timestamp: kafka-python's send.
        producer.send(names[0], b"no key")
        producer.send(names[0], b"partition", key=b"k", partition=2)
        producer.send(names[0], b"timestamp", key=b"k", timestamp_ms=int(time.time() * 1000))
        producer.flush()
        assert len(kafka_sends) == 4
    got = _read(kafka_bootstrap, names, 3)
    assert sorted(r.value for r in got) == [b"no key", b"partition", b"timestamp"]
    assert [r.tp.partition for r in got if r.value == b"partition"] == [2]


def test_no_short_path_without_the_key_hash_cache(kafka_bootstrap: str) -> None:
    from kafka.partitioner.default import DefaultPartitioner

    with make_producer(kafka_bootstrap, partitioner=DefaultPartitioner()) as producer:
        assert producer._appender is None
        assert KeyedAppender.for_producer(producer.raw) is None


def test_a_send_outside_a_transaction_is_refused_as_kafka_python_refuses_it(
    kafka_bootstrap: str, names: list[str], txn_producer: object
) -> None:
    producer = txn_producer
    producer.begin_transaction()  # type: ignore[attr-defined]
    producer.send(names[0], b"in", key=b"k")  # type: ignore[attr-defined]
    producer.flush()  # type: ignore[attr-defined]
    producer.commit_transaction()  # type: ignore[attr-defined]
    # The partition was in the last transaction; there is none now.
    with pytest.raises(KafkaError, match="Cannot call send in state"):
        producer.send(names[0], b"out", key=b"k")  # type: ignore[attr-defined]
    producer.begin_transaction()  # type: ignore[attr-defined]
    producer.send(names[0], b"aborted", key=b"k")  # type: ignore[attr-defined]
    producer.abort_transaction()  # type: ignore[attr-defined]
    with pytest.raises(KafkaError, match="Cannot call send in state"):
        producer.send(names[0], b"out", key=b"k")  # type: ignore[attr-defined]
    assert [r.value for r in _read(kafka_bootstrap, names, 1)] == [b"in"]


# -- send_all: many records, checked per batch ------------------------------------------
def test_send_all_writes_what_send_writes_and_checks_per_batch(
    kafka_bootstrap: str, names: list[str], txn_producer: object
) -> None:
    producer = txn_producer
    keys = [os.urandom(16) for _ in range(300)]
    for txn in ("commit", "abort", "commit"):
        producer.begin_transaction()  # type: ignore[attr-defined]
        sent = producer.send_all(  # type: ignore[attr-defined]
            (name, key, b"all-" + txn.encode() + key) for key in keys for name in names
        )
        producer.flush()  # type: ignore[attr-defined]
        sent.raise_if_failed()
        if txn == "commit":
            producer.commit_transaction()  # type: ignore[attr-defined]
        else:
            producer.abort_transaction()  # type: ignore[attr-defined]
        # One future per new batch (or a record sent before the topic's metadata
        # was known), the rest checked through their batch.
        assert len(sent.futures) <= 2 * len(names) * PARTITIONS
        assert 0 < len(sent.batches) <= 2 * len(names) * PARTITIONS
    producer.begin_transaction()  # type: ignore[attr-defined]
    for key in keys[:50]:
        producer.send(names[0], b"one-" + key, key=key)  # type: ignore[attr-defined]
    producer.flush()  # type: ignore[attr-defined]
    producer.commit_transaction()  # type: ignore[attr-defined]

    got = _read(kafka_bootstrap, names, 2 * len(keys) * len(names) + 50)
    assert len(got) == 2 * len(keys) * len(names) + 50
    assert not [r for r in got if b"abort" in (r.value or b"")]
    placed: dict[tuple[str, bytes], set[int]] = {}
    for r in got:
        assert (r.value or b"").endswith(r.key or b"no key")
        placed.setdefault((r.tp.topic, r.key or b""), set()).add(r.tp.partition)
    assert all(len(p) == 1 for p in placed.values())  # send_all and send agree


def test_send_all_wakes_the_sender_once_for_a_run_of_new_batches(
    kafka_bootstrap: str, names: list[str], txn_producer: object
) -> None:
    """Each wake-up is a system call and lets the sender ask the coordinator to
    add the partitions met so far; one after the run adds them all at once."""
    producer = txn_producer
    appender = producer._appender  # type: ignore[attr-defined]
    woken = []
    real = appender._wakeup
    appender._wakeup = lambda: (woken.append(1), real())
    keys = [os.urandom(16) for _ in range(200)]
    producer.begin_transaction()  # type: ignore[attr-defined]
    producer.send_all((names[0], key, b"x") for key in keys)  # type: ignore[attr-defined]
    producer.send_all((names[0], key, b"y") for key in keys)  # type: ignore[attr-defined]
    producer.flush()  # type: ignore[attr-defined]
    producer.commit_transaction()  # type: ignore[attr-defined]
    assert len(woken) == 1  # the first run opened a batch per partition; the second none
    assert len(_read(kafka_bootstrap, names[:1], 2 * len(keys))) == 2 * len(keys)


def test_send_all_reports_a_batch_the_broker_did_not_write(
    kafka_bootstrap: str, admin: Admin, topics: Topics
) -> None:
    # The topic refuses every record stamped before the broker's clock
    # (message.timestamp.before.max.ms = 0): the whole batch is refused, which
    # kafka-python reports as a *successful* batch future with per-record errors.
    name = topics.feed("send-path-refused")
    admin.ensure_topics([TopicSpec(name, 1, {"message.timestamp.before.max.ms": "0"})])
    with make_producer(
        kafka_bootstrap, transactional_id=f"{topics.namespace}.send-path-refused",
        linger_ms=5_000,
    ) as producer:
        producer.init_transactions()
        producer.begin_transaction()
        sent = producer.send_all((name, b"k", b"v%d" % i) for i in range(20))
        assert len(sent.batches) == 1 and len(sent.futures) == 1  # one batch of 20
        sent.futures.clear()  # only the batch-level check is left to notice
        producer.flush(timeout=20)
        with pytest.raises(KafkaError, match="out of range"):
            sent.raise_if_failed()
        producer.abort_transaction()


def test_send_all_says_a_batch_not_yet_flushed_is_not_acknowledged(
    kafka_bootstrap: str, names: list[str]
) -> None:
    with make_producer(kafka_bootstrap, linger_ms=5_000) as producer:
        producer.send(names[0], b"first", key=b"k")
        producer.flush()  # the topic's metadata is known from here on
        sent = producer.send_all((names[0], b"k", b"v%d" % i) for i in range(10))
        assert len(sent.batches) == 1 and len(sent.futures) == 1
        sent.futures.clear()
        with pytest.raises(KafkaError, match="not acknowledged"):
            sent.raise_if_failed()  # lingering: nothing has left yet
        producer.flush()
        sent.raise_if_failed()
