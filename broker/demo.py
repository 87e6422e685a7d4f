"""``make run``: a MASH scenario played end to end on a real Kafka.

Starts a local Kafka if no cluster is configured, creates the topics of the
example policy, publishes the scenario in ``deploy/scenario/torbay.json``
(police report a child missing twice in a month, the school reports falling
attendance, health reports an A&E attendance, the return-home service records
consent and the interview), plus three messages that must not be shared (a
duplicate, a forged agency, garbage bytes), routes everything through policy
and audit in Kafka transactions, and prints what each subscriber received, what
was withheld and why, and what was quarantined. The scenario's confidential
feeds (torbay-mash) are sealed with HPKE; the demo reads them as the
subscriber does, with its feed keyring.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from broker import config, resources
from broker.api import FeedReader, Publisher
from broker.audit.checkpointer import Checkpointer
from broker.audit.keystore import LogKeyStore
from broker.audit.leaf import subject_pseudonym
from broker.audit.stream import read_log
from broker.audit.verify import verify_bundle
from broker.clock import Clock, SystemClock
from broker.codec import Codec
from broker.demo_patterns import PATTERNS, detect_patterns
from broker.demo_workspace import (
    serve_if_wanted,
    show_queue,
    show_subject_access,
    workspace_config,
)
from broker.gateway.app import GatewayConfig
from broker.gateway.client import GatewayClient
from broker.gateway.local import local_gateway
from broker.kafka.admin import Admin
from broker.kafka.cluster import obtain_cluster
from broker.kafka.configuration import standard_topic_specs
from broker.kafka.consumer import make_consumer
from broker.kafka.producer import make_producer
from broker.keyfiles import SUBJECT_KEY_FILE
from broker.policy import Policy
from broker.routing.app import build_core, build_service
from broker.routing.core import Routed
from broker.signing import AgencySigner
from broker.signing.feedkeys import FeedKeyring, keyring_path
from broker.signing.feeds import ENCRYPTED_FEED_RECORD

SCENARIO = resources.path("deploy", "scenario", "torbay.json")
SCENARIO_CHILD = "psn-7Q2K-93XD"
#: The two other children found at the same flat (the pattern detector's alert).
SCENARIO_OTHERS = ("psn-2B7R-41MC", "psn-6N1F-58WZ")
VIA_GATEWAY = "example-academy"
"""The agency whose events the scenario sends through the HTTPS gateway."""


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_events(policy: Policy, clock: Clock, path: Path = SCENARIO) -> list[dict[str, Any]]:
    """The scenario's steps as JSON events with fresh ids and times relative to now."""
    now = datetime.fromtimestamp(clock.now_ms() / 1000, UTC)
    # A fresh pseudonym per run, so earlier runs' consent records do not apply.
    text = path.read_text(encoding="utf-8")
    for placeholder in (SCENARIO_CHILD, *SCENARIO_OTHERS):
        child = "psn-" + uuid.uuid4().hex[:4].upper() + "-" + uuid.uuid4().hex[:4].upper()
        text = text.replace(placeholder, child)
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


def signed_policy(settings: config.Settings) -> tuple[dict[str, AgencySigner], Path]:
    """Every agency of the example policy with a signing key, and the policy with
    their public keys registered and signatures required (``var/demo/policy.yaml``).

    Private keys stay under ``$SAFESHARE_HOME/keys/agencies`` (created on first run).
    """
    example = settings.policy_path or resources.path(*config.EXAMPLE_POLICY)
    doc = yaml.safe_load(example.read_text(encoding="utf-8"))
    signers = {}
    for agency in doc["agencies"]:
        path = settings.keys_dir / "agencies" / f"{agency['id']}.pem"
        if not path.exists():
            AgencySigner.generate(agency["id"]).save(path)
        signers[agency["id"]] = signer = AgencySigner.load(agency["id"], path)
        agency["keys"] = [signer.registry_entry()]
    doc["event_signatures"] = "required"
    confidential = json.loads(SCENARIO.read_text(encoding="utf-8")).get("confidential_feeds", {})
    for sub in doc["subscribers"]:
        if sub["id"] in confidential.get("subscribers", ()) and "feed_keys" not in sub:
            sub["feed_keys"] = _feed_keys(settings.home, sub["id"])
    out = settings.home / "demo" / "policy.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Generated by `make run` from the example policy: agencies' public keys and\n"
        "# the confidential subscribers' feed keys added.\n"
        + yaml.safe_dump(doc, sort_keys=False),
        encoding="utf-8",
    )
    return signers, out


