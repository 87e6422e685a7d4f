"""What the router writes, beside a share, for the loop: clock starts and access notices."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from broker.codec import Codec
from broker.loop.core import CLOCK_RECORD, NOTICE
from broker.loop.starter import ClockStarter
from broker.policy import Policy
from broker.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
CODEC = Codec.default()
POLICY = Policy.load(ROOT / "deploy" / "policy" / "example-mash.yaml",
                     field_classes=CODEC.data_classes())
TOPICS = Topics("ns")
NOW = 1_796_000_000_000


def event(**subject: object) -> dict:
    raw = json.loads((ROOT / "tests" / "data" / "events" / "missing_episode.json").read_text())
    raw["subject"].update(subject)
    return CODEC.from_json(raw)


def starts(ev: dict, subscriber: str, obligations: tuple = ()) -> list[tuple[str, bytes, bytes]]:
    decision = SimpleNamespace(subscriber=subscriber, obligations=obligations)
    starter = ClockStarter(policy=POLICY, codec=CODEC, topics=TOPICS)
    return starter.starts(ev, decision, "ab" * 32, NOW)


def test_a_looked_after_childs_share_tells_the_local_authority_who_received_it() -> None:
    out = starts(event(), "example-academy-dsl")
    notices = [CODEC.decode(v, NOTICE) for t, _, v in out if t == TOPICS.notices("torbay-csc")]
    assert [(n["kind"], n["about"], n["subject"]) for n in notices] == [
        ("ACCESS", "example-academy-dsl", "ab" * 32)
    ]
    # Only ids and times: the notice carries no name, place or text of the event.
    assert "Jamie" not in json.dumps(CODEC.to_json(notices[0], NOTICE))


def test_no_access_notice_for_other_children_or_to_social_care_itself() -> None:
    assert not [t for t, _, _ in starts(event(social_care_status="CHILD_IN_NEED"),
                                        "example-academy-dsl") if "notices" in t]
    assert not [t for t, _, _ in starts(event(), "torbay-csc") if "notices" in t]


def test_the_mash_share_starts_its_triage_clock_with_the_policys_tiers() -> None:
    out = starts(event(), "torbay-mash")
    [clock] = [CODEC.decode(v, CLOCK_RECORD) for t, _, v in out if t == TOPICS.clock_starts]
    assert clock["kind"] == "TRIAGE_AMBER"  # risk HIGH -> Amber
    assert clock["escalate_to"] == ["torbay-csc"] and clock["referrer"] == "devon-cornwall-police"


def test_the_return_home_service_clock_runs_from_the_childs_return() -> None:
    out = starts(event(), "safe-return-rhi")
    [clock] = [CODEC.decode(v, CLOCK_RECORD) for t, _, v in out if t == TOPICS.clock_starts]
    assert clock["kind"] == "RETURN_INTERVIEW"
    assert clock["started_at"].isoformat().startswith("2024-11-09T07:05")


def test_the_fast_starter_writes_what_the_plain_one_writes() -> None:
    """Kept clock kinds and unvalidated encoding change no byte: every example event,
    every subscriber, with and without break-glass, at times across a weekend, a
    bank holiday and the change to summer time, asked twice (the second answer
    comes from what the first kept)."""
    fast = ClockStarter(policy=POLICY, codec=CODEC, topics=TOPICS)
    plain = ClockStarter(policy=POLICY, codec=CODEC, topics=TOPICS, plain=True)
    files = sorted((ROOT / "tests" / "data" / "events").glob("*.json"))
    times = [NOW, 1_767_225_600_000 + 17 * 3_600_000,  # Thu 1 Jan 2026 17:00 (bank holiday)
             1_774_573_200_000, 1_775_052_000_000]  # Fri 27 Mar 2026 01:00; Wed 1 Apr 13:20
    glass = (SimpleNamespace(code="REVIEW_WITHIN_72H"),)
    seen = set()
    for path in files:
        raw = json.loads(path.read_text())
        for status in (None, "LOOKED_AFTER", "CHILD_PROTECTION_PLAN", "CHILD_IN_NEED"):
            if status is not None:
                raw["subject"]["social_care_status"] = status
            ev = CODEC.from_json(raw)
            for sub in [s.id for s in POLICY.subscribers] + ["not-in-the-policy"]:
                for obligations in ((), glass):
                    decision = SimpleNamespace(subscriber=sub, obligations=obligations)
                    for now in times:
                        want = plain.starts(ev, decision, "ab" * 32, now)
                        assert fast.starts(ev, decision, "ab" * 32, now) == want, (path, sub)
                        assert fast.starts(ev, decision, "ab" * 32, now) == want
                        seen.update(CODEC.schema_name_of(v) for _, _, v in want)
                        seen.update(CODEC.decode(v, CLOCK_RECORD)["kind"] for _, _, v in want
                                    if CODEC.schema_name_of(v) == CLOCK_RECORD)
    # The comparison covered every kind of record and clock the router starts.
    assert {NOTICE, CLOCK_RECORD, "TRIAGE_AMBER", "TRIAGE_RED", "REFERRAL_DECISION",
            "ENCOMPASS", "RETURN_INTERVIEW", "BREAK_GLASS_REVIEW"} <= seen
