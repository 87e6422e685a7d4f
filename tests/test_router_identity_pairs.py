"""Two router instances name one new child twice; one review item pairs them (real Kafka).

The same child (no NHS number) is published by two agencies at the same moment
to partitions owned by two router instances of one group. Neither knows the
other's child when it routes its event, so the child gets two pseudonyms. Each
instance then learns the other's index entry and raises the pair's review item
for the MASH, with the same id: the desk shows one item. A person links them;
the child's next event goes under the one that stays. The unit test is
tests/test_identity_pairs.py.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from broker.api import IdentityDesk, Publisher
from broker.audit.leaf import LeafKind
from broker.kafka.admin import Admin
from broker.kafka.producer import make_producer
from broker.kafka.structs import TopicPartition
from broker.topics import Topics
from tests.helpers import (
    CODEC,
    create_topics,
    publish,
    read_all,
    read_leaves,
    settings_for,
    wait_for,
)
from tests.test_identity_announce import _Router
from tests.test_router_identity import _event, _mash
from tests.test_router_identity_decisions import WORKER, _hmac

pytestmark = pytest.mark.kafka

MASH = "torbay-mash"
#: Agencies that may publish the child's events, with the kind of event each sends.
SENDS = {"devon-cornwall-police": "missing_episode",
         "safe-return-charity": "return_home_interview",
         "example-academy": "education_concern"}


def _child(agency: str) -> dict[str, Any]:
    e = _event(SENDS[agency], given_name="Maisie", family_name="Thornbury",
               date_of_birth="2011-06-02", postcode="TQ2 5EX")
    assert e["source"]["agency_id"] == agency
    return e


def _held_apart(a: _Router, b: _Router, topics: Topics) -> tuple[TopicPartition, TopicPartition]:
    """An ingest partition each router owns, of an agency that sends the child's events."""
    wanted = {topics.ingest(x) for x in SENDS}

    def owned(r: _Router) -> list[TopicPartition]:
        return sorted(tp for tp in r.service.assignment() if tp.topic in wanted)

    wait_for("both routers to own ingest partitions",
             lambda: bool(owned(a)) and bool(owned(b))
             and not set(owned(a)) & set(owned(b)), timeout_s=120)
    return owned(a)[0], owned(b)[0]


def _at_the_same_time(*routers: _Router) -> None:
    """Each router's first transaction waits until every router has routed its
    batch's events up to that point: neither has learned the other's child."""
    barrier = threading.Barrier(len(routers))
    for r in routers:
        process = r.service._process
        first = [True]

        def held(batches: Any, group: Any, process: Any = process, first: list = first) -> None:
            if first[0] and batches:
                first[0] = False
                barrier.wait(timeout=120)
            process(batches, group)

        r.service._process = held  # type: ignore[method-assign]


@pytest.mark.timeout(600)
def test_one_child_named_twice_by_two_routers_is_one_review_item_and_a_link_joins_them(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    run = uuid.uuid4().hex[:6]
    a = _Router(kafka_bootstrap, s, f"pairs-a-{run}")
    b = _Router(kafka_bootstrap, s, f"pairs-b-{run}")
    try:
        _at_the_same_time(a, b)
        to_a, to_b = _held_apart(a, b, topics)
        sent = {}
        producer = make_producer(kafka_bootstrap)
        try:
            for tp in (to_a, to_b):
                agency = tp.topic.rsplit(".", 1)[1]
                event = _child(agency)
                with Publisher(bootstrap=kafka_bootstrap, agency=agency, topics=topics) as p:
                    data = p.encode(CODEC.from_json(event))
                producer.send(tp.topic, data, partition=tp.partition)
                sent[tp] = event["event_id"]
            producer.flush(timeout=30)
        finally:
            producer.close()
        assert a.identities() == ["NEW"] and b.identities() == ["NEW"]
        mash = _mash(kafka_bootstrap, topics)
        pa, pb = (mash[sent[tp]][1]["event"]["subject"]["pseudonym"] for tp in (to_a, to_b))
        assert pa != pb  # one child, two pseudonyms

        # Each router raises the pair's item once it learns the other's child: two
        # records, one review id; the desk shows one item pairing the two.
        def raised() -> list[dict[str, Any]]:
            return [CODEC.decode(r.value or b"", "safeshare.IdentityReview")
                    for r in read_all(kafka_bootstrap, topics.identity_reviews(MASH),
                                      timeout_s=1.0)]

        wait_for("both routers to raise the pair's review item", lambda: len(raised()) >= 2,
                 timeout_s=120)
        assert len({i["review_id"] for i in raised()}) == 1
        with IdentityDesk(bootstrap=kafka_bootstrap, subscriber=MASH, topics=topics) as desk:
            [item] = desk.reviews()
            assert {item["candidate"], item["provisional"]} == {pa, pb}
            assert item["event_id"] in sent.values() and item["match_probability"] >= 0.5
            leaves = [lf for lf in read_leaves(kafka_bootstrap, topics)
                      if lf.kind is LeafKind.REVIEW_RAISED]
            assert {lf.event_id for lf in leaves} == {item["review_id"]} and len(leaves) == 2
            assert {(lf.subject, lf.identity_other) for lf in leaves} <= {
                (_hmac(s, pa), _hmac(s, pb)), (_hmac(s, pb), _hmac(s, pa))}
            # Never linked by the routers themselves: a person decides.
            assert not [lf for lf in read_leaves(kafka_bootstrap, topics)
                        if lf.kind is LeafKind.LINKED]

            survivor, other = item["candidate"], item["provisional"]
            desk.link(survivor, other, decided_by=WORKER, review_id=item["review_id"])
            knowing = [r.service.core.identity for r in (a, b)]
            wait_for("the link to be applied and learned by both routers",
                     lambda: not any(i is None or i.knows(other) for i in knowing),
                     timeout_s=120)
            assert desk.reviews() == []
        later = _child("devon-cornwall-police")
        publish(kafka_bootstrap, topics, "devon-cornwall-police", later)
        wait_for("the next event to reach the MASH",
                 lambda: later["event_id"] in _mash(kafka_bootstrap, topics), timeout_s=120)
        got = _mash(kafka_bootstrap, topics)[later["event_id"]][1]["event"]["subject"]
        assert got["pseudonym"] == survivor
    finally:
        for r in (a, b):
            r.stop()
        for r in (a, b):
            assert r.failure is None, r.failure
