"""What the router writes, beside a share, for the loop: clock starts and access notices."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path
from types import SimpleNamespace

from broker.codec import Codec
from broker.loop._clock_bytes import ClockBytes, clock_record
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
    assert fast.clock_bytes is not None  # the templates matched the codec's encoding
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
                        for clock in (CODEC.decode(v, CLOCK_RECORD) for _, _, v in want
                                      if CODEC.schema_name_of(v) == CLOCK_RECORD):
                            seen.add(clock["kind"])
                            seen.add(f"escalate_to {len(clock['escalate_to'])}")
                            seen.add(f"clock id of {len(clock['clock_id']) // 64} x 64 bytes")
                            if clock["started_at"].timestamp() * 1000 != now:
                                seen.add("started at the return")
    # Ids, subjects and referrers of other lengths and scripts, and no referrer.
    subjects = ("ab" * 32, "Ünïcode-主体-" * 6, "s")
    for path in files:
        ev = CODEC.from_json(json.loads(path.read_text()))
        for referrer in ("Agência-ü" * 10, None, ""):
            ev["source"] = {**ev["source"], "agency_id": referrer}
            for sub, obligations, subject in product(
                [s.id for s in POLICY.subscribers], ((), glass), subjects
            ):
                decision = SimpleNamespace(subscriber=sub, obligations=obligations)
                for now in times[:2]:
                    want = plain.starts(ev, decision, subject, now)
                    assert fast.starts(ev, decision, subject, now) == want, (path, sub)
    # The comparison covered every kind of record and clock the router starts,
    # escalations to none, one and two teams, a clock started at the child's
    # return, clock ids with one- and two-byte lengths; the fast starter wrote
    # clocks from its templates.
    assert {NOTICE, CLOCK_RECORD, "TRIAGE_AMBER", "TRIAGE_RED", "REFERRAL_DECISION",
            "ENCOMPASS", "RETURN_INTERVIEW", "BREAK_GLASS_REVIEW", "escalate_to 0",
            "escalate_to 1", "escalate_to 2", "started at the return",
            "clock id of 0 x 64 bytes", "clock id of 1 x 64 bytes"} <= seen
    assert fast.clock_bytes.templates > 0


def test_a_clock_starts_bytes_are_its_records_encoding() -> None:
    """The template's bytes against ``Codec.encode`` of the record's dict: strings
    empty, non-ASCII, and with lengths at the varint steps; times at the varint
    steps and the ends of a long; none to 64 escalation teams; no referrer."""
    made = ClockBytes(CODEC)
    strings = ["", "a", "é" * 31 + "a", "x" * 64, "ü" * 4096, "z" * 8192]
    times = [0, -1, 63, 64, -65, 8191, 8192, NOW, -(1 << 63), (1 << 63) - 1]
    # An owner's escalation teams are the owner's (templates are kept per owner).
    teams: dict[str, tuple[str, ...]] = {
        "o": (), "öwner": ("t",), "o" * 70: ("t", "é" * 40), "p": tuple(f"t{i}" for i in range(64))
    }  # fmt: skip
    for i, (kind, event_id, subject, owner, referrer) in enumerate(product(
        ["TRIAGE_RED", "ü" * 40], strings, strings[:4], teams, [None, "", "r" * 70]
    )):  # fmt: skip
        begin, due, escalate = times[i % len(times)], times[-1 - i % len(times)], teams[owner]
        want = CODEC.encode(
            clock_record(kind, event_id, subject, owner, referrer, begin, due, escalate),
            CLOCK_RECORD,
        )
        ids = made.ids(event_id.encode(), subject)
        assert ids is not None
        got = made.record(owner, kind, referrer, escalate, event_id.encode(), ids, begin, due)
        assert got == want, (kind, event_id, subject, owner, referrer, begin, due, escalate)


def test_clock_bytes_decline_what_the_template_does_not_write() -> None:
    """Values not of the template's shape, a record over the size limit and a codec
    whose encoding differs give None: the starter then encodes the record's dict."""
    made = ClockBytes(CODEC)
    ids = made.ids(b"e", "s")
    assert ids is not None and made.ids(b"e", 7) is None

    def record(**changed: object) -> bytes | None:
        args: dict[str, object] = dict(owner="o", kind="K", referrer="r", escalate_to=("t",),
                                       event_id=b"e", ids=ids, started_at=1, due_at=2)
        return made.record(**{**args, **changed})  # type: ignore[arg-type]

    assert record() is not None
    for bad in (dict(started_at=True), dict(due_at=1.0), dict(started_at=1 << 63),
                dict(referrer=b"r"), dict(owner=None), dict(kind="K2", escalate_to=(1,))):
        assert record(**bad) is None, bad
    small = Codec.from_dir(ROOT / "schemas", max_message_bytes=64)
    assert ClockBytes(small).record("o", "K", None, (), b"e" * 40, ids, 1, 2) is None

    class Changed:  # a codec whose ClockRecord is no longer what the template writes
        def __getattr__(self, name: str) -> object:
            return getattr(CODEC, name)

        def encode(self, record: dict[str, object], schema: str) -> bytes:
            return CODEC.encode(record, schema) + b"\x00"

    assert ClockBytes.checked(Changed()) is None  # type: ignore[arg-type]
    assert ClockBytes.checked(CODEC) is not None


def test_values_the_template_does_not_take_are_encoded_as_before() -> None:
    """A subject the template does not take (not exactly a str) goes through the
    record's dict and the trusted writer: the same bytes."""

    class Text(str):
        pass

    fast = ClockStarter(policy=POLICY, codec=CODEC, topics=TOPICS)
    plain = ClockStarter(policy=POLICY, codec=CODEC, topics=TOPICS, plain=True)
    decision = SimpleNamespace(subscriber="torbay-mash", obligations=())
    want = plain.starts(event(), decision, "ab" * 32, NOW)
    assert [t for t, _, _ in want].count(TOPICS.clock_starts) == 1
    assert fast.starts(event(), decision, Text("ab" * 32), NOW) == want
    assert fast.clock_bytes is not None and fast.clock_bytes.templates == 0
