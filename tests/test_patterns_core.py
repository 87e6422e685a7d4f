"""The detector's turn without Kafka (:class:`PatternsCore`): what a subscriber of
its alerts would notice when events arrive out of event-time order."""

from __future__ import annotations

import time
from typing import Any

from broker.patterns.core import PatternsCore
from broker.patterns.detectors import Detectors
from tests.codec_helpers import feed_record
from tests.helpers import CODEC
from tests.patterns_helpers import missing


def _core(now_ms: int) -> PatternsCore:
    return PatternsCore(codec=CODEC, ingest_topic="t.ingest", state_topic="t.state",
                        thresholds=Detectors().thresholds, now_ms=lambda: now_ms)


def _feed(event: dict[str, Any]) -> bytes:
    return CODEC.encode({"decision": feed_record(CODEC)["decision"],
                         "event": CODEC.from_json(event)}, "safeshare.FeedRecord")


def _overdue_children(core: PatternsCore) -> set[str]:
    return {c for a in core.detectors.alerts.values() if a.kind == "OVERDUE_INTERVIEW"
            for c in a.children}


def test_a_return_reported_late_is_still_judged_overdue() -> None:
    """A return read after a newer event (a late report) has its interview deadline
    judged at the next turn: the watermark not moving must not hide it."""
    now = time.time_ns() // 1_000_000
    core = _core(now)
    core.on_feed(_feed(missing("psn-new", "1 New Street", 1, now)))
    core.end_turn()  # the watermark is now a day ago
    core.on_feed(_feed(missing("psn-late", "2 Old Street", 20, now)))  # reported late
    out = core.end_turn()
    assert "psn-late" in _overdue_children(core)
    assert any(o.topic == "t.ingest" for o in out), "the alert is published"


def test_a_restart_between_turns_decides_the_same() -> None:
    now = time.time_ns() // 1_000_000
    one = _core(now)
    changelog = []
    for child, days in (("psn-a", 2), ("psn-b", 15), ("psn-c", 9)):
        changelog += one.on_feed(_feed(missing(child, f"{days} Any Street", days, now)))
        changelog += one.end_turn()
    two = _core(now)
    for o in changelog:
        if o.topic == "t.state":
            two.restore(o.key, o.value)
    assert two.end_turn() == []  # nothing new after the restart, nothing repeated
    # psn-a's return, the newest event, is not yet 72 hours old in event time.
    assert _overdue_children(one) == _overdue_children(two) == {"psn-b", "psn-c"}
