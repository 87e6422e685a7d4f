"""Feeds, server-sent events, acknowledgements and consultations through the
gateway, over real HTTPS, with the real router between publisher and reader."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import yaml

from broker.audit.checkpointer import Checkpointer
from broker.audit.leaf import AuditLeaf, LeafKind, decode_batch
from broker.gateway.app import GatewayConfig
from broker.gateway.client import GatewayClient, GatewayError
from broker.gateway.publishing import EventDesk, signing_key_path
from broker.kafka.admin import Admin
from broker.kafka.exceptions import KafkaError
from broker.kafka.producer import make_producer
from broker.policy import Policy
from broker.signing import AgencySigner
from broker.topics import Topics
from tests.gateway_helpers import Running, running_gateway
from tests.helpers import (
    CODEC,
    create_topics,
    example,
    read_all,
    run_router,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.kafka
SCHOOL, MASH = "example-academy", "torbay-mash"


def audit_leaves(bootstrap: str, topics: Topics) -> list[AuditLeaf]:
    return [AuditLeaf.from_bytes(b) for r in read_all(bootstrap, topics.audit)
            for b in decode_batch(r.value or b"")]


def _delegating(admin: Admin, topics: Topics, tmp_path: Path) -> tuple[object, Policy, Path]:
    """The example policy with the school signing its own events and the police
    delegating signing to the gateway: (settings, policy, the gateway's keys)."""
    s = settings_for(topics, tmp_path)
    school_key = AgencySigner.generate(SCHOOL)
    school_key.save(tmp_path / "school.pem")
    gateway_keys = tmp_path / "gateway-keys"
    police_key = AgencySigner.generate("devon-cornwall-police")
    police_key.save(signing_key_path(gateway_keys, "devon-cornwall-police"))
    doc = yaml.safe_load(s.policy_file().read_text())
    for a in doc["agencies"]:
        if a["id"] == SCHOOL:
            a["keys"] = [school_key.registry_entry()]
        if a["id"] == "devon-cornwall-police":
            a["keys"] = [police_key.registry_entry()]
            a["signing"] = "gateway"
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    s = replace(s, policy_path=policy_path)
    create_topics(admin, s)
    return s, Policy.load(policy_path, field_classes=CODEC.data_classes()), gateway_keys


@pytest.fixture
def world(kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
          ) -> Iterator[tuple[Running, object]]:
    """The gateway under :func:`_delegating`'s policy."""
    s, policy, gateway_keys = _delegating(admin, topics, tmp_path)
    config = GatewayConfig(bootstrap=kafka_bootstrap, topics=topics, codec=CODEC,
                           policy=policy, signing_keys=gateway_keys)
    with running_gateway(config, tmp_path) as gw:
        yield gw, s


def _client(gw: Running, kind: str, ident: str, signer: AgencySigner | None = None
            ) -> GatewayClient:
    return GatewayClient(gw.url, cert=gw.cert(kind, ident), ca=str(gw.ca.cert), signer=signer,
                         codec=CODEC)


def test_a_school_publishes_over_https_and_the_mash_reads_the_share_over_https(
    world: tuple[Running, object], kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    gw, s = world
    signer = AgencySigner.load(SCHOOL, tmp_path / "school.pem")
    event = example("education_concern", risk_level="HIGH", sharing={
        "no_consent_reason": "WOULD_PREJUDICE_PROTECTION",
        "justification": "Asking consent would alert associates.", "break_glass": False})
    health = example("missing_episode")
    with _client(gw, "agency", SCHOOL, signer) as school:
        (receipt,) = school.publish(event)
    assert receipt["signed_by"] == "agency"
    with _client(gw, "agency", "devon-cornwall-police") as police:
        (hreceipt,) = police.publish(health)
    assert hreceipt["signed_by"] == "gateway"
    routed = run_router(kafka_bootstrap, s)  # type: ignore[arg-type]
    assert [r.quarantined for r in routed] == [None, None]
    assert all(MASH in r.shared for r in routed), [(r.shared, r.withheld) for r in routed]

    with _client(gw, "subscriber", MASH) as mash:
        page = mash.feed(MASH, "SAFEGUARDING", wait_ms=5000)
        got = {r["event_id"]: r for r in page["records"]}
        assert set(got) == {event["event_id"], health["event_id"]}
        copy = got[event["event_id"]]
        assert copy["sealed"] is False
        assert copy["record"]["event"]["summary"] == event["summary"]
        # the cursor continues after what was read: nothing new
        assert mash.feed(MASH, "SAFEGUARDING", cursor=page["cursor"])["records"] == []
        # acknowledge through broker.loop's Acknowledger
        ack = mash.acknowledge(MASH, event_id=event["event_id"], kind="RECEIPT", actor="sw-1")
        assert ack["topic"] == topics.acks(MASH)
        with pytest.raises(GatewayError) as bad:
            mash.acknowledge(MASH, event_id=event["event_id"], kind="SHRUG", actor="sw-1")
        assert bad.value.status == 422 and bad.value.body["problems"][0].startswith("kind")
        # a purpose the MASH does not hold is refused
        with pytest.raises(GatewayError) as purpose:
            mash.feed(MASH, "MARKETING")
        assert purpose.value.status == 422
        # another subscriber's feed is not the MASH's to read
        with pytest.raises(GatewayError) as other:
            mash.feed("example-academy-dsl", "SAFEGUARDING")
        assert other.value.status == 403
    (acked,) = read_all(kafka_bootstrap, topics.acks(MASH))
    assert CODEC.decode(acked.value or b"", "safeshare.Acknowledgement")["event_id"] == (
        event["event_id"])

    consulted = [x for x in audit_leaves(kafka_bootstrap, topics)
                  if x.kind is LeafKind.CONSULTED]
    assert len(consulted) == 2  # one per record; the empty second page consulted nothing
    assert {(x.consulted_by, x.recipient, x.consulted_purpose, x.consulted_via)
            for x in consulted} == {(f"subscriber:{MASH}", MASH, "SAFEGUARDING", "page")}
    assert {x.event_id for x in consulted} == set(got)
    log = [json.loads(r.value or b"") for r in read_all(kafka_bootstrap, topics.consultations)]
    assert "summary" not in json.dumps(log)
    assert [x["claimed"] for x in log if x["kind"] == "refusal"] == [
        "subscriber:example-academy-dsl"]
    # the gateway signed the police event, and says so; not the school's
    assert [(x["agency"], x["event_id"], x["digest"]) for x in log
            if x["kind"] == "signed_for"] == [
        ("devon-cornwall-police", health["event_id"], hreceipt["digest"])]
    # ... and so does the signed audit log: a SIGNED_FOR leaf for the police event only
    assert [(x.source_agency, x.event_id, x.event_digest, x.outcome)
            for x in audit_leaves(kafka_bootstrap, topics) if x.kind is LeafKind.SIGNED_FOR] == [
        ("devon-cornwall-police", health["event_id"], hreceipt["digest"], "SIGNED")]


def test_an_event_the_gateway_cannot_audit_signing_is_not_sent(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    """Fail closed: the SIGNED_FOR leaf could not be written, so nothing is sent."""
    _, policy, gateway_keys = _delegating(admin, topics, tmp_path)

    def unwritable(agency: str, event_id: str, digest: str) -> None:
        raise KafkaError("audit topic unwritable (test)")

    desk = EventDesk(bootstrap=kafka_bootstrap, topics=topics, codec=CODEC, policy=policy,
                     signing_keys=gateway_keys, on_signed_for=unwritable)
    try:
        body = json.dumps(example("missing_episode")).encode()
        with pytest.raises(KafkaError, match="unwritable"):
            asyncio.run(desk.publish("devon-cornwall-police", body, None))
    finally:
        desk.close()
    assert read_all(kafka_bootstrap, topics.ingest("devon-cornwall-police"), timeout_s=1.0) == []


def test_the_feed_streams_as_server_sent_events_and_each_is_a_consultation(
    world: tuple[Running, object], kafka_bootstrap: str, topics: Topics
) -> None:
    gw, s = world
    with gw.client("agency", "devon-cornwall-police") as c:
        hs = [example("missing_episode") for _ in range(3)]
        assert c.post("/v1/events", json=hs).status_code == 201
    run_router(kafka_bootstrap, s)  # type: ignore[arg-type]
    seen: list[dict[str, object]] = []
    ids: list[str] = []
    with gw.client("subscriber", MASH) as c, c.stream(
        "GET", f"/v1/feeds/{MASH}/stream", params={"purpose": "SAFEGUARDING", "limit": 3},
        timeout=httpx.Timeout(30.0),
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("id: "):
                ids.append(line[4:])
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
    assert {x["event_id"] for x in seen} == {h["event_id"] for h in hs}
    # resuming from the last id gives nothing more
    with gw.client("subscriber", MASH) as c:
        rest = c.get(f"/v1/feeds/{MASH}", params={"purpose": "SAFEGUARDING", "cursor": ids[-1]})
        assert rest.json()["records"] == [], ids
    streamed = [x.event_id for x in audit_leaves(kafka_bootstrap, topics)
                if x.kind is LeafKind.CONSULTED and x.consulted_via == "stream"]
    assert sorted(streamed) == sorted(h["event_id"] for h in hs)


def test_a_receipt_carries_the_decisions_and_a_proof_that_verifies_offline(
    world: tuple[Running, object], kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    gw, s = world
    event = example("missing_episode")
    with _client(gw, "agency", "devon-cornwall-police") as police:
        (published,) = police.publish(event)
        early = police.receipt(event["event_id"])
        assert early["published"] == published and early["proof"] is None
        run_router(kafka_bootstrap, s)  # type: ignore[arg-type]
        cp = Checkpointer.from_settings(s, kafka_bootstrap)  # type: ignore[arg-type]
        try:
            assert cp.run_once() is not None
        finally:
            cp.close()
        receipt = police.receipt(event["event_id"])
    shares = {d["recipient"] for d in receipt["decisions"] if d["outcome"] == "SHARE"}
    assert MASH in shares
    assert len(receipt["proof"]["proofs"]) == len(receipt["decisions"]) >= 2
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(receipt["proof"]))
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "audit", "verify-proof", str(proof)],
        env={**os.environ, "SAFESHARE_HOME": str(tmp_path)}, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("OK leaf") == len(receipt["decisions"])
    # another agency may not read it
    with _client(gw, "agency", SCHOOL) as school, pytest.raises(GatewayError) as other:
        school.receipt(event["event_id"])
    assert other.value.status == 403


def test_a_record_the_gateway_cannot_read_does_not_block_the_feed(
    world: tuple[Running, object], kafka_bootstrap: str, topics: Topics
) -> None:
    """Bytes the gateway cannot decode (a schema it does not know yet, say) are given
    as their coordinates and a problem, not as a 503 at that offset for ever: the
    records after them are read, and only those are consultations."""
    gw, s = world
    with make_producer(kafka_bootstrap) as p:
        p.send(topics.feed(MASH), b"\xc3\x01not-a-feed-record", key=b"x", partition=0)
        p.flush()
    event = example("missing_episode")
    with _client(gw, "agency", "devon-cornwall-police") as police:
        police.publish(event)
    run_router(kafka_bootstrap, s)  # type: ignore[arg-type]
    with _client(gw, "subscriber", MASH) as mash:
        page = mash.feed(MASH, "SAFEGUARDING", wait_ms=5000)
        bad = [r for r in page["records"] if r.get("problem")]
        good = [r for r in page["records"] if not r.get("problem")]
        assert [(r["partition"], r["offset"], r["event_id"], r["record"]) for r in bad] == [
            (0, 0, "", None)]
        assert "cannot decode" in bad[0]["problem"]
        assert [r["event_id"] for r in good] == [event["event_id"]]
        assert mash.feed(MASH, "SAFEGUARDING", cursor=page["cursor"])["records"] == []
    consulted = [x for x in audit_leaves(kafka_bootstrap, topics)
                 if x.kind is LeafKind.CONSULTED]
    assert [x.event_id for x in consulted] == [event["event_id"]]


def test_an_acknowledgement_after_one_the_broker_refused_is_written(
    world: tuple[Running, object], kafka_bootstrap: str, topics: Topics, admin: Admin
) -> None:
    """A record the broker refuses for good breaks kafka-python's producer for every
    later one: the gateway replaces the subscriber's acknowledger, so one refused
    acknowledgement does not refuse all the rest until a restart."""
    gw, _ = world

    def acked(mash: GatewayClient, event_id: str) -> bool:
        try:
            mash.acknowledge(MASH, event_id=event_id, kind="RECEIPT", actor="sw-1")
        except GatewayError as exc:
            assert exc.status == 503, exc.body
            return False
        return True

    with _client(gw, "subscriber", MASH) as mash:
        assert acked(mash, "before")
        admin.alter_topic_config(topics.acks(MASH), {"max.message.bytes": "64"})
        wait_for("the broker to refuse an acknowledgement",
                 lambda: not acked(mash, "probe"), timeout_s=30)
        admin.alter_topic_config(topics.acks(MASH), {"max.message.bytes": "1048588"})
        wait_for("an acknowledgement to be written again", lambda: acked(mash, "after"),
                 timeout_s=30)
    written = [CODEC.decode(r.value or b"", "safeshare.Acknowledgement")["event_id"]
               for r in read_all(kafka_bootstrap, topics.acks(MASH), timeout_s=1.0)]
    assert {"before", "after"} <= set(written)