def _feed_keys(home: Path, subscriber: str) -> list[dict[str, str]]:
    """The ``feed_keys`` of a confidential subscriber, from its keyring (made with one
    X-Wing key on first run; keys added by ``safeshare keys new-feed`` are kept)."""
    path = keyring_path(home, subscriber)
    ring = FeedKeyring.load(path) if path.exists() else FeedKeyring(subscriber)
    if not ring.keys:
        ring.new_key()
        ring.save(path)
    keys = [k.public() for k in ring.keys]
    return [{"id": k.id, "kem": k.kem, "public_key": k.public_key_b64} for k in keys]


def _reader_keyring(home: Path, subscriber: Any) -> tuple[FeedKeyring | None, str]:
    """The subscriber's keyring if its feed is confidential, and how it is shown."""
    if not subscriber.feed_keys:
        return None, ""
    path = keyring_path(home, subscriber.id)
    if not path.exists():
        return None, f"confidential feed; no keyring at {path} to open it"
    kems = ", ".join(sorted({k.kem for k in subscriber.feed_keys}))
    return FeedKeyring.load(path), f"sealed to it with HPKE {kems}; opened with its keyring"


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    settings = config.load()
    clock = SystemClock()
    codec = Codec.from_dir(settings.schemas_dir)
    signers, policy_path = signed_policy(settings)
    settings = replace(settings, policy_path=policy_path)
    policy = Policy.load(policy_path, field_classes=codec.data_classes())
    topics = settings.topics

    out("== Safeshare: Torbay MASH scenario ==")
    with ExitStack() as stack:
        cluster = stack.enter_context(obtain_cluster(settings))
        out(f"Kafka: {cluster.description} at {cluster.bootstrap}")
        bootstrap = cluster.bootstrap
        with Admin(bootstrap) as admin:
            admin.ensure_topics(
                standard_topic_specs(
                    topics, [a.id for a in policy.agencies], [s.id for s in policy.subscribers]
                )
            )

        # The school has no Kafka client: it publishes through the HTTPS gateway with
        # its client certificate, and signs with its own key (the gateway never does).
        # The same server serves the MASH practitioners' workspace (section 8).
        ws_config, ws_passwords = workspace_config(settings.home, bootstrap, topics, policy)
        gw = stack.enter_context(local_gateway(
            GatewayConfig(bootstrap=bootstrap, topics=topics, codec=codec, policy=policy,
                          workspace=ws_config),
            settings.home / "gateway" / "demo"))
        via_gateway = stack.enter_context(GatewayClient(
            gw.url, cert=gw.cert("agency", VIA_GATEWAY), ca=str(gw.ca.cert),
            signer=signers[VIA_GATEWAY], codec=codec))
        out(f"HTTPS gateway: {gw.url} (TLS 1.2+, client certificates of the partnership CA); "
            f"{VIA_GATEWAY} publishes through it")

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
            if step["agency"] == VIA_GATEWAY:
                (g,) = via_gateway.publish(step["event"])
                ids.add(g["event_id"])
                out(f"  {VIA_GATEWAY:<24} {g['topic']}[{g['partition']}]@{g['offset']}  "
                    f"{step['say']} (HTTPS, signed by the {g['signed_by']})")
                return
            with Publisher(
                bootstrap=bootstrap,
                agency=step["agency"],
                codec=codec,
                topics=topics,
                signer=signers[step["agency"]],
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
            bootstrap=bootstrap,
            agency=dup["agency"],
            codec=codec,
            topics=topics,
            signer=signers[dup["agency"]],
        ) as pub:
            pub.publish_json(dup["event"])
        impostor = json.loads(json.dumps(dup["event"]))
        impostor["event_id"] = str(uuid.uuid4())
        ids.add(impostor["event_id"])
        with Publisher(
            bootstrap=bootstrap,
            agency=dup["agency"],
            codec=codec,
            topics=topics,
            signer=AgencySigner.generate(dup["agency"]),
        ) as pub:
            pub.publish_json(impostor)
        out(f"  {dup['agency']:<24} (an event signed with a key the police never registered)")
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
        # The school records consent for the child, signed with its own key: the
        # policy does not entitle a school to record consent, so it changes nothing.
        academy = policy.agency("example-academy")
        assert academy is not None
        forged_consent = json.loads(json.dumps(steps[consent_at]["event"]))
        forged_consent.update(
            event_id=str(uuid.uuid4()),
            source={"agency_id": academy.id, "agency_type": academy.type, "system": "demo"},
        )
        ids.add(forged_consent["event_id"])
        with Publisher(
            bootstrap=bootstrap, agency=academy.id, codec=codec, topics=topics,
            signer=signers[academy.id],
        ) as pub:
            pub.publish_json(forged_consent)
        out(f"  {academy.id:<24} (consent 'given' for a child, by a school the policy does not"
            " entitle to record consent)")
        started_ms = clock.now_ms()
        route()

        # 2. Consent is recorded; later events can be shared on that basis.
        # Consent counts once the router has applied (and audited) it, so it is
        # routed before the interview it covers is published.
        out("\n-- 2. The return-home service records consent, then the interview --")
        publish(steps[consent_at])
        route()
        for step in steps[consent_at + 1 :]:
            publish(step)
        route()

        # 2b. The pattern detector reads what the router shared with it; its alerts are
        # events of their own, which the router shares (MASH, police) and audits.
        out("\n-- 2b. The pattern detector: what no single agency sees --")
        detect_patterns(bootstrap, codec, policy, topics, signers[PATTERNS], ids, out)
        route()
        mine = [r for r in routed if r.event_id in ids or r.event_id is None]

        # 3. What each subscriber received.
        out("\n-- 3. What each subscriber received (read_committed feeds) --")
        for sub in policy.subscribers:
            ring, sealed = _reader_keyring(settings.home, sub)
            if sub.feed_keys and ring is None:
                out(f"\n  {sub.id}: {sealed}")
                continue
            with FeedReader(
                bootstrap=bootstrap,
                subscriber=sub.id,
                codec=codec,
                topics=topics,
                group_id=f"demo-{uuid.uuid4().hex}",
                keyring=ring,
            ) as reader:
                items = _drain(reader, ids)
            if not items:
                out(f"\n  {sub.id}: nothing")
                continue
            out(f"\n  {sub.id} ({', '.join(sub.roles)}): {len(items)} event(s)")
            if sealed:
                used = ", ".join(sorted({str(i.sealed_with) for i in items}))
                out(f"    {sealed} (key {used})")
                _show_sealed(bootstrap, codec, items[0], out)
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

        with GatewayClient(gw.url, cert=gw.cert("subscriber", "torbay-mash"),
                           ca=str(gw.ca.cert), codec=codec) as mash:
            page = mash.feed("torbay-mash", "SAFEGUARDING")["records"]
        out(f"\n  torbay-mash through the HTTPS gateway (purpose SAFEGUARDING, recorded as a "
            f"consultation): {len(page)} record(s), {sum(r['sealed'] for r in page)} sealed, "
            "returned as they are: the gateway holds no feed key")

        # 4. Decisions not to share, and quarantine.
        out("\n-- 4. Decisions not to share (each one is audited) --")
        for r in mine:
            for sub_id, reason in r.withheld:
                if reason not in ("OUT_OF_AREA", "NO_MATCHING_RULE", "RULE_WITHHOLD"):
                    out(f"  {r.event_id[:8] if r.event_id else '-':<8} {sub_id:<28} {reason}")
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

        # 6. Closing the loop: the clocks the shares started, an acknowledgement.
        out("\n-- 6. Closing the loop: statutory clocks, acknowledgement, the referrer told --")
        _close_the_loop(bootstrap, codec, policy, topics, clock, ids, out)

        # 7. The signed audit log: checkpoint, verify, answer "who saw this child?".
        out("\n-- 7. The signed audit log --")
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
        store = LogKeyStore(settings.keys_dir, origin=cp.origin, shard=0)
        anchor = store.anchor()
        assert anchor is not None
        bundle = read_log(bootstrap, topics, shard=0)
        report = verify_bundle(bundle, [anchor])
        out(
            f"  verify: OK, {report.tree_size} leaves recomputed against "
            f"{report.checkpoints} signed checkpoint(s); root matches"
        )
        key = (settings.keys_dir / SUBJECT_KEY_FILE).read_bytes()
        seen = [
            lf
            for lf in report.leaves
            if lf.subject == subject_pseudonym(key, child) and lf.event_id in ids
        ]
        shares = [lf for lf in seen if lf.kind == "SHARED"]
        for lf in seen:
            if lf.kind == "CONSENT":
                out(f"  consent audited: {lf.outcome} for {lf.consent_purpose} recorded by"
                    f" {lf.source_agency} (entitlement {lf.rule_id}), record {lf.event_id[:8]}")
        out(
            f"  who saw {child} in this run: {len(shares)} shares to "
            f"{len({lf.recipient for lf in shares})} recipients, "
            f"{sum(lf.kind == 'WITHHELD' for lf in seen)} decisions not to share"
        )
        out(f"  try: safeshare audit verify | safeshare audit who-saw --subject {child}")

        # 8. The MASH workspace on the same HTTPS server, as a practitioner sees it.
        out("\n-- 8. The MASH workspace (web pages on the gateway) --")
        show_queue(gw.url, str(gw.ca.cert), ws_passwords, ids, out)
        show_subject_access(gw.url, str(gw.ca.cert), ws_passwords, child, out)
        serve_if_wanted(gw.url, ws_passwords, out)

        out("\nDone.")
    return 0


