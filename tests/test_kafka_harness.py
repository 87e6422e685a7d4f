"""Integration tests of the Kafka layer on a real broker (no mocks).

They pin down what the rest of Safeshare relies on: topics with the right
configs, read_committed isolation, offsets committed atomically with the
output of a transaction, zombie fencing, and a broker that keeps its data
across a restart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker import config
from broker.kafka.admin import Admin
from broker.kafka.cluster import obtain_cluster
from broker.kafka.configuration import TopicSpec, standard_topic_specs
from broker.kafka.consumer import catch_up, make_consumer
from broker.kafka.exceptions import (
    ClusterUnavailableError,
    KafkaError,
    KafkaTimeoutError,
    ProducerFencedError,
)
from broker.kafka.local import THROWAWAY_JVM_OPTS, LocalKafka, probe_broker
from broker.kafka.producer import make_producer
from broker.kafka.structs import OffsetAndMetadata, Record, TopicPartition, offsets_after
from broker.topics import Topics
from tests.helpers import collect_then_settle

pytestmark = pytest.mark.kafka


def _values(records: list[Record]) -> list[bytes]:
    return [r.value or b"" for r in records]


# -- topics ---------------------------------------------------------------------------
def test_ensure_topics_is_idempotent_and_applies_configs(admin: Admin, topics: Topics) -> None:
    specs = standard_topic_specs(topics, ["police", "health"], ["mash"], partitions=2)
    names = [s.name for s in specs]

    first = admin.ensure_topics(specs)
    assert first == {n: "created" for n in names}
    again = admin.ensure_topics(specs)
    assert again == {n: "exists" for n in names}

    desc = admin.describe(names)
    assert desc[topics.ingest("police")].partitions == 2
    assert desc[topics.feed("mash")].partitions == 2
    assert desc[topics.audit].partitions == 1
    # Consent records are kept, never compacted (a later record must not erase one
    # a past decision relied on) nor expired.
    consent = desc[topics.consent("police")].config
    assert (consent["cleanup.policy"], consent["retention.ms"]) == ("delete", "-1")
    assert desc[topics.consent("health")].partitions == 1  # consent records are few
    audit = desc[topics.audit].config
    assert audit["cleanup.policy"] == "delete"
    assert audit["retention.ms"] == "-1"
    assert audit["retention.bytes"] == "-1"
    assert desc[topics.audit_checkpoints].config["retention.ms"] == "-1"


def test_ensure_topics_repairs_config_drift(admin: Admin, topics: Topics) -> None:
    """An audit topic someone created with expiring retention is put right."""
    admin.ensure_topics([TopicSpec(topics.audit, 1, {"retention.ms": "3600000"})])
    audit_spec = [s for s in standard_topic_specs(topics, [], []) if s.name == topics.audit]
    assert admin.ensure_topics(audit_spec) == {topics.audit: "updated"}
    assert admin.describe([topics.audit])[topics.audit].config["retention.ms"] == "-1"


def test_delete_topics_ignores_missing(admin: Admin, topics: Topics) -> None:
    admin.ensure_topics([TopicSpec(topics.quarantine, 1)])
    assert admin.delete_topics([topics.quarantine, topics.consent("x")]) == [topics.quarantine]


def test_producing_to_a_missing_topic_times_out(kafka_bootstrap: str, topics: Topics) -> None:
    """auto.create.topics.enable=false: a typo fails instead of creating a topic."""
    with make_producer(kafka_bootstrap, max_block_ms=1500) as p, pytest.raises(KafkaTimeoutError):
        p.send(topics.ingest("nosuch"), b"x").get(timeout=10)


def test_a_record_the_broker_refused_is_reported_after_the_flush(
    kafka_bootstrap: str, admin: Admin, topics: Topics
) -> None:
    topic = topics.feed("small")
    admin.ensure_topics([TopicSpec(topic, 1, {"max.message.bytes": "2000"})])
    with make_producer(kafka_bootstrap) as p:
        ok = p.send(topic, b"fits", key=b"k")
        p.flush()
        ok.raise_if_failed()
        refused = p.send(topic, b"x" * 5000, key=b"k")
        # kafka-python may report the refusal from flush already (after splitting
        # a batch the broker refused); either way the record must not pass.
        with contextlib.suppress(KafkaError):
            p.flush()
        with pytest.raises(KafkaError, match="(?i)too large|size"):
            refused.raise_if_failed()


# -- transactions -------------------------------------------------------------------------
def test_read_committed_sees_committed_never_aborted(
    kafka_bootstrap: str, admin: Admin, topics: Topics
) -> None:
    topic = topics.feed("mash")
    admin.ensure_topics([TopicSpec(topic, 1)])
    with make_producer(kafka_bootstrap, transactional_id=f"{topics.namespace}.tx") as p:
        p.init_transactions()
        p.begin_transaction()
        for i in range(3):
            p.send(topic, f"aborted-{i}".encode(), key=b"s1")
        p.flush()  # really on the broker, not just buffered
        p.abort_transaction()
        with p.transaction():
            for i in range(2):
                p.send(topic, f"committed-{i}".encode(), key=b"s1")

    with make_consumer(kafka_bootstrap, group_id=None, topics=[topic]) as c:
        assert _values(collect_then_settle(c, 2)) == [b"committed-0", b"committed-1"]
    with make_consumer(
        kafka_bootstrap, group_id=None, topics=[topic], isolation_level="read_uncommitted"
    ) as c:
        seen = _values(collect_then_settle(c, 5))
    assert seen == [b"aborted-0", b"aborted-1", b"aborted-2", b"committed-0", b"committed-1"]


def test_transaction_context_aborts_on_error(
    kafka_bootstrap: str, admin: Admin, topics: Topics
) -> None:
    topic = topics.quarantine
    admin.ensure_topics([TopicSpec(topic, 1)])
    with make_producer(kafka_bootstrap, transactional_id=f"{topics.namespace}.tx") as p:
        p.init_transactions()
        with pytest.raises(RuntimeError), p.transaction():
            p.send(topic, b"never")
            raise RuntimeError("policy engine blew up")
        with p.transaction():
            p.send(topic, b"after")
    with make_consumer(kafka_bootstrap, group_id=None, topics=[topic]) as c:
        assert _values(collect_then_settle(c, 1)) == [b"after"]


def test_consume_transform_produce_commits_offsets_atomically(
    kafka_bootstrap: str, admin: Admin, topics: Topics
) -> None:
    src, dst = topics.ingest("police"), topics.feed("mash")
    admin.ensure_topics([TopicSpec(src, 2), TopicSpec(dst, 1)])
    with make_producer(kafka_bootstrap) as p:
        for i in range(10):
            p.send(src, f"in-{i}".encode(), partition=i % 2)
        p.flush()

    group = topics.router_group
    producer = make_producer(kafka_bootstrap, transactional_id=topics.router_transactional_id("a"))
    producer.init_transactions()
    consumer = make_consumer(kafka_bootstrap, group_id=group, topics=[src])
    try:
        records = consumer.collect(10, timeout_s=30)
        assert len(records) == 10
        # Process the first 3 records of each partition in one transaction.
        done = [r for p in (0, 1) for r in [x for x in records if x.partition == p][:3]]
        with producer.transaction():
            for r in done:
                producer.send(dst, (r.value or b"") + b"!", key=r.key)
            producer.send_offsets_to_transaction(offsets_after(done), consumer.group_metadata())
        # A later transaction that claims everything but aborts must change nothing.
        producer.begin_transaction()
        producer.send(dst, b"ghost")
        producer.send_offsets_to_transaction(offsets_after(records), consumer.group_metadata())
        producer.abort_transaction()
        assert consumer.committed(TopicPartition(src, 0)) == 3
        assert consumer.committed(TopicPartition(src, 1)) == 3
    finally:
        consumer.close()
        producer.close()

    with make_consumer(kafka_bootstrap, group_id=group, topics=[src]) as again:
        rest = collect_then_settle(again, 4)
    assert sorted(_values(rest)) == sorted(_values([r for r in records if r not in done]))
    with make_consumer(kafka_bootstrap, group_id=None, topics=[dst]) as out:
        produced = collect_then_settle(out, 6)
    assert sorted(_values(produced)) == sorted((r.value or b"") + b"!" for r in done)


def test_rewind_to_committed_replays_an_aborted_batch(
    kafka_bootstrap: str, admin: Admin, topics: Topics
) -> None:
    src = topics.ingest("health")
    admin.ensure_topics([TopicSpec(src, 1)])
    with make_producer(kafka_bootstrap) as p:
        for i in range(4):
            p.send(src, f"e{i}".encode())
        p.flush()
    with make_consumer(kafka_bootstrap, group_id=topics.router_group, topics=[src]) as c:
        first = c.collect(4)
        c.commit({TopicPartition(src, 0): OffsetAndMetadata(2)})
        assert c.poll_records(timeout_ms=300) == []  # position is past the batch
        c.rewind_to_committed()
        assert _values(c.collect(2)) == [b"e2", b"e3"]
    assert _values(first) == [b"e0", b"e1", b"e2", b"e3"]


def test_catch_up_reads_to_the_end_offsets_of_the_call_and_reports_a_shortfall(
    kafka_bootstrap: str, admin: Admin, topics: Topics
) -> None:
    """The helper that rebuilds state before work starts (audit tree, consent, seen ids)."""
    topic = topics.feed("mash")
    admin.ensure_topics([TopicSpec(topic, 2)])
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    with make_producer(kafka_bootstrap) as p:
        for i in range(5):
            p.send(topic, f"a{i}".encode(), partition=i % 2)
        p.flush()
    with make_consumer(kafka_bootstrap, group_id=None) as c:
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got: list[Record] = []
        # Out of time before the first poll: nothing is read, and each partition
        # says where it stands against its end.
        assert catch_up(c, tps, got.append, timeout_s=0) == {tps[0]: (0, 3), tps[1]: (0, 2)}
        assert got == []
        assert catch_up(c, tps, got.append, timeout_s=30) == {}
        assert sorted(_values(got)) == [b"a0", b"a1", b"a2", b"a3", b"a4"]

        # A transaction still open holds the last stable offset back: catch_up
        # stops before its records instead of waiting for them; what was
        # committed before it is read.
        with make_producer(kafka_bootstrap, transactional_id=f"{topics.namespace}.tx") as tx:
            tx.init_transactions()
            with make_producer(kafka_bootstrap) as p:
                p.send(topic, b"b0", partition=0).get()
            tx.begin_transaction()
            tx.send(topic, b"open", partition=1)
            tx.flush()
            got.clear()
            assert catch_up(c, tps, got.append, timeout_s=10) == {}
            assert _values(got) == [b"b0"]
            tx.commit_transaction()
        # The commit markers reach the partition just after commit returns (the
        # coordinator writes them), so the end may take a moment to move on.
        deadline = time.monotonic() + 30
        while b"open" not in _values(got) and time.monotonic() < deadline:
            assert catch_up(c, tps, got.append, timeout_s=30) == {}
        assert _values(got) == [b"b0", b"open"]


@pytest.mark.parametrize("subscription", ["topics", "pattern"])
def test_group_consumer_picks_up_partitions_that_appear_later(
    kafka_bootstrap: str, admin: Admin, topics: Topics, subscription: str
) -> None:
    """Guards the kafka-python 3.0.12 lost-rejoin workaround
    (broker.kafka._kafka_python.patch_lost_rejoin).

    The consumer joins before its topic exists, so the partitions arrive with
    a later metadata refresh and force a rejoin. Short poll timeouts used to
    make kafka-python drop that rejoin's assignment: no records, ever. The
    pattern case is the router noticing a newly onboarded agency.
    """
    topic = topics.ingest("newagency")
    kwargs: dict[str, Any] = (
        {"pattern": topics.ingest_pattern} if subscription == "pattern" else {"topics": [topic]}
    )
    with make_consumer(
        kafka_bootstrap, group_id=topics.router_group, metadata_max_age_ms=300, **kwargs
    ) as c:
        assert c.poll_records(timeout_ms=500) == []
        admin.ensure_topics([TopicSpec(topic, 2)])
        with make_producer(kafka_bootstrap) as p:
            for i in range(4):
                p.send(topic, f"m{i}".encode(), partition=i % 2)
            p.flush()
        got: list[Record] = []
        deadline = time.monotonic() + 20
        while len(got) < 4 and time.monotonic() < deadline:
            got.extend(c.poll_records(timeout_ms=5))
    assert sorted(_values(got)) == [b"m0", b"m1", b"m2", b"m3"]


def test_new_producer_with_same_transactional_id_fences_the_old(
    kafka_bootstrap: str, admin: Admin, topics: Topics
) -> None:
    """A restarted router fences its zombie: the old instance cannot commit."""
    topic = topics.audit
    admin.ensure_topics([TopicSpec(topic, 1)])
    txid = topics.router_transactional_id("r1")
    zombie = make_producer(kafka_bootstrap, transactional_id=txid)
    zombie.init_transactions()
    zombie.begin_transaction()
    zombie.send(topic, b"zombie")
    zombie.flush()
    with make_producer(kafka_bootstrap, transactional_id=txid) as fresh:
        fresh.init_transactions()  # aborts the zombie's open transaction
        with fresh.transaction():
            fresh.send(topic, b"fresh")
        with pytest.raises(ProducerFencedError):
            zombie.commit_transaction()
    zombie.close(timeout=1)
    with make_consumer(kafka_bootstrap, group_id=None, topics=[topic]) as c:
        assert _values(collect_then_settle(c, 1)) == [b"fresh"]


# -- cluster precedence --------------------------------------------------------------------
def test_unreachable_external_cluster_is_an_error_not_a_fallback(
    settings: config.Settings,
) -> None:
    bad = dataclasses.replace(settings, bootstrap="127.0.0.1:1")
    with pytest.raises(ClusterUnavailableError, match="SAFESHARE_BOOTSTRAP=127.0.0.1:1"):
        obtain_cluster(bad, external_timeout_s=1.0)


def test_external_cluster_is_used_as_is(settings: config.Settings, kafka_bootstrap: str) -> None:
    ext = dataclasses.replace(settings, bootstrap=kafka_bootstrap)
    with obtain_cluster(ext) as cluster:
        assert cluster.kind == "external"
        assert cluster.bootstrap == kafka_bootstrap
        assert not cluster.owned


# -- the local broker itself ------------------------------------------------------------------
@pytest.fixture
def own_broker(settings: config.Settings, tmp_path: Path) -> Iterator[LocalKafka]:
    """A second local broker in a temp dir (shares the cached jars only).

    Restarting it cannot disturb the session's broker that other tests use.
    """
    kafka = LocalKafka(settings.home, settings.kafka_version, instance_dir=tmp_path / "kafka",
                       jvm_opts=THROWAWAY_JVM_OPTS)
    try:
        yield kafka
    finally:
        kafka.wipe()


def test_local_broker_restarts_on_same_data_and_port(own_broker: LocalKafka) -> None:
    t0 = time.monotonic()
    state = own_broker.start()
    first_start_s = time.monotonic() - t0
    assert own_broker.started_here
    topics = Topics("restart")
    with Admin(state.bootstrap) as a:
        a.ensure_topics([TopicSpec(topics.audit, 1)])
    with make_producer(state.bootstrap, transactional_id="restart.tx") as p:
        p.init_transactions()
        with p.transaction():
            p.send(topics.audit, b"leaf-1")

    # Stopped from "another process": a fresh object that only has the state file.
    other = LocalKafka(own_broker.home, own_broker.version, instance_dir=own_broker.instance_dir)
    assert other.status() == state
    assert other.stop() is True
    assert own_broker.status() is None
    assert probe_broker(state.bootstrap, 1.0) is not None  # really gone
    assert other.stop() is False  # idempotent

    t0 = time.monotonic()
    again = own_broker.start()
    restart_s = time.monotonic() - t0
    assert again.bootstrap == state.bootstrap
    assert again.cluster_id == state.cluster_id
    assert again.pid != state.pid
    with make_consumer(again.bootstrap, group_id=None, topics=[topics.audit]) as c:
        assert _values(collect_then_settle(c, 1)) == [b"leaf-1"]
    # A second start() while running reuses the broker instead of starting another.
    assert LocalKafka(
        own_broker.home, own_broker.version, instance_dir=own_broker.instance_dir
    ).start() == again
    print(f"local broker: first start {first_start_s:.1f} s, restart {restart_s:.1f} s")
