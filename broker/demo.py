"""``make run``: a MASH scenario played end to end on a real Kafka.

Starts a local Kafka if no cluster is configured, creates the topics of the
example policy, publishes the scenario in ``deploy/scenario/torbay.json``
(police report a child missing twice in a month, the school reports falling
attendance, health reports an A&E attendance, the return-home service records
consent and the interview), plus three messages that must not be shared (a
duplicate, a forged agency, garbage bytes), routes everything through policy
and audit in Kafka transactions, and prints what each subscriber received, what
was withheld and why, and what was quarantined.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from broker import config
from broker.api import FeedReader, Publisher
from broker.clock import Clock, SystemClock
from broker.codec import Codec
from broker.kafka.clients import Admin, make_consumer, make_producer, standard_topic_specs
from broker.kafka.cluster import obtain_cluster
from broker.policy import Policy
from broker.routing.app import build_core, build_service
from broker.routing.core import Routed

SCENARIO = config.PROJECT_ROOT / "deploy" / "scenario" / "torbay.json"
FEED_FIELDS_SHOWN = 6


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_events(policy: Policy, clock: Clock, path: Path = SCENARIO) -> list[dict[str, Any]]:
    """The scenario's steps as JSON events with fresh ids and times relative to now."""
    now = datetime.fromtimestamp(clock.now_ms() / 1000, UTC)
    steps = json.loads(path.read_text(encoding="utf-8"))["steps"]
    out = []
    for step in steps:
        event = json.loads(json.dumps(step["event"]))
        at = now - timedelta(days=step["at_days_ago"])
        agency = policy.agency(step["agency"])
        assert agency is not None, f"scenario agency {step['agency']} not in policy"
        event.update(
            event_id=str(uuid.uuid4()),
            occurred_at=_iso(at - timedelta(hours=2)),
            reported_at=_iso(at),
            source={"agency_id": agency.id, "agency_type": agency.type, "system": "demo"},
        )
        payload = event["payload"]
        kind = payload["type"]
        if kind == "MissingEpisode":
            payload["started_at"] = _iso(at - timedelta(hours=10))
            payload["ended_at"] = _iso(at - timedelta(hours=1))
        elif kind == "ReturnHomeInterview":
            payload["held_at"] = _iso(at)
        elif kind == "ConsentRecord":
            payload["recorded_at"] = _iso(at)
            payload["expires_at"] = _iso(at + timedelta(days=payload.pop("expires_at_days")))
        out.append({"say": step["say"], "agency": agency.id, "event": event})
    return out


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    settings = config.load()
    clock = SystemClock()
    codec = Codec.from_dir(settings.schemas_dir)
    policy = Policy.load(settings.policy_path, field_classes=codec.data_classes())
    topics = settings.topics

    out("== Safeshare: Torbay MASH scenario ==")
    with obtain_cluster(settings) as cluster:
        out(f"Kafka: {cluster.description} at {cluster.bootstrap}")
        bootstrap = cluster.bootstrap
        with Admin(bootstrap) as admin:
            admin.ensure_topics(
                standard_topic_specs(
                    topics, [a.id for a in policy.agencies], [s.id for s in policy.subscribers]
                )
            )

        # 1. Agencies publish.
        out("\n-- 1. Agencies publish concern events --")
        steps = build_events(policy, clock)
        ids: set[str] = set()
        for step in steps:
            with Publisher(
                bootstrap=bootstrap, agency=step["agency"], codec=codec, topics=topics
            ) as pub:
                r = pub.publish_json(step["event"])
            ids.add(r.event_id)
            out(f"  {step['agency']:<24} {r.topic}[{r.partition}]@{r.offset}  {step['say']}")

        # ... and three messages that must not be shared.
        dup = next(s for s in steps if s["event"]["category"] == "MISSING_EPISODE")
        with Publisher(
            bootstrap=bootstrap, agency=dup["agency"], codec=codec, topics=topics
        ) as pub:
            pub.publish_json(dup["event"])
        out(f"  {dup['agency']:<24} (the same missing report sent twice by a retrying system)")
        forged = json.loads(json.dumps(dup["event"]))
        forged["event_id"] = str(uuid.uuid4())
        ids.add(forged["event_id"])
        raw = make_producer(bootstrap)
        raw.send(
            topics.ingest("example-academy"),
            codec.encode(codec.from_json(forged)),
            key=b"psn-7Q2K-93XD",
        )
        out(f"  {'example-academy':<24} (a message claiming to be from the police)")
        raw.send(topics.ingest("torbay-hospital"), b"\x00garbage from a misconfigured system")
        out(f"  {'torbay-hospital':<24} (bytes that are not a Safeshare event)")
        raw.flush()
        raw.close()

        # 2. The router decides, shares, withholds, quarantines and audits.
        out("\n-- 2. The router applies consent and need-to-know policy --")
        routed: list[Routed] = []
        service = build_service(
            settings,
            bootstrap,
            clock=clock,
            instance_id=f"demo-{uuid.uuid4().hex[:6]}",
            core=build_core(settings, clock=clock, codec=codec, policy=policy),
            on_batch=routed.extend,
        )
        stats = service.run(idle_exit_s=3.0)
        mine = [r for r in routed if r.event_id in ids or r.event_id is None]
        out(
            f"  routed {stats.consumed} messages in {stats.transactions} transaction(s): "
            f"{stats.shared} shares, {stats.withheld} withheld, {stats.quarantined} quarantined, "
            f"{stats.duplicates} duplicate(s)"
        )

        # 3. What each subscriber received.
        out("\n-- 3. What each subscriber received (read_committed feeds) --")
        for sub in policy.subscribers:
            with FeedReader(
                bootstrap=bootstrap,
                subscriber=sub.id,
                codec=codec,
                topics=topics,
                group_id=f"demo-{uuid.uuid4().hex}",
            ) as reader:
                items = _drain(reader, ids)
            if not items:
                out(f"\n  {sub.id}: nothing")
                continue
            out(f"\n  {sub.id} ({', '.join(sub.roles)}): {len(items)} event(s)")
            for item in items:
                d, e = item.record["decision"], item.record["event"]
                payload = e["payload"][1] if isinstance(e["payload"], tuple) else {}
                shown = [k for k, v in payload.items() if v not in (None, [], "")]
                out(f"    - {e['category']:<22} risk {e['risk_level']:<8} rule {d['rule_id']}")
                out(f"      basis: {d['lawful_basis']}")
                out(f"      summary: {e['summary']!s:.90}")
                name = " ".join(
                    x
                    for x in (e["subject"].get("given_name"), e["subject"].get("family_name"))
                    if x
                )
                out(
                    f"      child: {name or '(identity redacted)'}; reporter: "
                    f"{e['reporter'].get('name') or '(redacted)'}"
                )
                out(f"      payload fields received: {', '.join(shown) or '(none)'}")
                if d["fields_redacted"]:
                    out(f"      redacted: {', '.join(_short(d['fields_redacted']))}")
                for o in d["obligations"]:
                    out(f"      obligation: {o['code']} due {o['due_at']}")

        # 4. Decisions not to share, and quarantine.
        out("\n-- 4. Decisions not to share (each one is audited) --")
        for r in mine:
            for sub, reason in r.withheld:
                if reason not in ("OUT_OF_AREA", "NO_MATCHING_RULE", "RULE_WITHHOLD"):
                    out(f"  {r.event_id[:8] if r.event_id else '-':<8} {sub:<28} {reason}")
        hidden = sum(
            1
            for r in mine
            for _, reason in r.withheld
            if reason in ("OUT_OF_AREA", "NO_MATCHING_RULE", "RULE_WITHHOLD")
        )
        out(
            f"  (+{hidden} routine withholdings: out of area, no rule for that recipient, "
            "or a rule that withholds)"
        )
        out("\n-- 5. Quarantined and duplicates (nothing from these reached a feed) --")
        for r in mine:
            if r.quarantined:
                out(
                    f"  quarantined: {r.quarantined:<16} agency={r.agency or '-'} "
                    f"event={r.event_id or '-'}"
                )
            if r.duplicate:
                out(f"  duplicate:   event {r.event_id} not shared twice")
        _show_quarantine(bootstrap, codec, topics.quarantine, out)

        out("\nDone.")
    return 0


def _short(paths: list[str]) -> list[str]:
    return [p.replace("payload.", "") for p in paths]


def _drain(reader: FeedReader, ids: set[str], idle_s: float = 2.0) -> list[Any]:
    items: list[Any] = []
    deadline = time.monotonic() + idle_s
    while time.monotonic() < deadline:
        got = reader.poll(timeout_ms=300)
        if got:
            deadline = time.monotonic() + 0.5
        items.extend(i for i in got if i.record["event"]["event_id"] in ids)
    return items


def _show_quarantine(bootstrap: str, codec: Codec, topic: str, out: Callable[[str], None]) -> None:
    consumer = make_consumer(bootstrap, group_id=None, topics=[topic])
    try:
        records = consumer.collect(10_000, timeout_s=2.0)
    finally:
        consumer.close()
    for r in records[-3:]:
        q = codec.decode(r.value or b"", "safeshare.QuarantineRecord")
        out(
            f"  {topic}: {q['reason']} from {q['source_topic']}[{q['source_partition']}]"
            f"@{q['source_offset']}, {q['original_size']} original bytes kept; {q['detail']}"
        )


if __name__ == "__main__":
    sys.exit(main())
