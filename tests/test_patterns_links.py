"""The detector folds children a person linked (an IdentityNotice on its feed),
without Kafka: one child under two pseudonyms is counted once, an unlink counts
them apart again, an alert raised before the link is followed up (not withdrawn),
and a restart rebuilds the links from the changelog."""

from __future__ import annotations

import time
import uuid
from typing import Any

from broker.patterns.core import Out, PatternsCore
from broker.patterns.detectors import Detectors
from tests.helpers import CODEC
from tests.patterns_helpers import missing
from tests.test_patterns_core import _feed
from tests.test_patterns_followup import _interview

FLAT = "Flat 2, 14 Example Road"
NOW = time.time_ns() // 1_000_000


def _core() -> PatternsCore:
    return PatternsCore(codec=CODEC, ingest_topic="t.ingest", state_topic="t.state",
                        thresholds=Detectors().thresholds, now_ms=lambda: NOW)


def _notice(action: str, survivor: str, other: str) -> tuple[str, bytes]:
    """(decision id, the IdentityNotice the router writes on the detector's feed)."""
    decision = str(uuid.uuid4())
    return decision, CODEC.encode({
        "notice_id": str(uuid.uuid4()), "decision_id": decision,
        "subscriber": "safeshare-patterns", "action": action, "pseudonym": survivor,
        "other_pseudonym": other, "record_key": survivor, "other_record_key": other,
        "decided_at": NOW, "applied_at": NOW,
    }, "safeshare.IdentityNotice")


def _alerts(out: list[Out], kind: str) -> list[dict[str, Any]]:
    """The alert versions a turn published, of one kind: (payload, subject)."""
    got = []
    for o in out:
        if o.topic == "t.ingest":
            event = CODEC.decode(o.value or b"", "safeshare.ConcernEvent")
            if event["payload"][1]["kind"] == kind:
                got.append({**event["payload"][1], "summary": event["summary"],
                            "subject": event["subject"]["pseudonym"]})
    return got


def test_a_child_linked_before_the_third_visit_is_one_child_not_two() -> None:
    core = _core()
    core.on_feed(_feed(missing("psn-a", FLAT, 20, NOW)))
    core.on_feed(_feed(missing("psn-b", FLAT, 12, NOW)))
    _, link = _notice("LINK", "psn-b", "psn-a")
    core.on_feed(link)
    out = core.on_feed(_feed(missing("psn-c", FLAT, 3, NOW)))
    assert _alerts(out, "SHARED_PLACE") == []  # two children, not three

    unlink_id, unlink = _notice("UNLINK", "psn-b", "psn-a")
    [alert] = _alerts(core.on_feed(unlink), "SHARED_PLACE")  # three children again
    assert set(alert["children"]) == {"psn-a", "psn-b", "psn-c"}
    assert (alert["version"], alert["meets_threshold"], alert["identity_decision"]) == (
        1, True, unlink_id)


def test_an_alert_raised_before_the_link_is_followed_up_not_withdrawn() -> None:
    core = _core()
    for child, days in (("psn-a", 20), ("psn-b", 12), ("psn-c", 3)):
        out = core.on_feed(_feed(missing(child, FLAT, days, NOW)))
    [raised] = _alerts(out, "SHARED_PLACE")
    link_id, link = _notice("LINK", "psn-b", "psn-a")
    out = core.on_feed(link)
    [follow] = _alerts(out, "SHARED_PLACE")
    assert follow["alert_id"] == raised["alert_id"] and follow["version"] == 2
    assert (follow["meets_threshold"], follow["identity_decision"]) == (False, link_id)
    assert "2 of 3" in follow["summary"] and "not withdrawn" in follow["summary"]
    assert follow["evidence"] == raised["evidence"]  # what was shared stays on record
    assert ("t.state", b"l|psn-a") in {(o.topic, o.key) for o in out}
    assert _alerts(core.on_feed(link), "SHARED_PLACE") == []  # told twice: nothing more

    # A third child after all: the same alert, meeting its threshold again.
    [again] = _alerts(core.on_feed(_feed(missing("psn-d", FLAT, 1, NOW))), "SHARED_PLACE")
    assert (again["alert_id"], again["version"], again["meets_threshold"]) == (
        raised["alert_id"], 3, True)
    assert again["identity_decision"] is None


