"""The gateway's own Kafka principal under the secured broker's ACLs (SASL/SCRAM
over TLS, exactly as `safeshare acl apply` sets them): it writes the ingest and
consent topics of the agencies it serves, acknowledgements, status notices, its
consultations and audit leaves, reads feeds, ingest (idempotency) and the log;
and it can do nothing else asked of it here."""

from __future__ import annotations

import pytest

from broker.kafka import acl
from broker.kafka.consumer import make_consumer
from broker.kafka.exceptions import KafkaError
from broker.kafka.producer import make_producer
from broker.kafka.structs import TopicPartition
from tests.secured import Secured

pytestmark = pytest.mark.kafka
DENIED_S = 10.0
AGENCY, SUBSCRIBER = "example-academy", "torbay-mash"


def _write(env: Secured, topic: str) -> None:
    with make_producer(env.bootstrap, credentials=env.creds(acl.GATEWAY),
                       max_block_ms=int(DENIED_S * 1000)) as p:
        p.send(topic, b"gateway-acl-test", key=b"k").get(timeout=DENIED_S)


def _read(env: Secured, topic: str) -> None:
    with make_consumer(env.bootstrap, group_id=None, credentials=env.creds(acl.GATEWAY)) as c:
        c.assign([TopicPartition(topic, 0)])
        c.collect(1, timeout_s=2.0)  # raises if not authorised; empty is fine


def test_the_gateway_principal_may_do_its_work_and_no_more(secured: Secured) -> None:
    t = secured.topics
    for topic in (t.ingest(AGENCY), t.consent(AGENCY), t.status(AGENCY), t.acks(SUBSCRIBER),
                  t.consultations, t.audit):
        _write(secured, topic)
    for topic in (t.feed(SUBSCRIBER), t.ingest(AGENCY), t.audit, t.audit_checkpoints):
        _read(secured, topic)

    for topic in (t.feed(SUBSCRIBER), t.quarantine, t.clocks, t.clock_starts,
                  t.audit_checkpoints, t.notices(SUBSCRIBER), t.identity):
        with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
            _write(secured, topic)
    for topic in (t.quarantine, t.notices(SUBSCRIBER), t.status(AGENCY), t.acks(SUBSCRIBER),
                  t.consent(AGENCY), t.clocks, t.identity, t.consultations):
        with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
            _read(secured, topic)
    # A group other than the workspace's feed tails (the subscriber's own, say).
    with make_consumer(secured.bootstrap, group_id=t.feed_group(SUBSCRIBER),
                       credentials=secured.creds(acl.GATEWAY),
                       topics=[t.feed(SUBSCRIBER)]) as c, pytest.raises(
            KafkaError, match="GroupAuthorizationFailed"):
        c.collect(1, timeout_s=DENIED_S)
