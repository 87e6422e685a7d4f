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
from broker.audit.checkpointer import Checkpointer
from broker.audit.keystore import LogKeyStore
from broker.audit.leaf import subject_pseudonym
from broker.audit.stream import read_log
from broker.audit.verify import verify_bundle
from broker.clock import Clock, SystemClock
from broker.codec import Codec
from broker.kafka.clients import Admin, make_consumer, make_producer, standard_topic_specs
from broker.kafka.cluster import obtain_cluster
from broker.policy import Policy
from broker.routing.app import SUBJECT_KEY_FILE, build_core, build_service
from broker.routing.core import Routed

SCENARIO = config.PROJECT_ROOT / "deploy" / "scenario" / "torbay.json"
SCENARIO_CHILD = "psn-7Q2K-93XD"


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_events(policy: Policy, clock: Clock, path: Path = SCENARIO) -> list[dict[str, Any]]:
    """The scenario's steps as JSON events with fresh ids and times relative to now."""
    now = datetime.fromtimestamp(clock.now_ms() / 1000, UTC)
    # A fresh pseudonym per run, so earlier runs' consent records do not apply.
    child = "psn-" + uuid.uuid4().hex[:4].upper() + "-" + uuid.uuid4().hex[:4].upper()
    text = path.read_text(encoding="utf-8").replace(SCENARIO_CHILD, child)
    steps = json.loads(text)["steps"]
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

        routed: list[Routed] = []
        core = build_core(settings, clock=clock, codec=codec, policy=policy)

        def route() -> None:
            service = build_service(
                settings,
                bootstrap,
                clock=clock,
                instance_id="demo",
                core=core,
                on_batch=routed.extend,
            )
            stats = service.run(idle_exit_s=2.0)
            out(
                f"  router: {stats.consumed} messages in {stats.transactions} transaction(s): "
                f"{stats.shared} shares, {stats.withheld} withheld, "
                f"{stats.quarantined} quarantined, {stats.duplicates} duplicate(s)"
            )

        def publish(step: dict[str, Any]) -> None:
            with Publisher(
                bootstrap=bootstrap, agency=step["agency"], codec=codec, topics=topics
            ) as pub:
                r = pub.publish_json(step["event"])
            ids.add(r.event_id)
            out(f"  {step['agency']:<24} {r.topic}[{r.partition}]@{r.offset}  {step['say']}")

        # 1. Agencies publish; the router shares what policy allows, no consent yet.
        out("\n-- 1. Agencies publish concern events; the router applies policy --")
        steps = build_events(policy, clock)
        child = steps[0]["event"]["subject"]["pseudonym"]
        ids: set[str] = set()
        consent_at = next(i for i, st in enumerate(steps) if st["event"]["category"] == "CONSENT")
        for step in steps[:consent_at]:
            publish(step)

        # ... and three messages that must not be shared.
        dup = next(st for st in steps if st["event"]["category"] == "MISSING_EPISODE")
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
            key=child.encode(),
        )
        out(f"  {'example-academy':<24} (a message claiming to be from the police)")
        raw.send(topics.ingest("torbay-hospital"), b"\x00garbage from a misconfigured system")
        out(f"  {'torbay-hospital':<24} (bytes that are not a Safeshare event)")
        raw.flush()
        raw.close()
        started_ms = clock.now_ms()
        route()

        # 2. Consent is recorded; later events can be shared on that basis.
        out("\n-- 2. The return-home service records consent, then the interview --")
        for step in steps[consent_at:]:
            publish(step)
        route()
        mine = [r for r in routed if r.event_id in ids or r.event_id is None]

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
        _show_quarantine(bootstrap, codec, topics.quarantine, started_ms, out)

        # 6. The signed audit log: checkpoint, verify, answer "who saw this child?".
        out("\n-- 6. The signed audit log --")
        checkpointer = Checkpointer.from_settings(settings, bootstrap, clock=clock)
        try:
            published = checkpointer.run_once()
        finally:
            checkpointer.close()
        cp = published.checkpoint
        out(
            f"  checkpoint: {cp.origin} size {cp.size} root {cp.root_hash.hex()[:16]}… "
            "(C2SP signed note, Ed25519)"
        )
        store = LogKeyStore(settings.home / "keys", origin=cp.origin, shard=0)
        anchor = store.anchor()
        assert anchor is not None
        bundle = read_log(bootstrap, topics, shard=0)
        report = verify_bundle(bundle, [anchor])
        out(
            f"  verify: OK, {report.tree_size} leaves recomputed against "
            f"{report.checkpoints} signed checkpoint(s); root matches"
        )
        key = (settings.home / "keys" / SUBJECT_KEY_FILE).read_bytes()
        seen = [
            lf
            for lf in report.leaves
            if lf.subject == subject_pseudonym(key, child) and lf.event_id in ids
        ]
        shares = [lf for lf in seen if lf.kind == "SHARED"]
        out(
            f"  who saw {child} in this run: {len(shares)} shares to "
            f"{len({lf.recipient for lf in shares})} recipients, "
            f"{sum(lf.kind == 'WITHHELD' for lf in seen)} decisions not to share"
        )
        out(f"  try: safeshare audit verify | safeshare audit who-saw --subject {child}")

        out("\nDone.")
    return 0


def _short(paths: list[str]) -> list[str]:
    """Field groups, not every leaf: ``payload.MissingEpisode.found.place`` -> ``found``."""
    out: dict[str, None] = {}
    for p in paths:
        parts = p.split(".")
        out[parts[2] if parts[0] == "payload" and len(parts) > 2 else ".".join(parts[:2])] = None
    return list(out)


def _drain(reader: FeedReader, ids: set[str], idle_s: float = 2.0) -> list[Any]:
    items: list[Any] = []
    deadline = time.monotonic() + idle_s
    while time.monotonic() < deadline:
        got = reader.poll(timeout_ms=300)
        if got:
            deadline = time.monotonic() + 0.5
        items.extend(i for i in got if i.record["event"]["event_id"] in ids)
    return items


def _show_quarantine(
    bootstrap: str, codec: Codec, topic: str, since_ms: int, out: Callable[[str], None]
) -> None:
    consumer = make_consumer(bootstrap, group_id=None, topics=[topic])
    try:
        records = consumer.collect(10_000, timeout_s=2.0)
    finally:
        consumer.close()
    for r in records:
        q = codec.decode(r.value or b"", "safeshare.QuarantineRecord")
        if q["quarantined_at"].timestamp() * 1000 < since_ms:
            continue
        out(
            f"  {topic}: {q['reason']} from {q['source_topic']}[{q['source_partition']}]"
            f"@{q['source_offset']}, {q['original_size']} original bytes kept; {q['detail']}"
        )


if __name__ == "__main__":
    sys.exit(main())
