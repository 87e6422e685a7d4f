"""Router and loop service together on a real broker, on an injected clock: the
clocks a share starts, an Encompass notice due before school after a bank
holiday, and a Red concern left unacknowledged escalated exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from broker.api import Publisher
from broker.clock import FixedClock
from broker.codec import Codec
from broker.kafka.admin import Admin
from broker.loop.api import DeadlineBook
from broker.loop.calendar import MS_PER_HOUR
from broker.loop.core import NOTICE
from broker.loop.service import LoopService
from broker.policy import Policy
from broker.routing.app import build_service
from broker.topics import Topics
from tests.helpers import create_topics, example, read_all, settings_for

pytestmark = pytest.mark.kafka

CODEC = Codec.default()
LONDON = ZoneInfo("Europe/London")
# Friday 1 May 2026, 17:30; Monday 4 May is the early May bank holiday.
FRIDAY_1730 = int(datetime(2026, 5, 1, 17, 30, tzinfo=LONDON).timestamp() * 1000)
TUESDAY_0830 = int(datetime(2026, 5, 5, 8, 30, tzinfo=LONDON).timestamp() * 1000)


def wait_until(cond: Callable[[], bool], loop: LoopService, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "the loop service did not catch up"
        loop.run_once(wait_ms=300)
    for _ in range(3):  # and whatever came in the same batches
        loop.run_once(wait_ms=300)


def test_shares_start_clocks_encompass_waits_for_tuesday_and_red_escalates_once(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    policy: Policy = create_topics(admin, s)
    clock = FixedClock(FRIDAY_1730)
    red = example("missing_episode", risk_level="CRITICAL")
    red["occurred_at"] = red["reported_at"] = "2026-05-01T16:00:00Z"
    red["payload"]["started_at"] = "2026-05-01T15:00:00Z"
    red["payload"]["ended_at"] = None
    notice = example("police_notification")
    notice["occurred_at"] = notice["reported_at"] = "2026-05-01T16:20:00Z"
    notice["payload"]["incident_at"] = "2026-05-01T15:00:00Z"
    with Publisher(bootstrap=kafka_bootstrap, agency="devon-cornwall-police", topics=topics,
                   clock=clock) as p:
        p.publish_json(red)
        p.publish_json(notice)
    routed: list = []
    build_service(s, kafka_bootstrap, clock=clock, instance_id="e2e",
                  on_batch=routed.extend).run(idle_exit_s=2.0)
    shared = {(r.event_id, x) for r in routed for x in r.shared}
    assert (notice["event_id"], "example-academy-dsl") in shared, routed

    loop = LoopService(kafka_bootstrap, topics=topics, codec=CODEC, policy=policy.clocks,
                       clock=clock, instance_id="e2e")
    try:
        wait_until(lambda: len(list(loop.core.open_clocks())) >= 2, loop)
        book = {(c.kind, c.owner): c for c in loop.core.open_clocks()}
        encompass = book[("ENCOMPASS", "example-academy-dsl")]
        assert encompass.event_id == notice["event_id"] and encompass.due_ms == TUESDAY_0830
        triage = book[("TRIAGE_RED", "torbay-mash")]
        assert triage.due_ms == FRIDAY_1730 + 4 * MS_PER_HOUR  # Red runs through the night

        clock.set(FRIDAY_1730 + 4 * MS_PER_HOUR)
        for _ in range(3):
            loop.run_once(wait_ms=300)
        clock.advance(MS_PER_HOUR)  # later ticks never repeat the escalation
        for _ in range(3):
            loop.run_once(wait_ms=300)
    finally:
        loop.close()

    got = [CODEC.decode(r.value or b"", NOTICE)
           for r in read_all(kafka_bootstrap, topics.notices("torbay-csc"), timeout_s=1.0)]
    escalations = [n for n in got if n["kind"] == "ESCALATION"]
    assert [(n["event_id"], n["clock_kind"], n["tier"]) for n in escalations] == [
        (red["event_id"], "TRIAGE_RED", 1)
    ]
    # The child is looked after: social care heard of each share it did not receive itself.
    access = {n["about"] for n in got if n["kind"] == "ACCESS" and n["event_id"] == red["event_id"]}
    assert "torbay-mash" in access and "torbay-csc" not in access

    book_after = DeadlineBook.read(bootstrap=kafka_bootstrap, topics=topics)
    assert [c.kind for c in book_after.overdue(FRIDAY_1730 + 5 * MS_PER_HOUR)
            if c.owner == "torbay-mash"] == ["TRIAGE_RED"]
