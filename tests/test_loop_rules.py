"""The policy's clock rules: defaults, overrides, errors, and which shares start clocks."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from broker.loop.calendar import MS_PER_HOUR
from broker.loop.rules import ClockPolicyError, Share, clocks_for_share, parse_clock_policy

LONDON = ZoneInfo("Europe/London")
POLICY = parse_clock_policy(None)


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=LONDON).timestamp() * 1000)


def share(**kw: object) -> Share:
    base: dict[str, object] = dict(
        event_id="e1", subject="s", subscriber="torbay-mash", roles=frozenset({"mash_team"}),
        shared_at_ms=ms(2026, 12, 4, 16), category="MISSING_EPISODE", risk_level="CRITICAL",
        escalate_to=("torbay-mash-managers",),
    )
    base.update(kw)
    return Share(**base)  # type: ignore[arg-type]


def test_a_critical_concern_at_the_mash_starts_a_red_four_hour_clock() -> None:
    [clock] = clocks_for_share(POLICY, share())
    assert clock.kind == "TRIAGE_RED"
    assert clock.due_ms == ms(2026, 12, 4, 20)  # runs through the evening
    assert clock.escalate_to == ("torbay-mash-managers",)


def test_amber_counts_working_hours_only() -> None:
    [clock] = clocks_for_share(POLICY, share(risk_level="HIGH"))
    # Friday 16:00 + 24 working hours: 1 h Friday, 8 h Monday and Tuesday, 7 h Wednesday.
    assert clock.kind == "TRIAGE_AMBER" and clock.due_ms == ms(2026, 12, 9, 16)


def test_encompass_clock_only_for_domestic_abuse_at_a_school() -> None:
    school = dict(subscriber="example-academy-dsl", roles=frozenset({"school_dsl"}))
    assert clocks_for_share(POLICY, share(**school)) == []
    [clock] = clocks_for_share(
        POLICY, share(category="DOMESTIC_ABUSE", shared_at_ms=ms(2026, 5, 1, 17, 30), **school)
    )
    assert clock.kind == "ENCOMPASS" and clock.due_ms == ms(2026, 5, 5, 8, 30)


def test_return_interview_clock_runs_from_the_return_not_the_report() -> None:
    rhi = dict(subscriber="safe-return-rhi", roles=frozenset({"return_interview_service"}))
    assert clocks_for_share(POLICY, share(**rhi)) == []  # still missing
    back = ms(2026, 12, 3, 23)
    [clock] = clocks_for_share(POLICY, share(returned_at_ms=back, **rhi))
    assert clock.started_ms == back and clock.due_ms == back + 72 * MS_PER_HOUR


def test_break_glass_share_starts_a_review_clock_beside_triage() -> None:
    kinds = {c.kind for c in clocks_for_share(
        POLICY, share(obligations=frozenset({"REVIEW_WITHIN_72H"})))}
    assert kinds == {"TRIAGE_RED", "BREAK_GLASS_REVIEW"}


def test_referral_decision_within_one_working_day() -> None:
    [clock] = clocks_for_share(POLICY, share(
        subscriber="torbay-csc", roles=frozenset({"childrens_social_care"})))
    assert clock.kind == "REFERRAL_DECISION"
    assert clock.due_ms == ms(2026, 12, 7, 16)  # Friday 16:00 -> Monday 16:00


def test_one_rule_can_be_changed_without_restating_the_rest() -> None:
    policy = parse_clock_policy({"rules": {"TRIAGE_RED": {"elapsed_hours": 2,
                                                          "stops_on": ["TRIAGE"]}}})
    assert policy.due_ms("TRIAGE_RED", 0) == 2 * MS_PER_HOUR
    assert policy.due_ms("TRIAGE_GREEN", 0) == 72 * MS_PER_HOUR


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"rules": {"TRIAGE_RED": {"stops_on": ["TRIAGE"]}}},
         "clocks.rules.TRIAGE_RED: give exactly one"),
        ({"rules": {"X": {"elapsed_hours": -1, "stops_on": ["TRIAGE"]}}},
         "clocks.rules.X.elapsed_hours"),
        ({"rules": {"X": {"elapsed_hours": 1, "stops_on": ["LUNCH"]}}}, "clocks.rules.X.stops_on"),
        ({"working_hours": {"start": "nine"}}, "clocks.working_hours.start"),
        ({"working_hours": {"timezone": "Mars/Olympus"}}, "clocks.working_hours"),
        ({"starts": [{"kind": "NOPE", "roles": ["mash_team"]}]}, r"clocks.starts\[0\].kind"),
        ({"rag_from_risk": {"HIGH": "PURPLE"}}, "clocks.rag_from_risk"),
        ({"colour": 1}, "unknown key 'colour'"),
    ],
)
def test_errors_name_the_key(section: dict[str, object], message: str) -> None:
    with pytest.raises(ClockPolicyError, match=message):
        parse_clock_policy(section)


def test_short_timescales_are_written_with_their_unit() -> None:
    policy = parse_clock_policy({"tier_gap": "90s",
                                 "rules": {"TRIAGE_RED": {"elapsed": "30m",
                                                          "stops_on": ["TRIAGE"]}}})
    assert policy.due_ms("TRIAGE_RED", 0) == 30 * 60_000
    assert policy.rules["TRIAGE_RED"].tier_gap_ms == 90_000
    with pytest.raises(ClockPolicyError, match="clocks.tier_gap: '1.5h' is not a duration"):
        parse_clock_policy({"tier_gap": "1.5h"})


def test_break_glass_review_only_for_teams_of_people() -> None:
    detector = share(subscriber="safeshare-patterns", roles=frozenset({"pattern_detection"}),
                     obligations=frozenset({"REVIEW_WITHIN_72H"}))
    assert clocks_for_share(POLICY, detector) == []
    police = share(subscriber="dc-police-exploitation",
                   roles=frozenset({"police_exploitation_team"}),
                   obligations=frozenset({"REVIEW_WITHIN_72H"}))
    assert [c.kind for c in clocks_for_share(POLICY, police)] == ["BREAK_GLASS_REVIEW"]
