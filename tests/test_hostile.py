"""Hostile input: the corpus and random bytes never crash the router or reach a feed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.clock import FixedClock
from broker.kafka.admin import Admin
from broker.kafka.producer import make_producer
from broker.policy import ConsentStore, Policy
from broker.routing.core import Inbound, RoutingCore
from broker.topics import Topics
from fuzz.corpus import POLICE, hostile_corpus, replayed
from tests.helpers import CODEC, create_topics, read_all, run_router, settings_for

POLICY = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example-mash.yaml"
T = Topics("hostile")
CORPUS = hostile_corpus(CODEC)
GOOD = replayed(CODEC)
# Loaded once: a policy holds no state between decisions (each core gets its own
# consents and duplicate memory), and loading it is most of a small test's time.
DECIDER = Policy.load(POLICY, field_classes=CODEC.data_classes())


def _core() -> RoutingCore:
    return RoutingCore(
        codec=CODEC,
        decider=DECIDER,
        consents=ConsentStore(),
        topics=T,
        clock=FixedClock(1_795_000_000_000),
        pseudonym_key=b"h" * 32,
    )


@pytest.mark.parametrize(("name", "agency", "data"), CORPUS, ids=[c[0] for c in CORPUS])
def test_every_corpus_message_is_quarantined_with_a_reason(
    name: str, agency: str, data: bytes
) -> None:
    routed = _core().handle(Inbound(T.ingest(agency), 0, 1, None, data))
    assert routed.quarantined, name
    assert [o.topic for o in routed.outputs] == [T.quarantine]
    assert [json.loads(lf)["kind"] for lf in routed.leaves] == ["QUARANTINED"]
    q = CODEC.decode(routed.outputs[0].value, "safeshare.QuarantineRecord")
    assert q["detail"] and q["original_size"] == len(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.integers(min_value=0, max_value=len(GOOD)))
def test_random_bytes_and_spliced_events_never_raise(noise: bytes, cut: int) -> None:
    core = _core()
    for data in (noise, GOOD[:cut] + noise, b"\xc3\x01" + GOOD[2:10] + noise):
        routed = core.handle(Inbound(T.ingest(POLICE), 0, 1, None, data))
        if routed.quarantined:
            assert all(not o.topic.startswith(T.feed_prefix) for o in routed.outputs)
        else:
            for o in routed.outputs:
                CODEC.decode(o.value, "safeshare.FeedRecord")


@pytest.mark.kafka
def test_the_corpus_through_the_real_router_reaches_no_feed(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    p = make_producer(kafka_bootstrap, max_request_size=4 * 1024 * 1024)
    sent = 0
    for _, agency, data in CORPUS:
        if len(data) > 900_000:
            continue  # the broker's own limit refuses it at produce time: the sender knows
        p.send(topics.ingest(agency), data)
        sent += 1
    p.send(topics.ingest(POLICE), GOOD)
    p.send(topics.ingest(POLICE), GOOD)  # replayed event id
    p.flush()
    p.close()
    routed = run_router(kafka_bootstrap, s)
    assert sum(1 for r in routed if r.quarantined) == sent
    assert sum(1 for r in routed if r.duplicate) == 1
    assert len(read_all(kafka_bootstrap, topics.quarantine)) == sent
    for sub in policy.subscribers:
        for r in read_all(kafka_bootstrap, topics.feed(sub.id), timeout_s=0.5):
            assert CODEC.decode(r.value or b"", "safeshare.FeedRecord")["event"]["event_id"] in (
                CODEC.decode(GOOD)["event_id"],
            )
