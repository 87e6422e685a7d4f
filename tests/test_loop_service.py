"""The loop service on a real broker: clocks escalate once, acknowledgements
stop them, referrers hear what happened, and a restart loses nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from broker.audit.leaf import AuditLeaf, decode_batch
from broker.clock import FixedClock
from broker.codec import Codec
from broker.codec.exceptions import EncodingError
from broker.kafka.admin import Admin
from broker.kafka.configuration import TopicSpec, loop_topic_specs
from broker.kafka.producer import make_producer
from broker.loop.api import Acknowledger
from broker.loop.calendar import MS_PER_HOUR
from broker.loop.core import ACKNOWLEDGEMENT, CLOCK_RECORD, NOTICE
from broker.loop.rules import Share, clocks_for_share, parse_clock_policy
from broker.loop.service import LoopService
from broker.topics import Topics
from tests.helpers import read_all

pytestmark = pytest.mark.kafka

CODEC = Codec.default()
POLICY = parse_clock_policy(None)
T0 = int(datetime(2026, 12, 2, 10, tzinfo=ZoneInfo("Europe/London")).timestamp() * 1000)
MASH, MANAGER, POLICE = "torbay-mash", "torbay-mash-managers", "devon-cornwall-police"


@pytest.fixture
def loop_topics(admin: Admin, topics: Topics) -> Topics:
    admin.ensure_topics(loop_topic_specs(topics, [POLICE], [MASH, MANAGER], partitions=3)
                        + [TopicSpec(topics.quarantine, 1), TopicSpec(topics.audit, 1)])
    return topics


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def services(
    kafka_bootstrap: str, loop_topics: Topics, clock: FixedClock
) -> Iterator[list[LoopService]]:
    made: list[LoopService] = []
    yield made
    for s in made:
        s.close()


def start_service(bootstrap: str, topics: Topics, clock: FixedClock, made: list[LoopService],
                  instance: str = "loop-0") -> LoopService:
    s = LoopService(bootstrap, topics=topics, codec=CODEC, policy=POLICY, clock=clock,
                    instance_id=instance)
    made.append(s)
    return s


def start_clock(bootstrap: str, topics: Topics, event_id: str, risk: str = "CRITICAL") -> None:
    """What the router writes as it shares a concern with the MASH."""
    [state] = clocks_for_share(POLICY, Share(
        event_id=event_id, subject="ab" * 32, subscriber=MASH, roles=frozenset({"mash_team"}),
        shared_at_ms=T0, category="MISSING_EPISODE", risk_level=risk, escalate_to=(MANAGER,),
    ))
    record = {
        "clock_id": state.clock_id, "kind": state.kind, "event_id": event_id,
        "subject": state.subject, "owner": MASH, "referrer": POLICE,
        "started_at": state.started_ms, "due_at": state.due_ms,
        "escalate_to": list(state.escalate_to), "status": "OPEN", "tiers_escalated": 0,
        "stopped_at": None, "stopped_by": None,
    }
    send(bootstrap, topics.clock_starts, event_id, CODEC.encode(record, CLOCK_RECORD))


def ack(bootstrap: str, topics: Topics, event_id: str, at: int, *, kind: str = "TRIAGE",
        subscriber: str = MASH, topic_owner: str = MASH) -> None:
    record = {
        "ack_id": str(uuid.uuid4()), "event_id": event_id, "subscriber": subscriber,
        "actor": "sw-1042", "kind": kind, "rag": "RED", "outcome": "STRATEGY_DISCUSSION",
        "note": "seen by duty manager", "acknowledged_at": at,
    }
    send(bootstrap, topics.acks(topic_owner), event_id, CODEC.encode(record, ACKNOWLEDGEMENT))


def send(bootstrap: str, topic: str, key: str, value: bytes) -> None:
    p = make_producer(bootstrap)
    try:
        p.send(topic, value, key=key.encode()).get()
    finally:
        p.close()


def turns(service: LoopService, n: int = 6) -> None:
    for _ in range(n):
        service.run_once(wait_ms=300)


def notices(bootstrap: str, topic: str) -> list[dict]:
    return [CODEC.decode(r.value, NOTICE) for r in read_all(bootstrap, topic, timeout_s=1.0)]


def leaves(bootstrap: str, topics: Topics) -> list[AuditLeaf]:
    """The loop's audit leaves, decoded as an auditor would."""
    return [AuditLeaf.from_bytes(b) for r in read_all(bootstrap, topics.audit, timeout_s=1.0)
            for b in decode_batch(r.value or b"")]


