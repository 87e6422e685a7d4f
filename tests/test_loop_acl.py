"""The loop's topics under the secured broker's ACLs (SASL/SCRAM over TLS): only a
subscriber acknowledges for itself, each party reads only its own notices, and
the loop service does its whole job with exactly the ACLs derived for it."""

from __future__ import annotations

import time
import uuid

import pytest

from broker.clock import FixedClock
from broker.codec import Codec
from broker.kafka import acl
from broker.kafka.consumer import make_consumer
from broker.kafka.exceptions import KafkaError
from broker.kafka.producer import make_producer
from broker.kafka.structs import TopicPartition
from broker.loop.api import Acknowledger
from broker.loop.core import CLOCK_RECORD, NOTICE
from broker.loop.service import LoopService
from tests.secured import Secured

pytestmark = pytest.mark.kafka

CODEC = Codec.default()
DENIED_S = 10.0
T0 = 1_796_000_000_000


def _denied_write(env: Secured, user: str, topic: str) -> None:
    with make_producer(env.bootstrap, credentials=env.creds(user),
                       max_block_ms=int(DENIED_S * 1000)) as p, \
            pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
        p.send(topic, b"forged", key=b"event").get(timeout=DENIED_S)


def _denied_read(env: Secured, user: str, topic: str) -> None:
    with make_consumer(env.bootstrap, group_id=None, credentials=env.creds(user)) as c:
        c.assign([TopicPartition(topic, 0)])
        with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
            c.collect(1, timeout_s=DENIED_S)


def test_only_a_subscriber_writes_its_acknowledgements(secured: Secured) -> None:
    t = secured.topics
    mash, school = "torbay-mash", "example-academy-dsl"
    with Acknowledger(bootstrap=secured.bootstrap, subscriber=mash, topics=t,
                      credentials=secured.creds(acl.subscriber_user(mash))) as ack:
        assert ack.acknowledge(str(uuid.uuid4()), "RECEIPT", actor="sw-1").offset >= 0
    _denied_write(secured, acl.subscriber_user(school), t.acks(mash))
    _denied_write(secured, acl.agency_user("devon-cornwall-police"), t.acks(mash))
    _denied_write(secured, acl.ROUTER, t.acks(mash))


def test_each_party_reads_only_its_own_notices_and_status(secured: Secured) -> None:
    t = secured.topics
    _denied_read(secured, acl.subscriber_user("example-academy-dsl"), t.notices("torbay-mash"))
    _denied_read(secured, acl.agency_user("example-academy"),
                 t.status("devon-cornwall-police"))
    _denied_read(secured, acl.agency_user("example-academy"), t.acks("torbay-mash"))
    _denied_write(secured, acl.subscriber_user("torbay-mash"), t.clocks)
    _denied_write(secured, acl.agency_user("example-academy"), t.clock_starts)


def test_the_loop_service_runs_with_exactly_its_acls(secured: Secured) -> None:
    t = secured.topics
    event_id = str(uuid.uuid4())
    record = {
        "clock_id": f"TRIAGE_RED:{event_id}:torbay-mash", "kind": "TRIAGE_RED",
        "event_id": event_id, "subject": "ab" * 32, "owner": "torbay-mash",
        "referrer": "devon-cornwall-police", "started_at": T0, "due_at": T0 + 1,
        "escalate_to": ["torbay-csc"], "status": "OPEN", "tiers_escalated": 0,
        "stopped_at": None, "stopped_by": None,
    }
    with make_producer(secured.bootstrap, credentials=secured.creds(acl.ROUTER)) as p:
        p.send(t.clock_starts, CODEC.encode(record, CLOCK_RECORD), key=event_id.encode()).get()
    loop = LoopService(secured.bootstrap, topics=t, codec=CODEC, policy=secured.policy.clocks,
                       clock=FixedClock(T0 + 10), instance_id=f"acl-{uuid.uuid4().hex[:6]}",
                       credentials=secured.creds(acl.LOOP))
    try:
        deadline = time.monotonic() + 90
        while loop.stats.escalations < 1:
            assert time.monotonic() < deadline, f"no escalation: {loop.last_error}"
            loop.run_once(wait_ms=300)
        assert loop.last_error is None
    finally:
        loop.close()
    user = acl.subscriber_user("torbay-csc")
    with make_consumer(secured.bootstrap, group_id=None, credentials=secured.creds(user),
                       topics=[t.notices("torbay-csc")]) as c:
        got = [CODEC.decode(r.value or b"", NOTICE) for r in c.collect(50, timeout_s=10)]
    assert [(n["event_id"], n["kind"]) for n in got if n["event_id"] == event_id] == [
        (event_id, "ESCALATION")
    ]
