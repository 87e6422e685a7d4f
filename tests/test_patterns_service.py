"""The pattern detector on a real broker with the router: the Torbay pattern
(three children found at one flat within three weeks) raises one alert, shared
with the MASH and the police exploitation team, never with the school."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from broker.clock import SystemClock
from broker.codec import Codec
from broker.kafka.admin import Admin
from broker.patterns.core import AGENCY
from broker.routing.app import build_service
from broker.topics import Topics
from tests.helpers import publish, read_all
from tests.patterns_helpers import detect, feed_events, missing, patterns_world

pytestmark = pytest.mark.kafka

CODEC = Codec.default()
FLAT = ["Flat 2, 14 Example Road", "flat 2 14 Exmaple Rd", "14 Example Road, flat 2"]


def test_children_found_at_one_flat_raise_one_alert_to_mash_and_police_not_school(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s, policy = patterns_world(admin, topics, tmp_path)
    now = time.time_ns() // 1_000_000
    children = [f"psn-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    events = [
        missing(children[0], FLAT[0], 20, now),
        missing(children[1], FLAT[1], 12, now),
        missing(children[3], "Torquay harbour slipway", 10, now),  # elsewhere: noise
        missing(children[2], FLAT[2], 3, now),
    ]
    publish(kafka_bootstrap, topics, "devon-cornwall-police", *events)
    build_service(s, kafka_bootstrap, clock=SystemClock(), instance_id="p1").run(idle_exit_s=2.0)

    detect(kafka_bootstrap, topics, policy, len(events))
    alerts = [CODEC.decode(r.value or b"", "safeshare.ConcernEvent")
              for r in read_all(kafka_bootstrap, topics.ingest(AGENCY), timeout_s=1.0)]
    # No return-home interviews were published: those are overdue alerts of their own
    # (tests/test_patterns_followup.py); the place is one alert.
    alerts = [a for a in alerts if not a["payload"][1]["kind"].startswith("OVERDUE")]
    assert len(alerts) == 1, [(a["payload"][1]["kind"], a["payload"][1]["version"])
                              for a in alerts]
    payload = alerts[0]["payload"][1]
    assert payload["kind"] == "SHARED_PLACE" and payload["version"] == 1
    assert set(payload["children"]) == set(children[:3])
    assert set(payload["evidence"]) == {e["event_id"] for e in events if e is not events[2]}

    build_service(s, kafka_bootstrap, clock=SystemClock(), instance_id="p2").run(idle_exit_s=2.0)
    for who in ("torbay-mash", "dc-police-exploitation"):
        got = [e for e in feed_events(kafka_bootstrap, topics, who) if e["category"] == "PATTERN"
               and e["payload"][1]["kind"] == "SHARED_PLACE"]
        assert len(got) == 1, (who, got)
        alert = got[0]["payload"][1]
        # described as first read (feed partitions interleave): one of its spellings
        assert alert["place"]["place"] in FLAT and alert["alert_id"] == payload["alert_id"]
    school = feed_events(kafka_bootstrap, topics, "example-academy-dsl")
    assert school and not [e for e in school if e["category"] == "PATTERN"]
    # The school heard of the missing episodes, never where: nor from an alert.
    assert all(e["payload"][1].get("found") is None for e in school)
    assert AGENCY in {a.id for a in policy.agencies}