def test_an_unacknowledged_red_concern_escalates_exactly_once_even_across_a_restart(
    kafka_bootstrap: str, loop_topics: Topics, clock: FixedClock, services: list[LoopService]
) -> None:
    start_clock(kafka_bootstrap, loop_topics, "e-red")
    first = start_service(kafka_bootstrap, loop_topics, clock, services)
    turns(first)
    clock.set(T0 + 4 * MS_PER_HOUR - 1)
    turns(first, 2)
    assert notices(kafka_bootstrap, loop_topics.notices(MANAGER)) == []

    clock.set(T0 + 4 * MS_PER_HOUR)
    turns(first, 2)
    first.close()
    services.remove(first)
    # A new instance with the same id takes over: it rebuilds from the changelog.
    second = start_service(kafka_bootstrap, loop_topics, clock, services)
    clock.set(T0 + 5 * MS_PER_HOUR)
    turns(second)

    got = notices(kafka_bootstrap, loop_topics.notices(MANAGER))
    assert [(n["kind"], n["event_id"], n["tier"], n["clock_kind"]) for n in got] == [
        ("ESCALATION", "e-red", 1, "TRIAGE_RED")
    ]
    assert got[0]["overdue_by_ms"] == 0 and got[0]["about"] == MASH
    [esc_leaf] = [lf for lf in leaves(kafka_bootstrap, loop_topics) if lf.kind == "ESCALATED"]
    assert (esc_leaf.event_id, esc_leaf.recipient, esc_leaf.outcome, esc_leaf.rule_id) == (
        "e-red", MANAGER, "TIER_1", "TRIAGE_RED")


def test_a_red_concern_triaged_at_3h59_never_escalates_and_the_referrer_hears(
    kafka_bootstrap: str, loop_topics: Topics, clock: FixedClock, services: list[LoopService]
) -> None:
    start_clock(kafka_bootstrap, loop_topics, "e-ok")
    service = start_service(kafka_bootstrap, loop_topics, clock, services)
    turns(service)
    clock.set(T0 + 3 * MS_PER_HOUR + 59 * 60_000)
    ack(kafka_bootstrap, loop_topics, "e-ok", clock.now_ms())
    turns(service)
    clock.set(T0 + 200 * MS_PER_HOUR)
    turns(service)

    assert notices(kafka_bootstrap, loop_topics.notices(MANAGER)) == []
    [status] = notices(kafka_bootstrap, loop_topics.status(POLICE))
    assert (status["kind"], status["ack_kind"], status["rag"], status["about"]) == (
        "STATUS", "TRIAGE", "RED", MASH)
    assert "note" not in status  # the practitioner's note stays with the MASH
    kinds = [(lf.kind, lf.outcome, lf.reason) for lf in leaves(kafka_bootstrap, loop_topics)]
    assert kinds == [("ACKNOWLEDGED", "TRIAGE", "MET"), ("NOTIFIED", "TRIAGE", "STATUS")]


def test_nobody_can_meet_another_teams_deadline(
    kafka_bootstrap: str, loop_topics: Topics, clock: FixedClock, services: list[LoopService]
) -> None:
    start_clock(kafka_bootstrap, loop_topics, "e-forged")
    service = start_service(kafka_bootstrap, loop_topics, clock, services)
    turns(service)
    # The manager's team writes to its own topic, claiming to be the MASH.
    ack(kafka_bootstrap, loop_topics, "e-forged", T0 + 1, subscriber=MASH, topic_owner=MANAGER)
    turns(service)
    clock.set(T0 + 4 * MS_PER_HOUR)
    turns(service)

    [esc] = notices(kafka_bootstrap, loop_topics.notices(MANAGER))
    assert esc["event_id"] == "e-forged"
    quarantined = [CODEC.decode(r.value, "safeshare.QuarantineRecord")
                   for r in read_all(kafka_bootstrap, loop_topics.quarantine, timeout_s=1.0)]
    assert [q["reason"] for q in quarantined] == ["AGENCY_MISMATCH"]


