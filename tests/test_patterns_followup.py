"""Overdue return-home interviews (per child and per area) and rising risk: the
detectors alone, the policy section, and on a real broker with the router."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from broker.clock import SystemClock
from broker.codec import Codec
from broker.kafka.admin import Admin
from broker.patterns.core import AGENCY
from broker.patterns.detectors import (
    DAY_MS,
    GRACE_MS,
    HOUR_MS,
    Detectors,
    Kind,
    Observation,
    Threshold,
)
from broker.patterns.observe import observations
from broker.policy import Policy
from broker.policy.exceptions import PolicyError
from broker.routing.app import build_service
from broker.topics import Topics
from tests.helpers import example, publish, read_all
from tests.patterns_helpers import detect, feed_events, iso, missing, patterns_world

CODEC = Codec.default()
T0 = 1_780_000_000_000
EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example-mash.yaml"


def _returned(child: str, hours: float, la: str = "E06000027") -> Observation:
    return Observation(Kind.RETURNED, child, child, f"ret-{child}-{hours}",
                       T0 + int(hours * HOUR_MS), "", la)


def _interviewed(child: str, hours: float) -> Observation:
    return Observation(Kind.INTERVIEWED, child, child, f"rhi-{child}-{hours}",
                       T0 + int(hours * HOUR_MS))


def _risk(child: str, n: int, level: str, day: float = 0) -> Observation:
    return Observation(Kind.RISING_RISK, child, child, f"e-{child}-{n}",
                       T0 + int(day * DAY_MS) + n, "", "", level)


def test_a_return_without_an_interview_in_72_hours_is_overdue_once() -> None:
    d = Detectors()
    d.observe([_returned("c1", 0), _returned("c2", 0)])
    d.observe([_interviewed("c2", 70)])  # within 72 hours: not overdue
    assert d.overdue(T0 + 71 * HOUR_MS + GRACE_MS) == ([], [])
    assert d.overdue(T0 + 73 * HOUR_MS) == ([], [])  # the grace for a late report
    _, [alert] = d.overdue(T0 + 73 * HOUR_MS + GRACE_MS)
    assert (alert.kind, alert.children, alert.version) == (Kind.OVERDUE_INTERVIEW, ("c1",), 1)
    assert alert.event_ids == ("ret-c1-0",)
    d.observe([_interviewed("c1", 80)])  # late: the alert stands, nothing new is raised
    assert d.overdue(T0 + 100 * HOUR_MS + GRACE_MS) == ([], [])
    # A replay of the same return decides the same and raises nothing new.
    assert d.observe([_returned("c1", 0)]) == ([], [])


def test_overdue_interviews_of_three_children_in_one_area_raise_the_area_alert() -> None:
    d = Detectors()
    d.observe([_returned(f"c{i}", i, "E10000008") for i in range(3)])
    d.observe([_returned("t1", 0, "E06000027")])
    _, fired = d.overdue(T0 + 80 * HOUR_MS + GRACE_MS)
    area = [a for a in fired if a.kind == Kind.OVERDUE_AREA]
    assert len(area) == 1 and set(area[0].children) == {"c0", "c1", "c2"}
    assert area[0].key == "E10000008"
    assert sum(a.kind == Kind.OVERDUE_INTERVIEW for a in fired) == 4


def test_risk_rising_twice_raises_and_a_further_rise_updates() -> None:
    d = Detectors()
    assert d.observe([_risk("c", 1, "LOW"), _risk("c", 2, "MEDIUM"),
                      _risk("c", 3, "MEDIUM")])[1] == []
    [alert] = d.observe([_risk("c", 4, "HIGH")])[1]
    assert (alert.kind, alert.version) == (Kind.RISING_RISK, 1)
    assert alert.event_ids == ("e-c-1", "e-c-2", "e-c-4")  # where it rose, and from
    assert d.observe([_risk("c", 5, "HIGH")])[1] == []  # the same level: no update
    [again] = d.observe([_risk("c", 6, "CRITICAL")])[1]
    assert (again.alert_id, again.version) == (alert.alert_id, 2)


def test_a_fall_restarts_the_count_and_old_events_leave_the_window() -> None:
    d = Detectors()
    assert d.observe([_risk("c", 1, "LOW"), _risk("c", 2, "HIGH"), _risk("c", 3, "LOW"),
                      _risk("c", 4, "MEDIUM")])[1] == []
    d2 = Detectors()
    d2.observe([_risk("c", 1, "LOW", 0), _risk("c", 2, "MEDIUM", 1)])
    assert d2.observe([_risk("c", 3, "HIGH", 40)])[1] == []  # LOW and MEDIUM are 40 days old


def test_observations_of_returns_interviews_and_risk() -> None:
    event = {"event_id": "e1", "occurred_at": T0, "risk_level": "MEDIUM",
             "subject": {"pseudonym": "psn-1", "local_authority": "E06000027"},
             "payload": ("safeshare.MissingEpisode", {"episode_type": "MISSING",
                                                       "ended_at": T0 + 5})}
    got = {(o.kind, o.at_ms, o.level) for o in observations(event)}
    assert (Kind.RETURNED, T0 + 5, "") in got and (Kind.RISING_RISK, T0, "MEDIUM") in got
    rhi = {**event, "payload": ("safeshare.ReturnHomeInterview", {"held_at": T0 + 9})}
    assert (Kind.INTERVIEWED, T0 + 9, "") in {(o.kind, o.at_ms, o.level)
                                              for o in observations(rhi)}
    not_reached = {**event, "payload": ("safeshare.ReturnHomeInterview",
                                        {"outcome": "NOT_REACHED"})}
    assert Kind.INTERVIEWED not in {o.kind for o in observations(not_reached)}


def test_policy_sets_the_new_detectors_and_names_bad_values(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    t = Policy.load(EXAMPLE).pattern_thresholds
    assert t[Kind.OVERDUE_INTERVIEW] == Threshold(1, 30, 72)
    assert t[Kind.RISING_RISK] == Threshold(2, 30)
    changed = tmp_path / "p.yaml"
    changed.write_text(text.replace("overdue_interview: {hours: 72, days: 30}",
                                    "overdue_interview: {hours: 48, days: 30}"), encoding="utf-8")
    assert Policy.load(changed).pattern_thresholds[Kind.OVERDUE_INTERVIEW].hours == 48
    changed.write_text(text.replace("rising_risk: {rises: 2, days: 30}",
                                    "rising_risk: {rises: 5, days: 30}"), encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        Policy.load(changed)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "rising_risk:" in t)
    assert f"{line}:" in str(err.value)
    assert "patterns.rising_risk.rises: expected a whole number from 1 to 3, not 5" \
        in str(err.value)


def _interview(child: str, days_ago: float, now: int, risk: str) -> dict[str, Any]:
    at = now - int(days_ago * DAY_MS)
    event = example("return_home_interview")
    event["subject"] = {"pseudonym": child, "local_authority": "E06000027"}
    event["occurred_at"] = event["reported_at"] = event["payload"]["held_at"] = iso(at)
    event["risk_level"] = risk
    event["sharing"] = {"no_consent_reason": "WOULD_PREJUDICE_PROTECTION",
                        "justification": "Asking would alert those exploiting the child.",
                        "break_glass": False}
    event["payload"].update(places_mentioned=[], people_mentioned=[], disclosures=None)
    return event


def _missing(child: str, days_ago: float, now: int, risk: str) -> dict[str, Any]:
    event = missing(child, f"{uuid.uuid4().hex[:6]} Street", days_ago, now)
    event["risk_level"] = risk
    return event


@pytest.mark.kafka
def test_overdue_interview_and_rising_risk_reach_the_mash_not_the_school(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s, policy = patterns_world(admin, topics, tmp_path)
    now = time.time_ns() // 1_000_000
    a, b, c = (f"psn-{uuid.uuid4().hex[:8]}" for _ in range(3))
    police = [_missing(a, 5, now, "MEDIUM"),  # found 5 days ago, never interviewed
              _missing(b, 5, now, "MEDIUM"),  # interviewed 2.5 days later
              _missing(c, 14, now, "LOW"), _missing(c, 2, now, "HIGH")]
    charity = [_interview(b, 2.5, now, "MEDIUM"), _interview(c, 13, now, "MEDIUM"),
               _interview(c, 1, now, "HIGH")]
    publish(kafka_bootstrap, topics, "devon-cornwall-police", *police)
    publish(kafka_bootstrap, topics, "safe-return-charity", *charity)
    build_service(s, kafka_bootstrap, clock=SystemClock(), instance_id="p1").run(idle_exit_s=2.0)
    detect(kafka_bootstrap, topics, policy, len(police) + len(charity))
    alerts = [CODEC.decode(r.value or b"", "safeshare.ConcernEvent")["payload"][1]
              for r in read_all(kafka_bootstrap, topics.ingest(AGENCY), timeout_s=1.0)]
    # Decided after each turn, with 12 hours' grace: B's interview counts whichever feed
    # partition is read first.
    # One alert per pattern; a version more when an event read late is a new step
    # (the feed interleaves the police's and the charity's events), never one twice.
    got = sorted({(x["kind"], tuple(x["children"])) for x in alerts})
    assert got == [("OVERDUE_INTERVIEW", (a,)), ("RISING_RISK", (c,))], got
    versions = [(x["alert_id"], x["version"]) for x in alerts]
    assert len(versions) == len(set(versions))
    rising = max((x for x in alerts if x["kind"] == "RISING_RISK"), key=lambda x: x["version"])
    assert len(rising["evidence"]) >= 3

    build_service(s, kafka_bootstrap, clock=SystemClock(), instance_id="p2").run(idle_exit_s=2.0)
    mash = [e["payload"][1] for e in feed_events(kafka_bootstrap, topics, "torbay-mash")
            if e["category"] == "PATTERN"]
    # Each alert once, in every version the detector wrote (a late event adds one).
    assert sorted({x["alert_id"]: x["kind"] for x in mash}.values()) == [
        "OVERDUE_INTERVIEW", "RISING_RISK"]
    assert sorted((x["alert_id"], x["version"]) for x in mash) == sorted(versions)
    school = feed_events(kafka_bootstrap, topics, "example-academy-dsl")
    assert school and not [e for e in school if e["category"] == "PATTERN"]
