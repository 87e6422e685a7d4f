"""The router end to end on a real Kafka: publish -> route -> feeds, quarantine, audit.

Each test has its own topic namespace (``topics`` fixture) and key directory.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from broker import config
from broker.api import FeedReader, Publisher
from broker.clock import SystemClock
from broker.codec.exceptions import EncodingError
from broker.kafka.admin import Admin
from broker.kafka.producer import make_producer
from broker.routing.app import build_core, build_service
from broker.routing.core import Routed
from broker.topics import Topics
from tests.helpers import (
    CODEC,
    create_topics,
    example,
    publish,
    read_all,
    read_leaves,
    run_router,
    settings_for,
)

pytestmark = pytest.mark.kafka


def _feed(bootstrap: str, topics: Topics, subscriber: str) -> list[dict]:
    return [
        CODEC.decode(r.value or b"", "safeshare.FeedRecord")
        for r in read_all(bootstrap, topics.feed(subscriber))
    ]


def test_events_reach_entitled_feeds_minimised_and_every_decision_is_audited(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    missing = example("missing_episode")
    health = example("health_concern")
    publish(kafka_bootstrap, topics, "devon-cornwall-police", missing)
    publish(kafka_bootstrap, topics, "torbay-hospital", health)

    routed = run_router(kafka_bootstrap, s)
    assert sorted(r.event_id for r in routed) == sorted([missing["event_id"], health["event_id"]])

    mash = _feed(kafka_bootstrap, topics, "torbay-mash")
    assert {f["event"]["event_id"] for f in mash} == {missing["event_id"], health["event_id"]}
    for f in mash:
        # The MASH never receives who referred (only social care is granted referrer).
        assert f["event"]["reporter"]["name"] is None
        assert "reporter.name" in f["decision"]["fields_redacted"]
        assert f["decision"]["lawful_basis"]

    school = _feed(kafka_bootstrap, topics, "example-academy-dsl")
    assert health["event_id"] not in {f["event"]["event_id"] for f in school}
    for f in school:
        assert (
            f["event"]["payload"] is None or f["event"]["payload"][0] != "safeshare.HealthConcern"
        )
        assert f["event"]["subject"]["date_of_birth"] is not None or True
        assert "location" not in f["decision"]["data_classes_shared"]

    # Devon's school is out of area: nothing.
    assert _feed(kafka_bootstrap, topics, "newton-abbot-college-dsl") == []

    leaves = read_leaves(kafka_bootstrap, topics)
    n_subscribers = len(policy.subscribers)
    assert len(leaves) == 2 * n_subscribers  # one decision per subscriber per event
    shared = [lf for lf in leaves if lf.kind == "SHARED"]
    assert len(shared) == sum(len(r.shared) for r in routed)
    for lf in shared:
        assert lf.lawful_basis and lf.delivered_digest and lf.policy_digest == policy.digest
    # No personal data in clear in the audit log.
    raw = b"".join(r.value or b"" for r in read_all(kafka_bootstrap, topics.audit))
    for clear in (b"psn-7Q2K-93XD", b"Jamie", b"Example", b"9434765919"):
        assert clear not in raw


def test_bad_messages_are_quarantined_with_original_bytes_and_audited(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    garbage = b"\x00not avro at all"
    unknown = b"\xc3\x01" + b"\x11" * 8 + b"\x02"
    forged = example("missing_episode")  # claims police, sent on the school's topic
    prod = make_producer(kafka_bootstrap)
    prod.send(topics.ingest("torbay-hospital"), garbage)
    prod.send(topics.ingest("torbay-hospital"), unknown)
    prod.send(topics.ingest("example-academy"), CODEC.encode(CODEC.from_json(forged)))
    prod.send(topics.ingest("torbay-hospital"), b"\xc3\x01" + b"x" * 300_000)
    prod.flush()
    prod.close()

    run_router(kafka_bootstrap, s)

    quarantined = [
        CODEC.decode(r.value or b"", "safeshare.QuarantineRecord")
        for r in read_all(kafka_bootstrap, topics.quarantine)
    ]
    by_reason = {q["reason"]: q for q in quarantined}
    assert set(by_reason) == {"UNDECODABLE", "UNKNOWN_SCHEMA", "AGENCY_MISMATCH", "OVERSIZED"}
    assert by_reason["UNDECODABLE"]["original"] == garbage
    assert by_reason["UNKNOWN_SCHEMA"]["original"] == unknown
    assert by_reason["UNDECODABLE"]["source_topic"] == topics.ingest("torbay-hospital")
    assert by_reason["OVERSIZED"]["original_size"] == 300_002
    assert len(by_reason["OVERSIZED"]["original"]) == 300_002
    for q in quarantined:
        assert q["detail"] and q["source_offset"] >= 0

    leaves = read_leaves(kafka_bootstrap, topics)
    assert sorted(lf.reason for lf in leaves) == sorted(by_reason)
    assert all(lf.kind == "QUARANTINED" for lf in leaves)
    # Nothing reached any feed.
    assert _feed(kafka_bootstrap, topics, "torbay-mash") == []


def test_a_repeated_event_id_is_not_shared_twice(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    event = example("missing_episode")
    publish(kafka_bootstrap, topics, "devon-cornwall-police", event, event)
    routed = run_router(kafka_bootstrap, s)
    assert [r.duplicate for r in routed] == [False, True]
    assert len(_feed(kafka_bootstrap, topics, "torbay-mash")) == 1
    kinds = [lf.kind for lf in read_leaves(kafka_bootstrap, topics)]
    assert kinds.count("DUPLICATE") == 1


def test_a_repeat_after_a_restart_is_known_from_the_audit_log(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    # A router skips reading back the audit batches it wrote itself; a new one
    # (a restart, or another instance) must still learn every routed event id.
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    event = example("missing_episode")
    publish(kafka_bootstrap, topics, "devon-cornwall-police", event)
    assert [r.duplicate for r in run_router(kafka_bootstrap, s)] == [False]
    publish(kafka_bootstrap, topics, "devon-cornwall-police", event)
    assert [r.duplicate for r in run_router(kafka_bootstrap, s)] == [True]
    assert len(_feed(kafka_bootstrap, topics, "torbay-mash")) == 1


def test_consent_given_then_withdrawn_changes_what_is_shared(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)

    # A MEDIUM education concern without any no-consent reason: needs consent.
    def concern() -> dict:
        e = example("education_concern")
        e["sharing"] = {"no_consent_reason": None, "justification": None, "break_glass": False}
        return e

    consent = example("consent_record")
    consent["subject"]["pseudonym"] = "psn-7Q2K-93XD"
    # Recorded by the return-home service, which the policy entitles to record consent.
    consent["source"] = {"agency_id": "safe-return-charity", "agency_type": "VOLUNTARY",
                         "system": "CaseBook"}
    consent["payload"].update(
        purpose="SAFEGUARDING", scope_roles=[], scope_data_classes=[], expires_at=None
    )

    first = concern()
    publish(kafka_bootstrap, topics, "example-academy", first)
    run_router(kafka_bootstrap, s)
    assert _feed(kafka_bootstrap, topics, "torbay-mash") == []

    # Consent counts from when the router applies it (and audits it): route it first.
    second = concern()
    publish(kafka_bootstrap, topics, "safe-return-charity", consent)
    run_router(kafka_bootstrap, s)
    publish(kafka_bootstrap, topics, "example-academy", second)
    run_router(kafka_bootstrap, s)
    mash = _feed(kafka_bootstrap, topics, "torbay-mash")
    assert [f["event"]["event_id"] for f in mash] == [second["event_id"]]
    assert mash[0]["decision"]["lawful_basis"].startswith("CONSENT")

    withdrawal = example("consent_record")
    withdrawal.update(subject=consent["subject"], source=consent["source"])
    withdrawal["payload"] = dict(consent["payload"], status="WITHDRAWN")
    third = concern()
    publish(kafka_bootstrap, topics, "safe-return-charity", withdrawal)
    run_router(kafka_bootstrap, s)
    publish(kafka_bootstrap, topics, "example-academy", third)
    run_router(kafka_bootstrap, s)
    mash = _feed(kafka_bootstrap, topics, "torbay-mash")
    assert [f["event"]["event_id"] for f in mash] == [second["event_id"]]
    withheld = [
        lf
        for lf in read_leaves(kafka_bootstrap, topics)
        if lf.event_id == third["event_id"] and lf.recipient == "torbay-mash"
    ]
    assert [lf.kind for lf in withheld] == ["WITHHELD"]
    # Both consent records are in the audit log, the withdrawal citing the record it ended.
    records = [lf for lf in read_leaves(kafka_bootstrap, topics) if lf.kind == "CONSENT"]
    assert [(lf.outcome, lf.event_id) for lf in records] == [
        ("GIVEN", consent["event_id"]), ("WITHDRAWN", withdrawal["event_id"])
    ]
    assert records[1].consent_ref == consent["event_id"]
    # Consent withdrawn, and the school gave no reason to share without it: the
    # reason code names the override condition that failed.
    assert withheld[0].reason == "OVERRIDE_NO_REASON"


def test_invalid_event_is_refused_and_nothing_is_sent(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    bad = example("missing_episode")
    del bad["subject"]["local_authority"]
    with Publisher(bootstrap=kafka_bootstrap, agency="devon-cornwall-police", topics=topics) as p:
        with pytest.raises(EncodingError, match="subject.local_authority"):
            p.publish_json(bad)
        other = example("missing_episode")
        with pytest.raises(EncodingError, match="source.agency_id"), Publisher(
            bootstrap=kafka_bootstrap, agency="torbay-hospital", topics=topics
        ) as wrong:
            wrong.publish_json(other)
    assert read_all(kafka_bootstrap, topics.ingest("devon-cornwall-police"), timeout_s=1) == []
    assert read_all(kafka_bootstrap, topics.ingest("torbay-hospital"), timeout_s=1) == []


def test_feed_reader_reads_only_committed_minimised_copies(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    event = example("return_home_interview")
    event["sharing"] = {
        "no_consent_reason": "WOULD_PREJUDICE_PROTECTION",
        "justification": "Named adult may be exploiting her; asking would alert him.",
        "break_glass": False,
    }
    publish(kafka_bootstrap, topics, "safe-return-charity", event)
    run_router(kafka_bootstrap, s)
    with FeedReader(
        bootstrap=kafka_bootstrap, subscriber="dc-police-exploitation", topics=topics
    ) as reader:
        items = []
        deadline = time.monotonic() + 30
        while not items and time.monotonic() < deadline:
            items += reader.poll(timeout_ms=300)
    assert len(items) == 1
    payload = items[0].record["event"]["payload"][1]
    # Police exploitation team: places and the people mentioned, not the free-text disclosures.
    assert payload["places_mentioned"] and payload["people_mentioned"]
    assert payload["disclosures"] is None


def test_a_backlog_is_routed_in_transactions_of_at_most_the_configured_batch(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    # SAFESHARE_ROUTER_MAX_BATCH bounds what one transaction carries (and holds in
    # memory until its commit); a backlog larger than it still all gets routed.
    s = replace(
        settings_for(topics, tmp_path),
        router_max_batch=config.load({"SAFESHARE_ROUTER_MAX_BATCH": "3"}).router_max_batch,
    )
    create_topics(admin, s)
    events = []
    for _ in range(7):
        event = example("missing_episode")
        event["event_id"] = str(uuid.uuid4())
        events.append(event)
    publish(kafka_bootstrap, topics, "devon-cornwall-police", *events)
    batches: list[list[Routed]] = []
    clock = SystemClock()
    service = build_service(
        s, kafka_bootstrap, clock=clock, instance_id=f"test-{uuid.uuid4().hex[:6]}",
        core=build_core(s, clock=clock, codec=CODEC), on_batch=batches.append,
    )  # fmt: skip
    service.run(idle_exit_s=2.0)
    assert sorted(r.event_id for b in batches for r in b) == sorted(e["event_id"] for e in events)
    assert max(len(b) for b in batches) == 3
    assert service.stats.transactions >= 3