def _close_the_loop(
    bootstrap: str, codec: Codec, policy: Policy, topics: Any, clock: Clock, ids: set[str],
    out: Callable[[str], None],
) -> None:
    """Run the loop service briefly: list this run's clocks, have the MASH triage
    one concern, and show the clock met and the referrer's status notice."""
    from broker.loop.api import Acknowledger  # noqa: PLC0415
    from broker.loop.core import NOTICE  # noqa: PLC0415
    from broker.loop.service import LoopService  # noqa: PLC0415

    loop = LoopService(bootstrap, topics=topics, codec=codec, policy=policy.clocks, clock=clock,
                       instance_id="demo")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the group join, then the router's starts
            loop.run_once(wait_ms=300)
            if any(c.event_id in ids for c in loop.core.open_clocks()):
                loop.run_once(wait_ms=300)
                break
        mine = sorted((c for c in loop.core.open_clocks() if c.event_id in ids),
                      key=lambda c: c.due_ms)
        rows: dict[tuple[str, str, int, tuple[str, ...]], int] = {}
        for c in mine:
            key = (c.kind, c.owner, c.due_ms, c.escalate_to)
            rows[key] = rows.get(key, 0) + 1
        for (kind, owner, due, tiers), count in rows.items():
            times = f" x{count}" if count > 1 else ""
            told = " then ".join(tiers) or "nobody named"
            out(f"  {kind:<18} {owner + times:<28} due {_hm(due)}  if missed: {told}")
        triage = next((c for c in mine if c.kind.startswith("TRIAGE_")), None)
        if triage is None:
            return
        rag = triage.kind.removeprefix("TRIAGE_")
        with Acknowledger(bootstrap=bootstrap, subscriber=triage.owner, topics=topics,
                          codec=codec, clock=clock) as acks:
            acks.acknowledge(triage.event_id, "RECEIPT", actor="duty-sw-01")
            acks.acknowledge(triage.event_id, "TRIAGE", actor="duty-sw-01", rag=rag,
                             note="strategy discussion today")
        out(f"  {triage.owner} acknowledges {triage.event_id[:8]}: RECEIPT, then TRIAGE {rag}")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and triage.clock_id in {
            c.clock_id for c in loop.core.open_clocks()
        }:
            loop.run_once(wait_ms=300)
        met = triage.clock_id not in {c.clock_id for c in loop.core.open_clocks()}
        out(f"  {triage.kind} clock: {'met on time' if met else 'still open'}")
        status = [topics.status(a.id) for a in policy.agencies]
        reader = make_consumer(bootstrap, group_id=None, topics=status)
        try:
            for r in reader.collect(100, timeout_s=3.0):
                notice = codec.decode(r.value or b"", NOTICE)
                if notice["event_id"] == triage.event_id:
                    rated = f" rated {notice['rag']}" if notice["rag"] else ""
                    out(f"  {notice['recipient']} (the referrer) is told: {notice['about']} "
                        f"{notice['ack_kind']}{rated} (never the note)")
        finally:
            reader.close()
        out("  try: safeshare deadlines due | safeshare deadlines explain EVENT_ID")
    finally:
        loop.close()


def _hm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%a %H:%M UTC")


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


def _show_sealed(bootstrap: str, codec: Codec, item: Any, out: Callable[[str], None]) -> None:
    """What anyone without the subscriber's key sees of one of its copies."""
    consumer = make_consumer(bootstrap, group_id=None, topics=[item.topic])
    try:
        raw = [
            r
            for r in consumer.collect(10_000, timeout_s=2.0)
            if (r.partition, r.offset) == (item.partition, item.offset)
        ]
    finally:
        consumer.close()
    if raw:
        env = codec.decode(raw[0].value or b"", ENCRYPTED_FEED_RECORD)
        out(
            f"    on the wire: {ENCRYPTED_FEED_RECORD}, {len(raw[0].value or b'')} bytes, "
            f"kem 0x{env['kem_id']:04x}, {len(env['ciphertext'])} bytes of ciphertext; "
            "only subscriber, event id and key id in clear"
        )


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
