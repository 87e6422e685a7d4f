"""The pattern detector folds children a person linked, on a real Kafka with the
router (issue 13).

The police's James (named by NHS number) was found at a flat; the return-home
service's "Jim" (a keying error: a provisional pseudonym and a review item)
named the same flat and a second one. With a third child found at the first
flat, the detector sees three pseudonyms there and raises an alert. A MASH
worker links Jim to James: the router tells the detector's feed, and the
detector (a new instance: it rebuilds from its changelog) publishes a version
of that alert saying it is below its threshold, naming the link; the MASH gets
it. A child found at the second flat after the link makes two children there,
not three: no alert, though the detector restarted in between.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.api import IdentityDesk
from broker.kafka.admin import Admin
from broker.patterns.core import AGENCY, FEED_RECORD
from broker.patterns.service import topic_specs
from broker.policy import Policy
from broker.signing.feeds import feed_schema
from broker.topics import Topics
from tests.helpers import CODEC, create_topics, publish, read_to_end, settings_for, wait_for
from tests.patterns_helpers import detect, iso, missing
from tests.test_router_identity import _police
from tests.test_router_identity_decisions import MASH, WORKER, _jim, _Router

pytestmark = pytest.mark.kafka

FLAT = {"place": "Flat 2, 14 Example Road", "area": "Paignton", "postcode_district": "TQ4"}
FLAT2 = {"place": "9 Harbour Mews", "area": "Paignton", "postcode_district": "TQ4"}
DAY_MS = 86_400_000


@pytest.fixture
def world(kafka_bootstrap: str, topics: Topics, admin: Admin,
          tmp_path: Path) -> Iterator[tuple[Any, Policy, _Router]]:
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    admin.ensure_topics(topic_specs(topics))
    router = _Router(kafka_bootstrap, s)
    try:
        yield s, policy, router
    finally:
        router.stop()


def _dated(event: dict[str, Any], days_ago: float, now: int) -> dict[str, Any]:
    at = now - int(days_ago * DAY_MS)
    event["occurred_at"] = event["reported_at"] = iso(at)
    return event


def _routed(router: _Router, identity: str | None = None) -> None:
    """Wait until the router routed something (with ``identity``, if given)."""
    while not any(r.identity == identity or identity is None for r in router.next()):
        pass


def _events(bootstrap: str, topics: Topics, subscriber: str) -> list[dict[str, Any]]:
    """The events on a subscriber's feed (its identity notices left out)."""
    return [CODEC.decode(r.value or b"", FEED_RECORD)["event"]
            for r in read_to_end(bootstrap, topics.feed(subscriber))
            if feed_schema(CODEC, r.value or b"") == FEED_RECORD]


def _under(bootstrap: str, topics: Topics, event_id: str) -> str:
    """The pseudonym the MASH received an event under (read to the feed's end: the
    router committed it before it said so, so no waiting for silence)."""
    [event] = [e for e in _events(bootstrap, topics, MASH) if e["event_id"] == event_id]
    return str(event["subject"]["pseudonym"])


def _by_version(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alert versions as a reader orders them: by version, not by arrival. An alert's
    subject (so its partition) is the child of its newest observation, or the
    survivor of a link, so two versions may sit in different partitions and be
    read in either order (the follow-up before the alert: seen in a full run)."""
    return sorted(alerts, key=lambda a: (a["alert_id"], a["version"]))


def _mash_alerts(bootstrap: str, topics: Topics) -> list[dict[str, Any]]:
    return _by_version([e["payload"][1] for e in _events(bootstrap, topics, MASH)
                        if e["category"] == "PATTERN"
                        and e["payload"][1]["kind"] == "SHARED_PLACE"])


def _place_alerts(bootstrap: str, topics: Topics) -> list[dict[str, Any]]:
    """Every SHARED_PLACE alert version the detector published, by version."""
    out = []
    for r in read_to_end(bootstrap, topics.ingest(AGENCY)):
        event = CODEC.decode(r.value or b"", "safeshare.ConcernEvent")
        if event["payload"][1]["kind"] == "SHARED_PLACE":
            out.append({**event["payload"][1], "summary": event["summary"]})
    return _by_version(out)


@pytest.mark.timeout(900)  # five routed steps and three detector incarnations
def test_a_link_folds_two_pseudonyms_the_detector_counted_as_two_children(
    kafka_bootstrap: str, topics: Topics, world: tuple[Any, Policy, _Router]
) -> None:
    s, policy, router = world
    now = time.time_ns() // 1_000_000
    james = _dated(_police(), 6, now)
    james["payload"].update(ended_at=james["occurred_at"], found=FLAT, last_seen=FLAT2)
    publish(kafka_bootstrap, topics, "devon-cornwall-police", james)
    assert router.identities() == ["NEW"]
    jim = _dated(_jim(), 5, now)
    jim["payload"]["places_mentioned"] = [FLAT, FLAT2]
    publish(kafka_bootstrap, topics, "safe-return-charity", jim)
    assert router.identities() == ["REVIEW"]
    child, provisional = _under(kafka_bootstrap, topics, james["event_id"]), \
        _under(kafka_bootstrap, topics, jim["event_id"])
    assert child != provisional
    other = missing(f"psn-{uuid.uuid4().hex[:8]}", FLAT["place"], 4, now)
    publish(kafka_bootstrap, topics, "devon-cornwall-police", other)
    _routed(router)
    detect(kafka_bootstrap, topics, policy, 3)
    [raised] = _place_alerts(kafka_bootstrap, topics)  # three pseudonyms at the flat
    assert set(raised["children"]) == {child, provisional, other["subject"]["pseudonym"]}
    assert raised["meets_threshold"] is True and raised["identity_decision"] is None

    with IdentityDesk(bootstrap=kafka_bootstrap, subscriber=MASH, topics=topics) as desk:
        [item] = desk.reviews()
        link_id = desk.link(child, provisional, decided_by=WORKER, review_id=item["review_id"])
    _routed(router, "LINKED")
    detect(kafka_bootstrap, topics, policy, 1)  # a new instance, rebuilt from its changelog
    alerts = _place_alerts(kafka_bootstrap, topics)
    assert [(a["alert_id"], a["version"]) for a in alerts] == [
        (raised["alert_id"], 1), (raised["alert_id"], 2)]
    follow = alerts[1]
    assert (follow["meets_threshold"], follow["identity_decision"]) == (False, link_id)
    assert follow["evidence"] == raised["evidence"] and "2 of 3" in follow["summary"]
    # The follow-up reaches the MASH as the alert did.
    wait_for("the follow-up to reach the MASH",
             lambda: len(_mash_alerts(kafka_bootstrap, topics)) >= 2, timeout_s=180)
    assert [(a["version"], a["meets_threshold"], a["identity_decision"])
            for a in _mash_alerts(kafka_bootstrap, topics)] == [
        (1, True, None), (2, False, link_id)]

    # After the link (and a restart of the detector): James/Jim and one more child
    # at the second flat are two children, not three.
    late = missing(f"psn-{uuid.uuid4().hex[:8]}", FLAT2["place"], 1, now)
    publish(kafka_bootstrap, topics, "devon-cornwall-police", late)
    wait_for("the child to reach the detector's feed", lambda: late["event_id"] in {
        e["event_id"] for e in _events(kafka_bootstrap, topics, AGENCY)}, timeout_s=180)
    detect(kafka_bootstrap, topics, policy, 1)
    assert len(_place_alerts(kafka_bootstrap, topics)) == 2  # nothing raised at FLAT2