def test_linked_episodes_are_one_childs_repeat_missing_and_an_unlink_splits_them() -> None:
    core = _core()
    out = []
    for child, days in (("psn-a", 9), ("psn-a", 5), ("psn-b", 2)):
        out += core.on_feed(_feed(missing(child, f"{days} Other Street", days, NOW)))
    assert _alerts(out, "REPEAT_MISSING") == []  # two and one
    link_id, link = _notice("LINK", "psn-b", "psn-a")
    [alert] = _alerts(core.on_feed(link), "REPEAT_MISSING")
    assert alert["subject"] == "psn-b" and len(alert["evidence"]) == 3
    assert alert["identity_decision"] == link_id

    unlink_id, unlink = _notice("UNLINK", "psn-b", "psn-a")
    [below] = _alerts(core.on_feed(unlink), "REPEAT_MISSING")
    assert (below["alert_id"], below["meets_threshold"], below["identity_decision"]) == (
        alert["alert_id"], False, unlink_id)


def test_a_restart_keeps_the_link() -> None:
    one = _core()
    changelog: list[Out] = []
    changelog += one.on_feed(_feed(missing("psn-a", FLAT, 20, NOW)))
    changelog += one.on_feed(_feed(missing("psn-b", FLAT, 12, NOW)))
    changelog += one.on_feed(_notice("LINK", "psn-b", "psn-a")[1])
    two = _core()
    for o in changelog:
        if o.topic == "t.state":
            two.restore(o.key, o.value)
    assert _alerts(two.on_feed(_feed(missing("psn-c", FLAT, 3, NOW))), "SHARED_PLACE") == []
    # and an unlink read after the restart undoes it
    assert _alerts(two.on_feed(_notice("UNLINK", "psn-b", "psn-a")[1]), "SHARED_PLACE")


def test_an_interview_under_the_linked_pseudonym_meets_the_return() -> None:
    core = _core()
    core.on_feed(_feed(missing("psn-a", FLAT, 10, NOW)))  # returned ten days ago
    core.on_feed(_notice("LINK", "psn-b", "psn-a")[1])
    # The same child interviewed a day after the return, under the other pseudonym.
    core.on_feed(_feed(_interview("psn-b", 9, NOW, "MEDIUM")))
    core.on_feed(_feed(missing("psn-z", "Torquay harbour", 0.5, NOW)))  # time moves on
    out = core.end_turn()
    assert _alerts(out, "OVERDUE_INTERVIEW") == []  # psn-a's return was met; psn-z not due


def test_an_overdue_alert_the_link_answers_is_followed_up() -> None:
    """Judged overdue before the link; the interview was held in time under the
    pseudonym the child was linked to: the alert gets a version saying so."""
    core = _core()
    core.on_feed(_feed(missing("psn-a", FLAT, 10, NOW)))
    core.on_feed(_feed(_interview("psn-b", 9, NOW, "MEDIUM")))
    core.on_feed(_feed(missing("psn-z", "Torquay harbour", 0.5, NOW)))  # time moves on
    [overdue] = _alerts(core.end_turn(), "OVERDUE_INTERVIEW")
    assert overdue["children"] == ["psn-a"]
    link_id, link = _notice("LINK", "psn-b", "psn-a")
    [follow] = _alerts(core.on_feed(link), "OVERDUE_INTERVIEW")
    assert (follow["alert_id"], follow["version"], follow["meets_threshold"]) == (
        overdue["alert_id"], 2, False)
    assert follow["identity_decision"] == link_id and "0 of 1" in follow["summary"]


def test_a_chain_of_links_is_one_child_and_a_cycle_is_refused() -> None:
    core = _core()
    for child, days in (("psn-a", 9), ("psn-b", 5), ("psn-c", 2)):
        core.on_feed(_feed(missing(child, f"{days} Other Street", days, NOW)))
    core.on_feed(_notice("LINK", "psn-b", "psn-a")[1])
    [alert] = _alerts(core.on_feed(_notice("LINK", "psn-c", "psn-b")[1]), "REPEAT_MISSING")
    assert alert["subject"] == "psn-c" and len(alert["evidence"]) == 3
    # A link back (c into a) would make each child the other's: refused, nothing written.
    assert core.on_feed(_notice("LINK", "psn-a", "psn-c")[1]) == []
