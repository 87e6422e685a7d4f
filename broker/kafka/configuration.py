"""How Safeshare builds its Kafka clients, and the topics a deployment needs.

! There is no ``NoBrokersAvailable`` any more in kafka-python 3.x: a client that
cannot reach its bootstrap servers raises ``KafkaTimeoutError("Unable to
bootstrap ...")`` from its constructor after ``bootstrap_timeout_ms``
(:data:`DEFAULT_TIMEOUT_S` here).

! ``auto.create.topics.enable=false`` on our broker: producing to a topic that
does not exist blocks for ``max_block_ms`` and then times out. Create topics
first (:meth:`broker.kafka.admin.Admin.ensure_topics` with
:func:`standard_topic_specs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.kafka import _kafka_python
from broker.kafka.exceptions import KafkaError, translated
from broker.topics import Topics

DEFAULT_TIMEOUT_S = 30.0

#: kafka-python's own metrics, off for producers and consumers (its admin client
#: has no such setting): Safeshare exports its own (Prometheus) and nothing
#: reads the client's, which it keeps per request, batch and topic in Python.
#: A router's producer spent about a third of its produce-request CPU on them,
#: on the critical path of every transaction (Produce left 1.3 ms after the last
#: AddPartitionsToTxn answer instead of 1.6; router CPU per event 173 against
#: 186 us: bench router --only cycle,throughput).
CLIENT_METRICS = False

#: Transactional producers use transactions v2 (KIP-890) when the cluster has
#: finalized ``transaction.version`` 2 (Kafka 4.x formats new clusters so): two
#: round trips fewer per transaction, and an epoch per transaction
#: (:mod:`broker.kafka._kafka_python.transactions_v2`). False: always v1, for
#: ``bench router`` to compare the two in one run.
TRANSACTIONS_V2 = True


def _construct(what: str, cls: Any, cfg: dict[str, Any]) -> Any:
    """``cls(**cfg)`` with our errors; a refused login is reported as such."""
    recorder = _kafka_python.client_factory()
    if recorder is not None:
        cfg = {"kafka_client": recorder, **cfg}
    try:
        with translated(what):
            return cls(**cfg)
    except KafkaError:
        auth = None if recorder is None else recorder.auth_failure()
        if auth is None:
            raise
        raise KafkaError(f"{what}: the broker refused the login: {auth}") from auth


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


# -- Safeshare's topics -----------------------------------------------------------------
NEVER = "-1"

AUDIT_CONFIG: Mapping[str, str] = {
    # The audit log is the evidence: never compacted, never expired.
    "cleanup.policy": "delete",
    "retention.ms": NEVER,
    "retention.bytes": NEVER,
}
CHANGELOG_CONFIG: Mapping[str, str] = {
    # A state changelog: the last value of each key is the state.
    "cleanup.policy": "compact",
}
CONSENT_CONFIG: Mapping[str, str] = {
    # Kept, not compacted: compaction would let a later record for the same
    # subject and purpose (even one the router quarantined, or a tombstone)
    # erase the record a past decision relied on. The router's consent state
    # comes from the audit log's CONSENT leaves, not from these topics.
    "cleanup.policy": "delete",
    "retention.ms": NEVER,
    "retention.bytes": NEVER,
}


def standard_topic_specs(
    topics: Topics,
    agencies: Iterable[str],
    subscribers: Iterable[str],
    *,
    partitions: int = 3,
    audit_shards: int = 1,
) -> list[TopicSpec]:
    """Every topic a Safeshare deployment (namespace ``topics``) needs (docs/DESIGN.md).

    ``partitions``: for keyed topics (ingest, feeds, quarantine); more
    partitions let more router processes share the load. ``audit_shards``:
    one audit partition per Merkle log shard.
    """
    subscribers = list(subscribers)
    specs = [TopicSpec(topics.ingest(a), partitions) for a in agencies]
    # One partition per agency's consent topic: consent records are few, and the
    # router group then owns one consent partition per agency, not ``partitions``.
    specs += [TopicSpec(topics.consent(a), 1, CONSENT_CONFIG) for a in agencies]
    specs += [TopicSpec(topics.feed(s), partitions) for s in subscribers]
    specs.append(TopicSpec(topics.quarantine, partitions))
    specs.append(TopicSpec(topics.identity, partitions, CHANGELOG_CONFIG))
    # Link/unlink decisions are few (one partition, like consent); review items too.
    specs += [TopicSpec(topics.identity_decisions(s), 1, CONSENT_CONFIG) for s in subscribers]
    specs += [TopicSpec(topics.identity_reviews(s), 1) for s in subscribers]
    specs.append(TopicSpec(topics.audit, audit_shards, AUDIT_CONFIG))
    specs.append(TopicSpec(topics.audit_checkpoints, 1, AUDIT_CONFIG))
    specs.append(TopicSpec(topics.consultations, partitions, AUDIT_CONFIG))
    specs += loop_topic_specs(topics, agencies, subscribers, partitions=partitions)
    return specs


def loop_topic_specs(
    topics: Topics, agencies: Iterable[str], subscribers: Iterable[str], *, partitions: int = 3
) -> list[TopicSpec]:
    """The loop's topics. Clock starts, the clock changelog and every
    acknowledgement topic share one partition count: partition *p* of each
    belongs to one loop instance."""
    subscribers = list(subscribers)
    specs = [
        TopicSpec(topics.clock_starts, partitions),
        TopicSpec(topics.clocks, partitions, CHANGELOG_CONFIG),
    ]
    specs += [TopicSpec(topics.acks(s), partitions) for s in subscribers]
    specs += [TopicSpec(topics.notices(s), partitions) for s in subscribers]
    specs += [TopicSpec(topics.status(a), partitions) for a in agencies]
    return specs