def test_acknowledge_and_explain_through_the_api_and_the_cli(
    kafka_bootstrap: str, loop_topics: Topics, clock: FixedClock, services: list[LoopService]
) -> None:
    start_clock(kafka_bootstrap, loop_topics, "e-cli", risk="HIGH")  # Amber
    service = start_service(kafka_bootstrap, loop_topics, clock, services)
    turns(service)
    with Acknowledger(bootstrap=kafka_bootstrap, subscriber=MASH, topics=loop_topics,
                      clock=clock) as acks:
        with pytest.raises(EncodingError, match="rag"):
            acks.acknowledge("e-cli", "TRIAGE", actor="sw-7")  # a triage needs its rating
        acks.acknowledge("e-cli", "RECEIPT", actor="sw-7")
        clock.advance(30 * 60_000)
        acks.acknowledge("e-cli", "TRIAGE", actor="sw-7", rag="AMBER")
    turns(service)

    env = {**os.environ, "SAFESHARE_BOOTSTRAP": kafka_bootstrap,
           "SAFESHARE_NAMESPACE": loop_topics.namespace}
    run = subprocess.run([sys.executable, "-m", "broker.cli.main", "deadlines", "explain",
                          "e-cli"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    [clock_line] = [json.loads(line) for line in run.stdout.splitlines()]
    assert clock_line["kind"] == "TRIAGE_AMBER" and clock_line["status"] == "MET"
    assert clock_line["stopped_by"] == f"{MASH}/sw-7" and clock_line["late_by_s"] == 0
    assert [h["status"] for h in clock_line["history"]] == ["OPEN", "MET"]
    statuses = [n["ack_kind"] for n in notices(kafka_bootstrap, loop_topics.status(POLICE))]
    assert statuses == ["RECEIPT", "TRIAGE"]

    bad = subprocess.run([sys.executable, "-m", "broker.cli.main", "ack", "--subscriber", MASH,
                          "--event", "e-cli", "--kind", "DECISION", "--actor", "sw-7"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "refused, nothing sent: outcome" in bad.stderr


def test_two_instances_share_the_clocks_and_one_takes_over_when_the_other_leaves(
    kafka_bootstrap: str, loop_topics: Topics, clock: FixedClock, services: list[LoopService]
) -> None:
    ids = [f"e-scale-{i}" for i in range(12)]
    for e in ids:
        start_clock(kafka_bootstrap, loop_topics, e)
    a = start_service(kafka_bootstrap, loop_topics, clock, services, instance="loop-a")
    b = start_service(kafka_bootstrap, loop_topics, clock, services, instance="loop-b")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the group has settled on both
        a.run_once(wait_ms=200)
        b.run_once(wait_ms=200)
        held = len(list(a.core.open_clocks())) + len(list(b.core.open_clocks()))
        pa, pb = set(a.core.partitions()), set(b.core.partitions())
        # Each learns of a rebalance at its own next poll: settled when disjoint.
        if pa and pb and pa.isdisjoint(pb) and held == len(ids):
            break
    assert a.core.partitions() and b.core.partitions(), "the group did not use both"
    assert set(a.core.partitions()).isdisjoint(b.core.partitions())
    clock.set(T0 + 4 * MS_PER_HOUR)  # all due: each instance escalates its own
    turns(a, 2)
    turns(b, 2)
    a.close()
    services.remove(a)
    later = [f"e-later-{i}" for i in range(12)]  # some land on a's partitions
    for e in later:
        start_clock(kafka_bootstrap, loop_topics, e)
    clock.set(T0 + 6 * MS_PER_HOUR)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(b.core.partitions()) < 3:
        b.run_once(wait_ms=200)
    turns(b, 4)

    got = notices(kafka_bootstrap, loop_topics.notices(MANAGER))
    counts = Counter(n["event_id"] for n in got)
    assert set(counts) == set(ids) | set(later), "a deadline was lost"
    assert max(counts.values()) == 1, [e for e, n in counts.items() if n > 1]


def test_an_acknowledgement_read_before_its_clock_start_still_meets_it(
    kafka_bootstrap: str, loop_topics: Topics, clock: FixedClock, services: list[LoopService]
) -> None:
    service = start_service(kafka_bootstrap, loop_topics, clock, services)
    turns(service, 3)
    ack(kafka_bootstrap, loop_topics, "e-early", T0 + 60_000)  # the ack is read first...
    turns(service)
    service.close()
    services.remove(service)
    start_clock(kafka_bootstrap, loop_topics, "e-early")  # ...the start after a restart
    again = start_service(kafka_bootstrap, loop_topics, clock, services)
    turns(again)
    clock.set(T0 + 10 * MS_PER_HOUR)
    turns(again, 3)
    assert notices(kafka_bootstrap, loop_topics.notices(MANAGER)) == []
    assert "TRIAGE_RED:e-early:torbay-mash" not in {c.clock_id for c in again.core.open_clocks()}
