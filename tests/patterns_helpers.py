"""Shared by the pattern detector's tests on a real broker (test_patterns_service,
test_patterns_followup, test_patterns_faults): generated missing episodes, the
namespace's topics, running the detector until it has caught up, reading feeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker import config
from broker.kafka.admin import Admin
from broker.patterns.service import PatternService, topic_specs
from broker.policy import Policy
from broker.topics import Topics
from tests.helpers import CODEC, create_topics, example, read_all, settings_for

DAY_MS = 86_400_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def missing(child: str, found: str, days_ago: float, now: int) -> dict[str, Any]:
    """A police missing episode of ``child``, found at ``found`` ``days_ago`` before ``now``."""
    at = now - int(days_ago * DAY_MS)
    event = example("missing_episode")
    event["subject"] = {"pseudonym": child, "local_authority": "E06000027",
                        "social_care_status": "LOOKED_AFTER"}
    event["occurred_at"] = event["reported_at"] = iso(at)
    event["payload"].update(started_at=iso(at - 3_600_000), ended_at=iso(at),
                            found={"place": found, "area": "Paignton",
                                   "postcode_district": "TQ4"},
                            last_seen={"place": "bus station", "area": "Torquay",
                                       "postcode_district": "TQ1"})
    event["summary"] = "Missing overnight from placement."
    return event


def patterns_world(
    admin: Admin, topics: Topics, home: Path
) -> tuple[config.Settings, Policy]:
    """Settings for ``topics``, the policy, its topics and the detector's created."""
    s = settings_for(topics, home)
    policy = create_topics(admin, s)
    admin.ensure_topics(topic_specs(topics))
    return s, policy


def drive(service: PatternService, done: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the detector did not catch up"
        service.run_once(wait_ms=300)


def detect(bootstrap: str, topics: Topics, policy: Policy, records: int) -> None:
    """Run the detector until it has read ``records`` feed records, then three turns
    more (alerts decided after a turn), and close it."""
    service = PatternService(bootstrap, topics=topics, codec=CODEC,
                             thresholds=policy.pattern_thresholds, instance_id="t")
    try:
        drive(service, lambda: service.stats.records >= records)
        for _ in range(3):
            service.run_once(wait_ms=200)
    finally:
        service.close()


def feed_events(bootstrap: str, topics: Topics, subscriber: str) -> list[dict[str, Any]]:
    return [CODEC.decode(r.value or b"", "safeshare.FeedRecord")["event"]
            for r in read_all(bootstrap, topics.feed(subscriber), timeout_s=1.0)]
