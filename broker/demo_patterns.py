"""``make run``, section 2b: the pattern detector on this run's events.

The detector (broker/patterns) reads its own feed, the router's copies of the
missing episodes and return interviews, and publishes what it finds as PATTERN
alerts from agency ``safeshare-patterns``, signed with that agency's key (the
demo's policy requires signatures). The demo runs it until it has read its feed
to the end, lists the alerts about this run's children and adds their event ids
to the run's, so the router's next pass shares them and the feeds below show them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from broker.codec import Codec
from broker.kafka.admin import Admin
from broker.kafka.consumer import make_consumer
from broker.patterns.core import AGENCY
from broker.patterns.service import PatternService, topic_specs
from broker.policy import Policy
from broker.signing import AgencySigner
from broker.topics import Topics

PATTERNS = AGENCY
_CAUGHT_UP_TIMEOUT_S = 120.0


def detect_patterns(bootstrap: str, codec: Codec, policy: Policy, topics: Topics,
                    signer: AgencySigner, ids: set[str], out: Callable[[str], None]) -> None:
    with Admin(bootstrap) as admin:
        admin.ensure_topics(topic_specs(topics))
    service = PatternService(bootstrap, topics=topics, codec=codec,
                             thresholds=policy.pattern_thresholds, instance_id="demo",
                             signer=signer)
    try:
        deadline = time.monotonic() + _CAUGHT_UP_TIMEOUT_S
        idle = 0
        while idle < 3 and time.monotonic() < deadline:
            before = service.stats.records
            service.run_once(wait_ms=300)
            done = service.caught_up() and service.stats.records == before
            idle = idle + 1 if done else 0
        read = service.stats.records
    finally:
        service.close()
    reader = make_consumer(bootstrap, group_id=None, topics=[topics.ingest(AGENCY)],
                           isolation_level="read_committed")
    alerts = []
    try:
        for _ in range(10):
            records = reader.poll_records(timeout_ms=500)
            for r in records:
                event = codec.decode(r.value or b"", "safeshare.ConcernEvent")
                if set(event["payload"][1]["evidence"]) & ids:
                    alerts.append(event)
            if not records and alerts:
                break
    finally:
        reader.close()
    out(f"  {PATTERNS}: read {read} routed event(s) from its feed; "
        f"{len(alerts)} alert version(s) about this run's children (signed, to its ingest topic)")
    for event in alerts:
        a = event["payload"][1]
        where = f" at '{a['place']['place']}'" if a.get("place") else ""
        out(f"    - PATTERN {a['kind']:<17} v{a['version']}: {len(a['children'])} child(ren)"
            f"{where}, {len(a['evidence'])} event(s) of evidence; \"{event['summary']}\"")
        ids.add(event["event_id"])
